package pdu

import (
	"bytes"
	"errors"
	"fmt"
)

// KV is one text key=value pair (RFC 7143 §6.1).
type KV struct {
	Key, Value string
}

// Limits on text keys (RFC 7143 §6.1: keys up to 63 bytes, values up to 255
// bytes except a few that may reach 8192).
const (
	MaxKeyLen   = 63
	MaxValueLen = 8192
	MaxTextKeys = 256
)

// ErrText marks a malformed text data segment.
var ErrText = errors.New("malformed text")

// ParseText splits a text data segment into key=value pairs. Trailing NULs
// and padding are ignored; duplicate keys, missing '=', over-long keys or
// values and too many keys are errors.
func ParseText(b []byte) ([]KV, error) {
	var out []KV
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		var item []byte
		if i < 0 {
			item, b = b, nil
		} else {
			item, b = b[:i], b[i+1:]
		}
		if len(item) == 0 {
			continue
		}
		eq := bytes.IndexByte(item, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("text item %.40q without key=value: %w", item, ErrText)
		}
		if eq > MaxKeyLen {
			return nil, fmt.Errorf("text key %.40q too long: %w", item[:eq], ErrText)
		}
		if len(item)-eq-1 > MaxValueLen {
			return nil, fmt.Errorf("text value of %s too long (%d bytes): %w", item[:eq], len(item)-eq-1, ErrText)
		}
		k := string(item[:eq])
		for _, p := range out {
			if p.Key == k {
				return nil, fmt.Errorf("text key %s repeated: %w", k, ErrText)
			}
		}
		if len(out) >= MaxTextKeys {
			return nil, fmt.Errorf("more than %d text keys: %w", MaxTextKeys, ErrText)
		}
		out = append(out, KV{Key: k, Value: string(item[eq+1:])})
	}
	return out, nil
}

// EncodeText renders pairs as key=value\0 ...
func EncodeText(pairs []KV) []byte {
	n := 0
	for _, p := range pairs {
		n += len(p.Key) + len(p.Value) + 2
	}
	out := make([]byte, 0, n)
	for _, p := range pairs {
		out = append(out, p.Key...)
		out = append(out, '=')
		out = append(out, p.Value...)
		out = append(out, 0)
	}
	return out
}

// Lookup returns the value of key in pairs.
func Lookup(pairs []KV, key string) (string, bool) {
	for _, p := range pairs {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}
