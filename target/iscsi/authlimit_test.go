package iscsi

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// dialIniFrom is dialIni from a chosen local address (127.0.0.0/8 all
// reaches the loopback).
func dialIniFrom(t *testing.T, addr, local string) *ini {
	t.Helper()
	i := dialIni(t, addr) // for the defaults; replaced below
	i.nc.Close()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	i.nc, i.br = nc, bufio.NewReader(nc)
	return i
}

// aliceLogin logs in to testIQN on s from the local address from, as
// initiator with CHAP user alice and secret, and returns the login status.
func aliceLogin(t *testing.T, s *Server, from, initiator, secret string) uint16 {
	t.Helper()
	i := dialIniFrom(t, addrOf(s), from)
	r, err := i.login(loginOpts{target: testIQN, initiator: initiator, user: "alice", secret: secret})
	if err != nil {
		t.Fatalf("login from %s: %v", from, err)
	}
	return r.status
}

// TestCHAPRateLimit: a burst of wrong-secret logins from one address locks
// that address out (even the right secret is refused) while a correct
// login from another address works; guessing one initiator name from many
// addresses locks the name; the lockout ends after authLockout.
func TestCHAPRateLimit(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	b := newFileBackend(t, 1<<20)
	b.chap = &CHAP{User: "alice", Secret: "alicesecret1"}
	s := startServer(t, b, func(o *Options) { o.now = clk.now })
	login := func(from, initiator, secret string) uint16 {
		t.Helper()
		return aliceLogin(t, s, from, initiator, secret)
	}
	const guesser = "iqn.2024-01.org.lmtgt:guesser"
	for k := 0; k < authAddrLimit; k++ {
		if st := login("127.0.0.1", guesser, fmt.Sprintf("guess%07d", k)); st != statusAuthFailure {
			t.Fatalf("wrong secret %d: status %#04x", k, st)
		}
	}
	if st := login("127.0.0.1", "iqn.2024-01.org.lmtgt:other", "alicesecret1"); st != statusAuthFailure {
		t.Fatalf("right secret from a locked-out address: status %#04x, want refused", st)
	}
	if st := login("127.0.0.2", "iqn.2024-01.org.lmtgt:ini", "alicesecret1"); st != 0 {
		t.Fatalf("right secret from another address: status %#04x", st)
	}
	// One name guessed from many addresses.
	const victim = "iqn.2024-01.org.lmtgt:victim"
	for k := 0; k < authNameLimit; k++ {
		if st := login(fmt.Sprintf("127.0.1.%d", k+1), victim, "wrongsecret1"); st != statusAuthFailure {
			t.Fatalf("wrong secret for the victim name: status %#04x", st)
		}
	}
	if st := login("127.0.2.1", victim, "alicesecret1"); st != statusAuthFailure {
		t.Fatalf("right secret for a locked-out name: status %#04x, want refused", st)
	}
	clk.advance(authLockout + time.Second)
	if st := login("127.0.0.1", guesser, "alicesecret1"); st != 0 {
		t.Fatalf("after the lockout: status %#04x", st)
	}
	if st := login("127.0.2.1", victim, "alicesecret1"); st != 0 {
		t.Fatalf("victim name after the lockout: status %#04x", st)
	}
}

// TestCHAPSprayLimited: guesses spread over many addresses and initiator
// names (a new pair for every guess) still meet a limit, the one of the
// target's CHAP credential; another target's credential is not affected,
// and the lockout ends after authLockout.
func TestCHAPSprayLimited(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	b := newFileBackend(t, 1<<20)
	b.chap = &CHAP{User: "alice", Secret: "alicesecret1"}
	s := startServer(t, b, func(o *Options) { o.now = clk.now })
	login := func(from, initiator, secret string) uint16 {
		t.Helper()
		return aliceLogin(t, s, from, initiator, secret)
	}
	for k := 0; k < authCredLimit; k++ {
		if st := login(fmt.Sprintf("127.0.%d.%d", 4+k/200, 1+k%200), fmt.Sprintf("iqn.2024-01.org.lmtgt:spray%d", k), "wrongsecret1"); st != statusAuthFailure {
			t.Fatalf("guess %d: status %#04x", k, st)
		}
	}
	if st := login("127.0.9.1", "iqn.2024-01.org.lmtgt:fresh", "alicesecret1"); st != statusAuthFailure {
		t.Fatalf("right secret while the credential is sprayed: status %#04x, want refused (the spray met no limit)", st)
	}
	clk.advance(authLockout + time.Second)
	if st := login("127.0.9.1", "iqn.2024-01.org.lmtgt:fresh", "alicesecret1"); st != 0 {
		t.Fatalf("after the lockout: status %#04x", st)
	}
}

// TestAuthLimiterBounded: the tracking table never grows past
// authTableMax, and a locked-out address survives a flood of new names.
func TestAuthLimiterBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	l := newAuthLimiter(clk.now)
	for k := 0; k < authAddrLimit; k++ {
		l.failed("192.0.2.1:1000", "iqn.x:attacker", "")
	}
	if locked, _ := l.locked("192.0.2.1:2000", "iqn.x:someone", ""); !locked {
		t.Fatal("address not locked out after the limit")
	}
	for k := 0; k < 3*authTableMax; k++ {
		l.failed("192.0.2.1:1000", fmt.Sprintf("iqn.x:name%d", k), credKey("iqn.t", fmt.Sprintf("user%d", k)))
		if n := l.size(); n > authTableMax {
			t.Fatalf("table has %d entries, bound %d", n, authTableMax)
		}
	}
	if locked, _ := l.locked("192.0.2.1:3000", "iqn.x:fresh", ""); !locked {
		t.Fatal("the attacking address was evicted by its own flood")
	}
	clk.advance(authLockout + authFailWindow + time.Second)
	if locked, _ := l.locked("192.0.2.1:3000", "iqn.x:fresh", ""); locked {
		t.Fatal("still locked out after the lockout")
	}
}
