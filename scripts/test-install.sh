#!/usr/bin/env bash
# test-install.sh - `make install` into a temporary DESTDIR, then check
# what it installed: the binary runs and reports its version, the unit
# names the installed binary and passes `systemd-analyze security`, the man
# page renders without warnings (groff -ww, man -l), the bash completion
# loads and completes, the zsh one is there.
# Usage: scripts/test-install.sh [--keep]  (exit 0 ok, 1 a check failed)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEEP=0
[ "${1:-}" = --keep ] && KEEP=1
D=$(mktemp -d /tmp/lmtgt-install-XXXXXX)
[ "$KEEP" = 1 ] || trap 'rm -rf "$D"' EXIT
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
ok() { echo "test-install: ok: $*"; }

make -C "$REPO" --no-print-directory install DESTDIR="$D" PREFIX=/usr/local >"$D.log" 2>&1 \
  || { cat "$D.log" >&2; rm -f "$D.log"; fail "make install DESTDIR=$D"; }
rm -f "$D.log"
P=$D/usr/local
for f in bin/lmtgt lib/systemd/system/lmtgt.service share/man/man1/lmtgt.1.gz \
         share/bash-completion/completions/lmtgt share/zsh/site-functions/_lmtgt \
         share/doc/lmtgt/cli.md; do
  [ -s "$P/$f" ] || fail "$P/$f not installed"
done
[ -x "$P/bin/lmtgt" ] || fail "$P/bin/lmtgt is not executable"
ok "files installed under $P"

"$P/bin/lmtgt" version | grep -q '^lmtgt ' || fail "lmtgt version"
rev=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)
if [ -n "$rev" ]; then
  "$P/bin/lmtgt" version -o json | grep -q "\"revision\": \"$rev\"" || fail "lmtgt version -o json: no revision $rev"
fi
ok "$("$P/bin/lmtgt" version)"

U=$P/lib/systemd/system/lmtgt.service
grep -q '^ExecStart=/usr/local/bin/lmtgt serve$' "$U" || fail "unit ExecStart: $(grep ExecStart "$U")"
grep -q '^Type=notify$' "$U" || fail "unit is not Type=notify"
if grep -Eq '^(PrivateTmp|ProtectHome|ProtectSystem|PrivateDevices|DeviceAllow)=' "$U"; then
  fail "unit sets a sandbox option that hides volumes or devices"
fi
if command -v systemd-analyze >/dev/null; then
  score=$(systemd-analyze security --offline=true "$U" 2>/dev/null | sed -n 's/.*Overall exposure level for lmtgt.service: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || fail "systemd-analyze security gave no score"
  awk -v s="$score" 'BEGIN { exit !(s < 5.0) }' || fail "systemd-analyze security: exposure $score, want below 5.0"
  ok "systemd-analyze security: exposure $score"
fi

zcat "$P/share/man/man1/lmtgt.1.gz" > "$D/lmtgt.1"
if command -v groff >/dev/null; then
  w=$(groff -man -Tutf8 -ww -z "$D/lmtgt.1" 2>&1) || fail "groff: $w"
  [ -z "$w" ] || fail "groff warnings: $w"
fi
if command -v man >/dev/null; then
  MANWIDTH=80 man -l "$D/lmtgt.1" 2>/dev/null | grep -q 'lmtgt migration create' || fail "man -l does not show lmtgt migration create"
  ok "man page renders (man -l)"
fi

B=$P/share/bash-completion/completions/lmtgt
bash -n "$B" || fail "bash -n $B"
got=$(bash -c ". '$B'; COMP_WORDS=(lmtgt migration create --speed hi); COMP_CWORD=4; _lmtgt; echo \"\${COMPREPLY[*]}\"")
[ "$got" = "high highest" ] || fail "bash completion of --speed hi: '$got'"
ok "bash completion loads and completes"
head -1 "$P/share/zsh/site-functions/_lmtgt" | grep -q '^#compdef lmtgt' || fail "zsh completion header"
if command -v zsh >/dev/null; then zsh -n "$P/share/zsh/site-functions/_lmtgt" || fail "zsh -n"; fi
ok "zsh completion"
echo "test-install: all checks passed"
