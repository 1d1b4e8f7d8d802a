package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestLogMillisecondTimestamps: every JSON log line has a time with
// milliseconds.
func TestLogMillisecondTimestamps(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("lun", "a").Msg("one")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	ts, _ := line["time"].(string)
	if !regexp.MustCompile(`T\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`).MatchString(ts) {
		t.Fatalf("time %q: want RFC 3339 with milliseconds", ts)
	}
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Fatalf("time %q does not parse: %v", ts, err)
	}
}

// TestLogJournalPriorities: when stderr is the journal stream systemd
// names in JOURNAL_STREAM, every line starts with its syslog priority and
// console lines have no colors; elsewhere the lines are unchanged.
func TestLogJournalPriorities(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	for _, format := range []string{"console", "json"} {
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		f.Seek(0, 0)
		log, err := newLogger(f, "debug", format)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug().Msg("d")
		log.Info().Msg("i")
		log.Warn().Msg("w")
		log.Error().Msg("e")
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		want := []string{"<7>", "<6>", "<4>", "<3>"}
		if len(lines) != len(want) {
			t.Fatalf("%s: %d lines %q, want %d", format, len(lines), lines, len(want))
		}
		for i, l := range lines {
			if !strings.HasPrefix(l, want[i]) || strings.Contains(l, "\x1b[") {
				t.Fatalf("%s: line %q, want prefix %s and no colors", format, l, want[i])
			}
		}
	}
	// Another file: not the journal stream, no prefix.
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("x")
	if strings.HasPrefix(buf.String(), "<") {
		t.Fatalf("not under the journal: %q", buf.String())
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	if got, err := parseSince("90m", now); err != nil || !got.Equal(now.Add(-90*time.Minute)) {
		t.Fatalf("90m: %v %v", got, err)
	}
	if got, err := parseSince("2026-12-07T10:00:00Z", now); err != nil || !got.Equal(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("RFC 3339: %v %v", got, err)
	}
	for _, bad := range []string{"-5m", "soon", ""} {
		if _, err := parseSince(bad, now); err == nil {
			t.Fatalf("--since %q accepted", bad)
		}
	}
}

// TestEventLineNamesLUN: an admin change on a target that concerns one
// LUN (target map, unmap, mapping) names the LUN in the table, as the
// JSON line does; a LUN's or pair's own event does not repeat it.
func TestEventLineNamesLUN(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.Local)
	for _, c := range []struct {
		e    wire.Event
		want string
	}{
		{wire.Event{Time: at, Type: "admin", Action: "target map", Object: "target iqn.2026-12.org.x:t", LUN: "l0", Target: "iqn.2026-12.org.x:t", Who: "user root", OK: true},
			"2026-12-07 12:00:00.000  admin  target map  target iqn.2026-12.org.x:t  lun l0  by user root"},
		{wire.Event{Time: at, Type: "admin", Action: "lun create", Object: "lun l0", LUN: "l0", Who: "user root", OK: true},
			"2026-12-07 12:00:00.000  admin  lun create  lun l0  by user root"},
		{wire.Event{Time: at, Type: "admin", Action: "config apply", Object: "migration src", LUN: "src", Who: "user root", OK: true, Reason: "change: speed low→high"},
			"2026-12-07 12:00:00.000  admin  config apply  migration src  by user root: change: speed low→high"},
		{wire.Event{Time: at, Type: "pair", Action: "state", Object: "pair src", LUN: "src", From: "queued", To: "copying", Who: "system", OK: true, Reason: "copy started"},
			"2026-12-07 12:00:00.000  pair  state  pair src  queued → copying  by system: copy started"},
	} {
		if got := eventLine(c.e); got != c.want {
			t.Errorf("event line\n got %q\nwant %q", got, c.want)
		}
	}
}
