// Package logtest reads the daemon's JSON log lines for lmtgt's tests:
// the transport's own tests (target/iscsi) and the tests of the whole
// daemon (integration) check the same things of a line (a JSON object,
// no key twice: a key written twice is read differently by each log
// tool) with this one decoder. It is test support only; no lmtgt program
// imports it, and it imports only the standard library.
package logtest

import (
	"encoding/json"
	"strings"
	"testing"
)

// Fields decodes the JSON object line into its fields and lists the
// top-level keys that occur more than once (the last value wins in
// fields). It fails t when line is not one JSON object.
func Fields(t testing.TB, line string) (fields map[string]any, dup []string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("log line is not a JSON object: %q", line)
	}
	fields = map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		k, ok := tok.(string)
		if !ok {
			t.Fatalf("log line %q: key %v is not a string", line, tok)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if _, ok := fields[k]; ok {
			dup = append(dup, k)
		}
		fields[k] = v
	}
	if _, err := dec.Token(); err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	if dec.More() {
		t.Fatalf("log line %q: more after the object", line)
	}
	return fields, dup
}
