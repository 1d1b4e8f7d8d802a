package iscsi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

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

// duplicateKeys lists the top-level keys that occur more than once in the
// JSON object line.
func duplicateKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line is not a JSON object: %q", line)
	}
	seen := map[string]bool{}
	var dup []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		k := tok.(string)
		if seen[k] {
			dup = append(dup, k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
	}
	return dup
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
		if dup := duplicateKeys(t, l); len(dup) > 0 {
			t.Errorf("keys %v twice in %s", dup, l)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if m["initiator"] == nil || m["initiator"] == "" || m["iqn"] == nil || m["iqn"] == "" {
			t.Errorf("login refused line without the initiator or target: %s", l)
		}
	}
}
