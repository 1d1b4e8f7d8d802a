package iscsi

import (
	"testing"
	"time"
)

// TestCloseTargetSessions: closing another target's sessions leaves these
// alone; closing theirs ends both connections and releases the sessions.
func TestCloseTargetSessions(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, nil)
	a := dialIni(t, addrOf(s))
	a.mustLogin(loginOpts{isid: [6]byte{0x80, 0, 0, 0, 0, 1}})
	a.readBlocks(0, 1)
	c := dialIni(t, addrOf(s))
	c.mustLogin(loginOpts{isid: [6]byte{0x80, 0, 0, 0, 0, 2}})

	if n := s.CloseTargetSessions("iqn.2026-11.org.lmtgt:no-such-target"); n != 0 {
		t.Fatalf("closed %d sessions of a target nobody is logged in to", n)
	}
	c.readBlocks(0, 1)
	if n := s.CloseTargetSessions(testIQN); n != 2 {
		t.Fatalf("CloseTargetSessions(%s) = %d, want 2", testIQN, n)
	}
	for _, i := range []*ini{a, c} {
		if _, err := i.read(); err == nil {
			t.Fatal("a connection of the closed target is still open")
		}
	}
	waitFor(t, "sessions released", 5*time.Second, func() bool { return s.sessionCount() == 0 })
	waitFor(t, "nexuses closed", 5*time.Second, func() bool { return b.openNexus.Load() == 0 })
}
