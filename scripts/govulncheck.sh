#!/usr/bin/env bash
# govulncheck.sh - known vulnerabilities in the code lmtgt calls, with
# govulncheck, offline from vuln.go.dev: govulncheck is built from the
# module proxy, and its database is built from the golang.org/x/vulndb
# module (data/osv, also served by the proxy) by scripts/vulndb into the
# layout `govulncheck -db file://DIR` reads.
# Env: GOVULNCHECK_VERSION (v1.9.0), VULNDB_VERSION (latest: the newest
#      commit of x/vulndb the proxy has), RBD (auto: scan the rbd build too),
#      WORK (REPO/.work/vuln: tools and database, reused between runs).
# Exit: 0 no vulnerability reached from lmtgt's code, 3 some (govulncheck's
#      list: upgrade the module, or the Go toolchain for a stdlib one),
#      1 the tool or the database could not be built.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.9.0}
VULNDB_VERSION=${VULNDB_VERSION:-latest}
WORK=${WORK:-$REPO/.work/vuln}
GO=${GO:-go}
mkdir -p "$WORK/bin"
cd "$REPO"

# govulncheck at a pinned version, outside lmtgt's go.mod.
stamp="$WORK/bin/govulncheck.version"
if [ ! -x "$WORK/bin/govulncheck" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$GOVULNCHECK_VERSION" ]; then
  echo "govulncheck.sh: building golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION"
  GOBIN="$WORK/bin" GOFLAGS= "$GO" install "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" \
    || { echo "govulncheck.sh: cannot build govulncheck from the module proxy" >&2; exit 1; }
  echo "$GOVULNCHECK_VERSION" > "$stamp"
fi

# The database: the OSV entries of golang.org/x/vulndb at VULNDB_VERSION.
info=$(GOFLAGS= "$GO" mod download -json "golang.org/x/vulndb@$VULNDB_VERSION") \
  || { echo "govulncheck.sh: cannot download golang.org/x/vulndb@$VULNDB_VERSION: $info" >&2; exit 1; }
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
ver=$(sed -n 's/^[[:space:]]*"Version": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
when=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(GOFLAGS= "$GO" env GOMODCACHE)/cache/download/golang.org/x/vulndb/@v/$ver.info")
[ -d "$dir/data/osv" ] || { echo "govulncheck.sh: $dir has no data/osv" >&2; exit 1; }
db="$WORK/db-$ver"
if [ ! -f "$db/index/modules.json" ]; then
  GOFLAGS= "$GO" run ./scripts/vulndb -src "$dir/data/osv" -out "$db" -modified "$when"
fi
echo "govulncheck.sh: govulncheck $GOVULNCHECK_VERSION, database golang.org/x/vulndb@$ver ($when), $("$GO" version | cut -d' ' -f3)"

tags=$(scripts/rbd-tags.sh "${RBD:-auto}")
rc=0
"$WORK/bin/govulncheck" -db "file://$db" ${tags:+-tags "$tags"} ./... || rc=$?
case $rc in
  0) echo "govulncheck.sh: no known vulnerability reached" ;;
  3) echo "govulncheck.sh: vulnerable code is reached (above): upgrade the module, or the Go toolchain for the standard library" >&2 ;;
  *) echo "govulncheck.sh: govulncheck failed (exit $rc)" >&2 ;;
esac
exit $rc
