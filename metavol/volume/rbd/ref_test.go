package rbd

import (
	"errors"
	"testing"
)

func TestParseRef(t *testing.T) {
	for _, s := range []string{"rbd/img", "pool-1/a.b_c"} {
		r, err := ParseRef(s)
		if err != nil || r.String() != s {
			t.Errorf("ParseRef(%q) = %v, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "img", "/img", "rbd/", "rbd/a/b", "rbd/img@snap", "-x/y"} {
		if _, err := ParseRef(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRef(%q): %v, want ErrInvalid", s, err)
		}
	}
}
