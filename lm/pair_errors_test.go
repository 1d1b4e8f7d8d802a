package lm

import (
	"errors"
	"testing"
)

// An unknown LUN in a pair request is named with its role and the pair,
// not as "target: lun x" (which reads like an iSCSI target).
func TestCreatePairNamesUnknownLUN(t *testing.T) {
	e := newEnv(t, Options{}, false)
	e.lun("src", 1<<20)
	for _, c := range []struct {
		req  PairRequest
		want string
	}{
		{PairRequest{Source: "src", Target: "nope"}, "pair src: target lun nope: not found"},
		{PairRequest{Source: "gone", Target: "src"}, "pair gone: source lun gone: not found"},
	} {
		_, err := e.m.CreatePair(c.req)
		if !errors.Is(err, ErrNotFound) || err.Error() != c.want {
			t.Errorf("CreatePair(%+v) = %v, want %q (ErrNotFound)", c.req, err, c.want)
		}
	}
}
