package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmtgt/lmtgt/lm"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// Log lines (docs/design.md "Logs"): every line carries a "time" with
// milliseconds (logTimeFormat, added by msTimestamp instead of zerolog's
// Timestamp, whose format is a zerolog global). Under systemd (stderr is
// the journal stream named by JOURNAL_STREAM) every line starts with its
// syslog priority, "<6>" for info, which journald strips and keeps as the
// entry's priority; the console format then has no colors.

// logTimeFormat is RFC 3339 with milliseconds.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// msTimestamp adds the time with milliseconds to every event.
type msTimestamp struct{}

func (msTimestamp) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, time.Now().Format(logTimeFormat))
}

// underJournal reports whether f is the journal stream systemd gave the
// process (JOURNAL_STREAM is "DEVICE:INODE" of it).
func underJournal(w io.Writer) bool {
	js := os.Getenv("JOURNAL_STREAM")
	f, ok := w.(*os.File)
	if js == "" || !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// syslogPriority is the syslog priority of a zerolog level.
func syslogPriority(l zerolog.Level) int {
	switch l {
	case zerolog.TraceLevel, zerolog.DebugLevel:
		return 7
	case zerolog.InfoLevel, zerolog.NoLevel:
		return 6
	case zerolog.WarnLevel:
		return 4
	case zerolog.ErrorLevel:
		return 3
	case zerolog.FatalLevel:
		return 2
	}
	return 0
}

// journalWriter prefixes each line with its syslog priority; console
// lines are formatted without colors first.
type journalWriter struct {
	out     io.Writer
	console bool
}

func (j journalWriter) Write(p []byte) (int, error) { return j.WriteLevel(zerolog.NoLevel, p) }

func (j journalWriter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "<%d>", syslogPriority(l))
	if j.console {
		cw := zerolog.ConsoleWriter{Out: &buf, NoColor: true, TimeFormat: "15:04:05.000"}
		if _, err := cw.Write(p); err != nil {
			return 0, err
		}
	} else {
		buf.Write(p)
	}
	if _, err := j.out.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// loginRecorder records the iSCSI logins and refused logins in the
// event log.
func loginRecorder(el *lm.EventLog) func(iscsi.LoginEvent) {
	return func(le iscsi.LoginEvent) {
		e := lm.Event{Type: lm.EventLogin, Action: "login", Who: le.Initiator, OK: le.OK, Reason: le.Reason,
			Target: le.Target, Initiator: le.Initiator, Address: le.Address}
		if le.Discovery {
			e.Action = "discovery login"
		}
		e.Object = "target " + le.Target
		if le.Target == "" {
			e.Object = "discovery"
		}
		if !le.OK {
			e.Type = lm.EventLoginRefused
		}
		if e.Who == "" {
			e.Who = "initiator at " + le.Address
		}
		if le.OK {
			el.Record(e)
			return
		}
		host, _, err := net.SplitHostPort(le.Address)
		if err != nil {
			host = le.Address
		}
		el.RecordLimited(host+" "+le.Initiator, e) // a flood of refusals cannot push the log out
	}
}

// progressInterval maps --progress-interval to lm.Options (0: never).
func progressInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
