package logtest

import (
	"slices"
	"testing"
)

// TestFields: the fields of a zerolog line, and the keys written twice
// (which json.Unmarshal would hide: it keeps the last value silently).
func TestFields(t *testing.T) {
	line := `{"level":"info","initiator":"iqn.a","iqn":"iqn.t","initiator":"iqn.a","n":3,"message":"login refused"}`
	fields, dup := Fields(t, line)
	if !slices.Equal(dup, []string{"initiator"}) {
		t.Errorf("dup = %v, want [initiator]", dup)
	}
	if fields["iqn"] != "iqn.t" || fields["n"] != 3.0 || fields["message"] != "login refused" {
		t.Errorf("fields = %v", fields)
	}
	if _, dup := Fields(t, `{"a":{"a":1},"b":[1,2]}`); len(dup) != 0 {
		t.Errorf("a nested key counted as a duplicate: %v", dup)
	}
}
