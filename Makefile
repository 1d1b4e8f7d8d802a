# lmtgt - make targets. `make run` and `make test` are the two commands of the
# README; .ci/run calls `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

GO       ?= go
# The Go that builds and tests lmtgt: the newest patch release of the Go
# in go.mod that fixes the standard library's known vulnerabilities
# (govulncheck, make test-vuln: go1.26.8 reaches ten in net/http,
# crypto/tls, crypto/x509 and net/textproto, fixed in go1.26.9/10). The go
# command fetches it from the module proxy once (about 76 MB) and keeps it
# in the module cache; GOTOOLCHAIN=local make ... uses the installed Go.
GOTOOLCHAIN ?= go1.26.10
export GOTOOLCHAIN
BIN      ?= bin/lmtgt
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The commit, for `lmtgt version` when go build stamps no VCS information
# (GOFLAGS=-buildvcs=false, a git worktree, a tarball).
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X main.version=$(VERSION) $(if $(REVISION),-X main.revision=$(REVISION))

# `go test -race ./...` limit (the whole of `make test` must stay under 90 min).
TEST_TIMEOUT ?= 50m
# Extra `go test` flags, e.g. TESTFLAGS='-run TestACL -v'.
TESTFLAGS ?=
# `make fuzz`: time per fuzz target.
FUZZTIME ?= 20s
# `make stress`: kill -9 rounds of the migration crash loop.
STRESS_KILLS ?= 200
# `make stress`: power cuts of the meta volume on crashfs (dcl TestMetaPowerLoss).
STRESS_CRASHPOINTS ?= 3000
# `make stress`: power cuts of a migration with its data dir on crashfs (lm TestPowerLossMigration).
STRESS_LM_POWERCUTS ?= 100
# `make stress`: kill -9 rounds of the import migration crash loop (tgt as the old array).
STRESS_IMPORT_KILLS ?= 60
# `make stress`: kill -9 rounds of the 2048-pair consistent split.
STRESS_SCALE_KILLS ?= 12
# Power cuts of scripts/vm-powercut.sh: in `make test`, and in `make stress`.
POWERCUTS ?= 10
STRESS_POWERCUTS ?= 50

# Ceph RBD data volumes (metavol/volume/rbd, cgo and librbd): RBD=auto builds
# them in when librbd-dev and librados-dev are installed, RBD=1 insists (the
# build fails without them), RBD=0 leaves them out. GOTAGS is expanded when a
# recipe runs, so `make test` sees what test-deps has just installed.
RBD      ?= auto
GOTAGS    = $(shell scripts/rbd-tags.sh $(RBD))
TAGFLAGS  = $(if $(GOTAGS),-tags $(GOTAGS))
# The lock order checks of package lm (lm/lockrank.go) add the tag lockrank.
comma    := ,
LOCKTAGFLAGS = -tags $(if $(GOTAGS),$(GOTAGS)$(comma))lockrank

# `make install`: where (PREFIX) and under which root (DESTDIR, for
# packaging: `make install DESTDIR=/tmp/pkgroot`). systemd, man,
# bash-completion and zsh all search these directories under /usr/local.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/lmtgt
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions

# Defaults of `make run` (the same as lmtgt serve's own).
DATA_DIR ?= ./lmtgt-data
PORTAL   ?= 127.0.0.1:3260

.PHONY: all build run install uninstall test test-deps test-tidy test-install test-systemd test-vuln test-go test-crash test-conformance test-vm test-multipath test-powercut stress bench fuzz vet clean help

all: build

help:
	@echo "make build        build $(BIN) (RBD=auto|1|0: Ceph RBD support when librbd-dev is there)"
	@echo "make run          build, then serve a demo LUN on $(PORTAL) (data in $(DATA_DIR))"
	@echo "make install      build, then install binary, systemd unit, man page, bash/zsh completion, docs"
	@echo "                  (PREFIX=$(PREFIX), DESTDIR= for a staging root); make uninstall removes them"
	@echo "make test         install test tools if missing, go test -race ./..., conformance, VM tests"
	@echo "make test-install make install into a temporary DESTDIR and check what it installed"
	@echo "make test-systemd lmtgt under systemd in a QEMU guest (Type=notify, stop/start keeps data)"
	@echo "make test-vuln    govulncheck against a vulnerability database built from golang.org/x/vulndb"
	@echo "make test-powercut power cuts of lmtgt inside a VM (POWERCUTS=$(POWERCUTS))"
	@echo "make test-multipath a dm-multipath VM host: a LUN moves from Linux tgt to lmtgt live"
	@echo "make vet          gofmt check and go vet"
	@echo "make test-crash   thousands of power-loss crash points (data volumes, meta volume)"
	@echo "make test-tidy    check that go mod tidy leaves go.mod and go.sum unchanged"
	@echo "make fuzz         every fuzz target for FUZZTIME=$(FUZZTIME)"
	@echo "make stress       crash loop with STRESS_KILLS=$(STRESS_KILLS) kill -9 (STRESS_IMPORT_KILLS=$(STRESS_IMPORT_KILLS) of an import), repeated unit tests,"
	@echo "                  STRESS_CRASHPOINTS=$(STRESS_CRASHPOINTS) power cuts of the meta volume and"
	@echo "                  STRESS_LM_POWERCUTS=$(STRESS_LM_POWERCUTS) of a migration (crashfs)"
	@echo "                  and STRESS_SCALE_KILLS=$(STRESS_SCALE_KILLS) kills of a 2048-pair split,"
	@echo "                  STRESS_POWERCUTS=$(STRESS_POWERCUTS) VM power cuts"
	@echo "make bench        scripts/bench (lmtgt vs Linux tgt vs raw file)"

build:
	@scripts/rbd-tags.sh $(RBD) >/dev/null
	$(GO) build $(TAGFLAGS) -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/lmtgt

run: build
	$(BIN) serve --demo --data-dir $(DATA_DIR) --portal $(PORTAL)

# The man page and the completion scripts are generated by the binary
# from its own command definitions (cmd/lmtgt/genman.go, completion.go).
# The unit's paths follow BINDIR and DOCDIR.
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/lmtgt
	sed -e 's|/usr/local/bin/lmtgt|$(BINDIR)/lmtgt|g' -e 's|/usr/local/share/doc/lmtgt|$(DOCDIR)|g' \
		docs/lmtgt.service > $(DESTDIR)$(UNITDIR)/lmtgt.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/lmtgt.service
	$(BIN) man | gzip -9n > $(DESTDIR)$(MANDIR)/man1/lmtgt.1.gz
	chmod 0644 $(DESTDIR)$(MANDIR)/man1/lmtgt.1.gz
	$(BIN) completion bash > $(DESTDIR)$(BASHCOMPDIR)/lmtgt
	$(BIN) completion zsh > $(DESTDIR)$(ZSHCOMPDIR)/_lmtgt
	chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/lmtgt $(DESTDIR)$(ZSHCOMPDIR)/_lmtgt
	install -m 0644 docs/cli.md docs/design.md README.md $(DESTDIR)$(DOCDIR)/
	@echo "installed under $(DESTDIR)$(PREFIX); then: systemctl daemon-reload && systemctl enable --now lmtgt"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/lmtgt $(DESTDIR)$(UNITDIR)/lmtgt.service $(DESTDIR)$(MANDIR)/man1/lmtgt.1.gz \
		$(DESTDIR)$(BASHCOMPDIR)/lmtgt $(DESTDIR)$(ZSHCOMPDIR)/_lmtgt
	rm -rf $(DESTDIR)$(DOCDIR)

# Every step runs even when an earlier one failed (-k); make test fails if any did.
test:
	@$(MAKE) --no-print-directory -k test-deps test-tidy test-vuln test-install test-systemd test-go test-crash test-conformance test-vm test-multipath test-powercut

test-deps:
	@if [ -x scripts/install-test-deps.sh ]; then \
		scripts/install-test-deps.sh; \
	else \
		echo "test-deps: scripts/install-test-deps.sh not there; tests needing missing tools will skip"; \
	fi

# go.mod and go.sum must be what `go mod tidy` makes of them.
test-tidy:
	@echo "== go mod tidy -diff"
	@out=$$($(GO) mod tidy -diff 2>&1); rc=$$?; \
		if [ $$rc -ne 0 ]; then echo "go mod tidy would change go.mod/go.sum:"; echo "$$out" | head -40; exit 1; fi; \
		echo "== go.mod and go.sum are tidy"

# make install into a temporary DESTDIR; the man page renders, the
# completion loads in bash, the unit passes systemd-analyze (scripts/test-install.sh).
test-install:
	@echo "== scripts/test-install.sh"
	@scripts/test-install.sh

# lmtgt under a real systemd (PID 1 of a QEMU guest), installed by make
# install: Type=notify start, the CLI's default socket, --admin-group,
# data written through iSCSI kept across stop/start (scripts/vm-systemd.sh).
test-systemd:
	@echo "== scripts/vm-systemd.sh"; SECONDS=0; scripts/vm-systemd.sh; rc=$$?; \
		echo "== vm-systemd: exit $$rc after $${SECONDS}s"; exit $$rc

# Known vulnerabilities in the code paths lmtgt uses (govulncheck, built
# from the module proxy) against a database built offline from the
# golang.org/x/vulndb module (vuln.go.dev is not reachable from CI).
test-vuln:
	@echo "== scripts/govulncheck.sh"
	@scripts/govulncheck.sh

test-go:
	@echo "== go test -race $(TAGFLAGS) ./... (timeout $(TEST_TIMEOUT))"
	@SECONDS=0; $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TAGFLAGS) $(TESTFLAGS) ./...; rc=$$?; \
		echo "== go test: exit $$rc after $${SECONDS}s"; \
		echo "== lock order of package lm ($(LOCKTAGFLAGS), lm/doc.go): TestLockOrder under -race, then every lm test"; \
		$(GO) test -race $(LOCKTAGFLAGS) -count=1 -run '^TestLock(Order|RankChecker)$$' ./lm/ || rc=1; \
		$(GO) test $(LOCKTAGFLAGS) -count=1 -timeout 20m ./lm/ || rc=1; exit $$rc

# Power-loss crash points beyond what `go test -race` runs (thousands, so
# without the race detector): crashable data volumes under a migration
# (lm) and the meta volume on the crashable FUSE directory (dcl).
CI_VOLUME_CRASHPOINTS ?= 2000
CI_META_CRASHPOINTS   ?= 1000
test-crash:
	@echo "== power-loss crash points: $(CI_VOLUME_CRASHPOINTS) data volume, $(CI_META_CRASHPOINTS) meta volume"
	@SECONDS=0; LMTGT_STRESS_VOLUME_CRASHPOINTS=$(CI_VOLUME_CRASHPOINTS) $(GO) test -count=1 -timeout 20m \
		-run 'TestVolumePowerLoss$$|TestVolumePowerLossSwitched$$' ./lm/ && \
	LMTGT_STRESS_CRASHPOINTS=$(CI_META_CRASHPOINTS) $(GO) test -count=1 -timeout 20m \
		-run 'TestMetaPowerLoss$$' ./dcl/; rc=$$?; \
		echo "== power-loss crash points: exit $$rc after $${SECONDS}s"; exit $$rc

test-conformance: build
	@if [ -x scripts/conformance.sh ]; then \
		echo "== scripts/conformance.sh"; SECONDS=0; \
		scripts/conformance.sh --multipath --bin $(BIN); rc=$$?; \
		echo "== conformance: exit $$rc after $${SECONDS}s"; exit $$rc; \
	else \
		echo "== skip: scripts/conformance.sh not there yet"; \
	fi

test-vm: build
	@if [ -x scripts/vm-test.sh ]; then \
		echo "== scripts/vm-test.sh"; SECONDS=0; \
		scripts/vm-test.sh --bin $(BIN); rc=$$?; \
		echo "== vm-test: exit $$rc after $${SECONDS}s"; exit $$rc; \
	else \
		echo "== skip: scripts/vm-test.sh not there yet"; \
	fi

# A VM host with open-iscsi and dm-multipath: its LUN moves from Linux tgt
# (the old array) into lmtgt (lun import, a second path of the same map),
# then onto a local file (migration, split) under fio with verify; a LUN
# moved between two lmtgt servers (import and copy; on Ceph RBD, without
# a copy when the binary has RBD and Ceph is installed).
test-multipath: build
	@if [ -x scripts/vm-multipath.sh ]; then \
		echo "== scripts/vm-multipath.sh"; SECONDS=0; \
		scripts/vm-multipath.sh --bin $(BIN); rc=$$?; \
		echo "== vm-multipath: exit $$rc after $${SECONDS}s"; exit $$rc; \
	else \
		echo "== skip: scripts/vm-multipath.sh not there yet"; \
	fi

# lmtgt inside the VM, its disk power-cut POWERCUTS times during copy,
# dual-write and split; SEED=N replays a run.
test-powercut:
	@if [ -x scripts/vm-powercut.sh ]; then \
		echo "== scripts/vm-powercut.sh ($(POWERCUTS) cuts)"; SECONDS=0; \
		POWERCUTS=$(POWERCUTS) scripts/vm-powercut.sh; rc=$$?; \
		echo "== vm-powercut: exit $$rc after $${SECONDS}s"; exit $$rc; \
	else \
		echo "== skip: scripts/vm-powercut.sh not there yet"; \
	fi

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ -n "$(GOTAGS)" ]; then echo "$(GO) vet -tags $(GOTAGS) ./..."; $(GO) vet -tags $(GOTAGS) ./...; fi

# Every `func FuzzXxx` in the tree, each for FUZZTIME.
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
		pkg=$$(dirname $$f); \
		for fn in $$(grep -oh '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
			echo "== fuzz $$pkg $$fn ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) $$pkg; \
		done; \
	done

# `make stress`: power cuts of the crashable data volume test (lm
# TestVolumePowerLoss; it also runs TestVolumeErrorAtEveryStep longer).
STRESS_VOLUME_CRASHPOINTS ?= 5000

# Longer runs of what CI runs: the migration crash loop with many more
# kill -9, the restart test, the migration and DCL unit tests repeated, and
# STRESS_POWERCUTS power cuts of the VM.
stress:
	LMTGT_STRESS_KILLS=$(STRESS_KILLS) LMTGT_STRESS_IMPORT_KILLS=$(STRESS_IMPORT_KILLS) LMTGT_STRESS_SWITCHED_KILLS=$(STRESS_KILLS) $(GO) test -race -count=1 -timeout 180m \
		-run 'CrashLoop|Restart' -v ./integration/
	LMTGT_STRESS_VOLUME_CRASHPOINTS=$(STRESS_VOLUME_CRASHPOINTS) $(GO) test -race -count=1 -timeout 180m \
		-run 'TestVolumePowerLoss$$|TestVolumePowerLossSwitched$$|TestVolumeErrorAtEveryStep$$' -v ./lm/
	LMTGT_SCALE_KILLS=$(STRESS_SCALE_KILLS) $(GO) test -race -count=1 -timeout 60m \
		-run 'TestScale' -v ./integration/
	$(GO) test -race -count=5 -timeout 60m ./lm/... ./dcl/... ./metavol/...
	LMTGT_STRESS_CRASHPOINTS=$(STRESS_CRASHPOINTS) $(GO) test -race -count=1 -timeout 120m \
		-run 'TestMetaPowerLoss$$' -v ./dcl/
	LMTGT_STRESS_LM_POWERCUTS=$(STRESS_LM_POWERCUTS) $(GO) test -race -count=1 -timeout 120m \
		-run 'TestPowerLossMigration$$' -v ./lm/
	POWERCUTS=$(STRESS_POWERCUTS) scripts/vm-powercut.sh

bench: build
	@if [ -x scripts/bench ]; then scripts/bench -bin $(BIN) $(BENCHFLAGS); \
	else echo "scripts/bench not there yet"; exit 1; fi

clean:
	rm -rf bin .work
