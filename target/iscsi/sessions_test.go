package iscsi

import (
	"testing"
	"time"
)

// TestSessionsAndLoginStats: Sessions lists a logged-in session with its
// identity and digests, forgets it after logout; LoginStats counts
// successful normal and discovery logins and refusals.
func TestSessionsAndLoginStats(t *testing.T) {
	b := newFileBackend(t, 1<<20)
	s := startServer(t, b, nil)
	if got := s.Sessions(); len(got) != 0 {
		t.Fatalf("sessions before any login: %+v", got)
	}
	isid := [6]byte{0x80, 1, 2, 3, 4, 5}
	i := dialIni(t, addrOf(s))
	i.mustLogin(loginOpts{isid: isid, digest: true})
	i.readBlocks(0, 1)
	ss := s.Sessions()
	if len(ss) != 1 {
		t.Fatalf("sessions = %+v, want 1", ss)
	}
	got := ss[0]
	if got.Target != testIQN || got.ISID != "800102030405" || got.TSIH != i.tsih || got.Discovery ||
		!got.HeaderDigest || !got.DataDigest || got.Remote != i.nc.LocalAddr().String() || got.Initiator == "" {
		t.Fatalf("session = %+v (initiator TSIH %d, local %s)", got, i.tsih, i.nc.LocalAddr())
	}

	d := dialIni(t, addrOf(s))
	d.mustLogin(loginOpts{discovery: true})
	waitFor(t, "the discovery session listed", 5*time.Second, func() bool {
		for _, x := range s.Sessions() {
			if x.Discovery && x.Target == "" {
				return true
			}
		}
		return false
	})

	r := dialIni(t, addrOf(s))
	res, err := r.login(loginOpts{target: "iqn.2024-01.org.lmtgt:nope"})
	if err != nil || res.status != statusNotFound {
		t.Fatalf("login to an unknown target: %v status %#04x", err, res.status)
	}
	waitFor(t, "login counters", 5*time.Second, func() bool {
		return s.LoginStats() == LoginStats{Normal: 1, Discovery: 1, Failures: 1}
	})

	if err := i.logout(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the normal session gone after logout", 5*time.Second, func() bool {
		for _, x := range s.Sessions() {
			if !x.Discovery {
				return false
			}
		}
		return true
	})
}
