package iscsi

import (
	"bufio"
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/iscsi/logtest"
	"github.com/rs/zerolog"
)

// syncBuffer is a log sink the server's goroutines write to while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLoginRefusedLogLine: the "login refused" line names the initiator
// and target once each, whether the login was refused before the names
// were known to the connection's logger (unknown target) or after (CHAP):
// a JSON log line with a key twice is read differently by each log tool.
func TestLoginRefusedLogLine(t *testing.T) {
	needTool(t, "iscsi-inq")
	b := newFileBackend(t, 1<<20)
	b.chap = &CHAP{User: "alice", Secret: "alicesecret12"}
	var sink syncBuffer
	s := startServer(t, b, func(o *Options) { o.Log = zerolog.New(&sink).Level(zerolog.InfoLevel) })
	if out, err := runTool(t, 20*time.Second, nil, "", "iscsi-inq", urlFor(s, "alice%wrongsecret12")); err == nil {
		t.Fatalf("wrong secret accepted:\n%s", out)
	}
	unknown := "iscsi://" + addrOf(s) + "/iqn.2026-12.org.lmtgt:nosuch/0"
	if out, err := runTool(t, 20*time.Second, nil, "", "iscsi-inq", unknown); err == nil {
		t.Fatalf("unknown target accepted:\n%s", out)
	}
	var refused []string
	waitFor(t, "two login refused lines", 10*time.Second, func() bool {
		refused = refused[:0]
		sc := bufio.NewScanner(strings.NewReader(sink.String()))
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"message":"login refused"`) {
				refused = append(refused, sc.Text())
			}
		}
		return len(refused) >= 2
	})
	for _, l := range refused {
		m, dup := logtest.Fields(t, l)
		if len(dup) > 0 {
			t.Errorf("keys %v twice in %s", dup, l)
		}
		if m["initiator"] == nil || m["initiator"] == "" || m["iqn"] == nil || m["iqn"] == "" {
			t.Errorf("login refused line without the initiator or target: %s", l)
		}
	}
}
