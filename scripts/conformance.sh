#!/bin/bash
# conformance.sh - run libiscsi's iscsi-test-cu suite by suite against a freshly
# started lmtgt (default) or Linux tgt, and compare with the expected passes.
#
# Usage: scripts/conformance.sh [options]
#   --target lmtgt|tgt     what to test (default lmtgt)
#   --bin PATH             lmtgt binary to use (default: go build into the work dir)
#   --suites REGEX         only suites whose name matches REGEX (egrep; default all)
#   --suite-timeout S      time limit per suite (default 120)
#   --out DIR              work dir: logs, results (default REPO/.work/conformance-TARGET)
#   --expected FILE        expected passes (default scripts/conformance-expected.txt)
#   --update-expected      rewrite the expected list from this run's passes
#   --no-compare           do not compare with the expected list
#   --multipath            pass the URL a second time as the multipath URL, so the
#                          MultipathIO suite runs over two sessions (off by default:
#                          the tgt baseline 171/10/49 is without it)
#   --fails-md FILE        also write the failures (test + assertion lines) as markdown
#                          (default: $CONFORMANCE_FAILS_MD if set)
#   -h|--help
# Every test of ALL.<Suite>.* runs with -d and two initiator names (reservation
# tests) against iscsi://127.0.0.1:PORT/IQN/LUN. When the target died during a
# suite or the suite hit its time limit, the tests of that suite without a result
# count as errors, and the target is restarted (same data dir) for the next suite.
# The ReadOnly suite needs a write-protected LUN: against lmtgt it runs on
# IQN-ro, a second target mapping the same LUN with --read-only (against
# tgt it runs on the normal LUN and skips, as before).
# Output: OUT/results.txt ("pass|fail|skip|error ALL.Suite.Test" per line),
# OUT/suite.SUITE.log per suite, OUT/fails.md; last line
# "N passed, M failed, K skipped[, E errors]".
# Exit: 0 when every expected test passed and no test errored out, 1 otherwise,
# 2 on a setup problem.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$HERE/lib.sh"

TARGET=lmtgt
BIN=""
SUITES_RE=""
SUITE_TIMEOUT=120
OUT=""
EXPECTED=$HERE/conformance-expected.txt
UPDATE=0
COMPARE=1
FAILS_MD=${CONFORMANCE_FAILS_MD:-}
MULTIPATH=0
IQN=iqn.2026-11.org.lmtgt:conf
IQN_RO=$IQN-ro
INIT1=iqn.2026-11.org.lmtgt:conformance-init1
INIT2=iqn.2026-11.org.lmtgt:conformance-init2
LUN_SIZE=256MiB

while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET=$2; shift ;;
    --bin) BIN=$2; shift ;;
    --suites) SUITES_RE=$2; shift ;;
    --suite-timeout) SUITE_TIMEOUT=$2; shift ;;
    --out) OUT=$2; shift ;;
    --expected) EXPECTED=$2; shift ;;
    --update-expected) UPDATE=1 ;;
    --no-compare) COMPARE=0 ;;
    --fails-md) FAILS_MD=$2; shift ;;
    --multipath) MULTIPATH=1 ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1{sub(/^# ?/,"");print}' "$0"; exit 0 ;;
    *) echo "conformance: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$TARGET" in lmtgt|tgt) ;; *) echo "conformance: --target must be lmtgt or tgt" >&2; exit 2 ;; esac
[ "$TARGET" = tgt ] && [ "$UPDATE" = 1 ] && { echo "conformance: --update-expected only with --target lmtgt" >&2; exit 2; }
[ "$TARGET" = tgt ] && COMPARE=0

log() { echo "[conformance $(ts)] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

command -v iscsi-test-cu >/dev/null || die "iscsi-test-cu missing (scripts/install-test-deps.sh installs libiscsi-bin)"
if [ "$TARGET" = tgt ]; then
  command -v tgtd >/dev/null && command -v tgtadm >/dev/null || die "tgtd/tgtadm missing (package tgt)"
fi

OUT=${OUT:-$REPO/.work/conformance-$TARGET}
rm -rf "$OUT"; mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$OUT/data
mkdir -p "$DATA"
PORT=$(free_port)
TLOG=$OUT/target.log
: > "$TLOG"

# ---------------------------------------------------------------- target control
LMTGT_PID=""; TGTD_PID=""; CTL=""
start_target() {  # $1 = first|restart
  case "$TARGET" in
    lmtgt)
      echo "==== $(date '+%F %T') start ($1)" >> "$TLOG"
      lmtgt_start "$BIN" "$DATA" "$PORT" "$TLOG" || return 1
      [ "$1" = first ] && { { lmtgt_setup "$BIN" "$IQN" c1 "$LUN_SIZE" &&
                              lmtgt_cli "$BIN" target create "$IQN_RO" &&
                              lmtgt_cli "$BIN" target map "$IQN_RO" c1 --lun 0 --read-only &&
                              lmtgt_cli "$BIN" target allow "$IQN_RO" ALL; } 2>>"$OUT/setup.log" >/dev/null \
                              || { cat "$OUT/setup.log" >&2; return 1; }; }
      return 0 ;;
    tgt)
      echo "==== $(date '+%F %T') start ($1)" >> "$TLOG"
      [ "$1" = first ] && truncate -s 256M "$DATA/lun.img"
      CTL=$(tgt_ctl_port)
      tgt_start "$CTL" "$PORT" "$TLOG" || return 1
      tgt_setup "$CTL" "$IQN" "$DATA/lun.img" ;;
  esac
}
target_alive() {
  case "$TARGET" in lmtgt) pid_alive "$LMTGT_PID" ;; tgt) pid_alive "$TGTD_PID" ;; esac
}
stop_target() {
  case "$TARGET" in
    lmtgt) if [ -n "$LMTGT_PID" ]; then
             stop_pid "$LMTGT_PID" 20 || log "lmtgt did not stop on SIGTERM within 20 s (killed)"
             LMTGT_PID=""
           fi ;;
    tgt) [ -n "$TGTD_PID" ] && tgt_stop "$CTL" "$TGTD_PID"; TGTD_PID="" ;;
  esac
}
kill_target() {  # a hung or half-dead target before a restart
  case "$TARGET" in
    lmtgt) if [ -n "$LMTGT_PID" ]; then kill -KILL "$LMTGT_PID" 2>/dev/null || true; wait "$LMTGT_PID" 2>/dev/null || true; fi
           LMTGT_PID="" ;;
    tgt) stop_target ;;
  esac
}
trap 'set +e; stop_target' EXIT

if [ "$TARGET" = lmtgt ]; then
  if [ -z "$BIN" ]; then
    BIN=$OUT/lmtgt
    log "building lmtgt -> $BIN"
    build_lmtgt "$BIN" || die "go build ./cmd/lmtgt failed"
  fi
  [ -x "$BIN" ] || die "no lmtgt binary at $BIN"
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
  URL=iscsi://127.0.0.1:$PORT/$IQN/0
  ROURL=iscsi://127.0.0.1:$PORT/$IQN_RO/0
else
  URL=iscsi://127.0.0.1:$PORT/$IQN/1
  ROURL=$URL
fi

MPURL=""
[ "$MULTIPATH" = 1 ] && MPURL=$URL
T0=$SECONDS
start_target first || die "could not start $TARGET (log: $TLOG)"
log "$TARGET on 127.0.0.1:$PORT, url $URL"

# ---------------------------------------------------------------- the suites
iscsi-test-cu --list > "$OUT/list.txt"
mapfile -t SUITES < <(awk -F. '/^ALL\./ && NF==2 {print $2}' "$OUT/list.txt")
[ -n "$SUITES_RE" ] && mapfile -t SUITES < <(printf '%s\n' "${SUITES[@]}" | grep -E -- "$SUITES_RE" || true)
[ ${#SUITES[@]} -gt 0 ] || die "no suite matches '$SUITES_RE'"

# CUnit output of one run -> "status ALL.Suite.Test" lines; failure details
# (the [FAILED] messages and numbered assertion lines) go to the file in DETAILS.
PARSER='
function finish(st) {
  if (cur == "") return
  if (st == "passed") st = skipped ? "skip" : "pass"; else st = "fail"
  print st, "ALL." suite "." cur
  if (st == "fail") { print "### ALL." suite "." cur >> DETAILS; printf "%s", msgs >> DETAILS; collecting = 1 }
  else collecting = 0
  cur = ""; skipped = 0; msgs = ""
}
/^Suite: / { suite = substr($0, 8); sub(/[ \t\r]+$/, "", suite); collecting = 0; next }
/^Run Summary:/ { collecting = 0 }
/^  Test: / {
  if (cur != "") { print "error", "ALL." suite "." cur; cur = "" }
  collecting = 0
  line = substr($0, 9); i = index(line, " ...")
  cur = substr(line, 1, i - 1); rest = substr(line, i + 4); skipped = 0; msgs = ""
  if (rest ~ /\[SKIPPED\]/) skipped = 1
  if (rest ~ /\[FAILED\]/) msgs = msgs rest "\n"
  if (rest ~ /^passed/) finish("passed"); else if (rest ~ /^FAILED/) finish("FAILED")
  next
}
collecting && /^ +[0-9]+\. / { print >> DETAILS; next }
cur != "" && /\[SKIPPED\]/ { skipped = 1 }
cur != "" && /\[FAILED\]/ { msgs = msgs $0 "\n" }
cur != "" && /^passed/ { finish("passed"); next }
cur != "" && /^FAILED/ { finish("FAILED"); next }
'

RESULTS=$OUT/results.txt
DETAILS=$OUT/fail-details.txt
: > "$RESULTS"; : > "$DETAILS"
RESTARTS=0
SUITE_NOTES=$OUT/suite-notes.txt
: > "$SUITE_NOTES"

for s in "${SUITES[@]}"; do
  slog=$OUT/suite.$s.log
  t1=$SECONDS
  if ! target_alive; then
    log "target is down before suite $s: restarting"
    kill_target
    start_target restart || die "could not restart $TARGET (log: $TLOG)"
    RESTARTS=$((RESTARTS+1))
  fi
  # run the suite; libiscsi spins forever once the target is gone, so stop it
  # 5 s after the target died instead of waiting for the time limit
  surl=$URL
  [ "$s" = ReadOnly ] && surl=$ROURL
  timeout -k 5 "$SUITE_TIMEOUT" iscsi-test-cu -d -i "$INIT1" -I "$INIT2" -t "ALL.$s" "$surl" ${MPURL:-} > "$slog" 2>&1 &
  tp=$!; dead_at=""
  while pid_alive "$tp"; do
    if [ -z "$dead_at" ] && ! target_alive; then dead_at=$SECONDS; fi
    if [ -n "$dead_at" ] && [ $((SECONDS-dead_at)) -ge 5 ]; then kill -TERM "$tp" 2>/dev/null || true; fi
    sleep 0.2
  done
  rc=0; wait "$tp" || rc=$?
  awk -v DETAILS="$DETAILS" "$PARSER" "$slog" > "$OUT/suite.$s.res"
  problem=""
  if [ -n "$dead_at" ]; then problem="$TARGET died during the suite (suite stopped)"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then problem="timed out after ${SUITE_TIMEOUT}s"
  elif [ "$rc" -gt 128 ]; then problem="iscsi-test-cu died with signal $((rc-128))"
  fi
  if [ -z "$dead_at" ] && ! target_alive; then problem="${problem:+$problem; }$TARGET died"; fi
  # every listed test of the suite without a result is an error
  grep "^ALL\.$s\.[^.]*$" "$OUT/list.txt" | while read -r t; do
    grep -q " $t\$" "$OUT/suite.$s.res" || echo "error $t"
  done >> "$OUT/suite.$s.res"
  if [ -n "$problem" ]; then
    echo "$s: $problem" >> "$SUITE_NOTES"
    if ! target_alive; then   # keep the end of the dead target's log (a panic trace)
      { echo "### $s: last lines of the target log"; echo '```'; tail -n 60 "$TLOG"; echo '```'; echo; } >> "$OUT/deaths.md"
    fi
    log "suite $s: $problem"
    if target_alive; then
      # a hang: make sure the next suite finds a responsive target
      kill_target
    fi
  fi
  cat "$OUT/suite.$s.res" >> "$RESULTS"
  printf '[conformance %s] %-24s %3ss  %s\n' "$(ts)" "$s" "$((SECONDS-t1))" \
    "$(awk '{c[$1]++} END{printf "pass=%d fail=%d skip=%d error=%d", c["pass"], c["fail"], c["skip"], c["error"]}' "$OUT/suite.$s.res")" >&2
done
stop_target

# ---------------------------------------------------------------- report
count() { awk -v s="$1" '$1==s' "$RESULTS" | wc -l | tr -d ' '; }
NP=$(count pass); NF=$(count fail); NS=$(count skip); NE=$(count error)
awk '$1=="pass"{print $2}' "$RESULTS" | sort > "$OUT/passed.txt"

# failures as markdown, for the people fixing them
{
  echo "# iscsi-test-cu failures against $TARGET"
  echo
  echo "Generated $(date '+%F %T') by scripts/conformance.sh (commit ${CONFORMANCE_COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)})."
  echo "Result: $NP passed, $NF failed, $NS skipped, $NE errors; $RESTARTS target restarts; $((SECONDS-T0))s."
  echo "Reproduce one suite: scripts/conformance.sh --suites '^Suite\$' (logs in $OUT)."
  echo
  if [ -s "$SUITE_NOTES" ]; then echo "## Suites that timed out or lost the target"; echo; sed 's/^/- /' "$SUITE_NOTES"; echo; fi
  if [ "$NE" -gt 0 ]; then echo "## Errors (no result)"; echo; awk '$1=="error"{print "- " $2}' "$RESULTS"; echo; fi
  if [ -s "$OUT/deaths.md" ]; then echo "## Target deaths"; echo; cat "$OUT/deaths.md"; fi
  echo "## Failed tests"
  echo
  if [ "$NF" = 0 ]; then echo "none"; else
    awk '/^### /{if (open) print "```"; print ""; print "### " $2; print "```"; open=1; next} {print} END{if (open) print "```"}' "$DETAILS"
  fi
} > "$OUT/fails.md"
if [ -n "$FAILS_MD" ]; then cp "$OUT/fails.md" "$FAILS_MD.tmp" && mv "$FAILS_MD.tmp" "$FAILS_MD"; fi

STATUS=0
if [ "$UPDATE" = 1 ]; then
  if [ -n "$SUITES_RE" ] && [ -f "$EXPECTED" ]; then
    # keep the other suites' lines, replace those of the suites run now
    { printf '%s\n' "${SUITES[@]}" | sed 's/.*/^ALL\\.&\\./' > "$OUT/ran.re"
      grep -v -f "$OUT/ran.re" "$EXPECTED" | grep -v '^#' || true
      cat "$OUT/passed.txt"; } | sort -u > "$OUT/expected.new"
  else
    cp "$OUT/passed.txt" "$OUT/expected.new"
  fi
  { echo "# iscsi-test-cu tests lmtgt must pass (scripts/conformance.sh --update-expected)"
    cat "$OUT/expected.new"; } > "$EXPECTED"
  log "wrote $(grep -vc '^#' "$EXPECTED" || true) expected passes to $EXPECTED"
elif [ "$COMPARE" = 1 ]; then
  if [ ! -f "$EXPECTED" ]; then
    log "no expected list at $EXPECTED: nothing to compare"
  else
    # the expected tests of the suites run now
    printf '%s\n' "${SUITES[@]}" | sed 's/.*/^ALL\\.&\\./' > "$OUT/ran.re"
    { grep -v '^#' "$EXPECTED" || true; } | sed '/^$/d' | { grep -f "$OUT/ran.re" || true; } > "$OUT/expected-now.txt"
    while read -r t; do
      grep -qx -- "$t" "$OUT/passed.txt" || echo "$t $(awk -v t="$t" '$2==t{print $1}' "$RESULTS")"
    done < "$OUT/expected-now.txt" > "$OUT/regressions.txt"
    if [ -s "$OUT/regressions.txt" ]; then
      log "REGRESSION: $(wc -l < "$OUT/regressions.txt") expected passes did not pass:"
      sed 's/^/    /' "$OUT/regressions.txt" >&2
      STATUS=1
    else
      log "all $(wc -l < "$OUT/expected-now.txt") expected passes of the suites run passed"
    fi
    comm -13 <(grep -v '^#' "$EXPECTED" | sort || true) "$OUT/passed.txt" > "$OUT/new-passes.txt"
    if [ -s "$OUT/new-passes.txt" ]; then
      log "$(wc -l < "$OUT/new-passes.txt") tests pass that are not in the expected list (see $OUT/new-passes.txt; --update-expected to add them)"
    fi
  fi
fi
if [ "$NE" -gt 0 ]; then
  log "$NE tests errored out (target died or suite timed out): $(tr '\n' ' ' < "$SUITE_NOTES")"
  [ "$TARGET" = lmtgt ] && STATUS=1
fi
log "results in $RESULTS, failures in $OUT/fails.md; $RESTARTS restarts; total $((SECONDS-T0))s"
if [ "$NE" -gt 0 ]; then echo "$NP passed, $NF failed, $NS skipped, $NE errors"; else echo "$NP passed, $NF failed, $NS skipped"; fi
exit $STATUS
