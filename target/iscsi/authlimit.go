package iscsi

import (
	"net"
	"sync"
	"time"
)

// Failed CHAP logins are rate limited per source address, per initiator
// name and per credential (docs/design.md "CHAP guessing"): after
// authAddrLimit failures from one address, authNameLimit for one
// initiator name, or authCredLimit against one target's CHAP credential,
// within authFailWindow, every CHAP login from that address, with that
// name or to that credential is refused (status 0x0201, as a wrong secret,
// without looking at the response) for authLockout. A successful CHAP
// login clears its address and name, not the credential's count. The
// per-name limit is higher so that guessing from one address cannot lock a
// name out for its owner on another address as quickly; the per-credential
// limit bounds guessing sprayed over many addresses and names (at most
// authCredLimit guesses per authLockout+window), at the price that such a
// spray also refuses the credential's real users while it lasts.
const (
	authFailWindow = time.Minute
	authAddrLimit  = 5
	authNameLimit  = 20
	authCredLimit  = 30
	authLockout    = 30 * time.Second
	// authTableMax bounds the tracking table; when full, expired entries
	// go first, then the least recently failed.
	authTableMax = 4096
)

// authLimiter counts failed CHAP logins. Safe for concurrent use.
type authLimiter struct {
	now func() time.Time
	mu  struct {
		sync.Mutex
		entries map[string]*authEntry
	}
}

// authEntry is the failure record of one address or initiator name.
type authEntry struct {
	failures int
	first    time.Time // start of the counting window
	last     time.Time // last failure
	until    time.Time // refused until (zero: not locked out)
}

func newAuthLimiter(now func() time.Time) *authLimiter {
	if now == nil {
		now = time.Now
	}
	l := &authLimiter{now: now}
	l.mu.entries = make(map[string]*authEntry)
	return l
}

func addrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	return "addr " + host
}

func nameKey(initiator string) string { return "name " + initiator }

// credKey names the CHAP credential a login tries: the target (empty for
// discovery) and its configured user.
func credKey(target, user string) string { return "cred " + target + "\x00" + user }

// locked reports whether CHAP logins from remote, as initiator or to
// cred (credKey) are refused now, and until when.
func (l *authLimiter) locked(remote, initiator, cred string) (bool, time.Time) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range [...]string{addrKey(remote), nameKey(initiator), cred} {
		if e := l.mu.entries[k]; e != nil && now.Before(e.until) {
			return true, e.until
		}
	}
	return false, time.Time{}
}

// failed records a failed CHAP login.
func (l *authLimiter) failed(remote, initiator, cred string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failLocked(addrKey(remote), authAddrLimit, now)
	l.failLocked(nameKey(initiator), authNameLimit, now)
	l.failLocked(cred, authCredLimit, now)
}

func (l *authLimiter) failLocked(key string, limit int, now time.Time) {
	e := l.mu.entries[key]
	if e == nil {
		if len(l.mu.entries) >= authTableMax {
			l.evictLocked(now)
		}
		e = &authEntry{first: now}
		l.mu.entries[key] = e
	}
	if now.Sub(e.first) > authFailWindow {
		e.failures, e.first = 0, now
	}
	e.failures++
	e.last = now
	if e.failures >= limit {
		e.until = now.Add(authLockout)
		e.failures, e.first = 0, now
	}
}

// evictLocked makes room: entries neither locked out nor in a live window
// go; if none, the least recently failed one that is not locked out (a
// flood of new names must not free the address or credential it locked),
// and only if every entry is locked out, the least recently failed.
func (l *authLimiter) evictLocked(now time.Time) {
	var oldest, oldestLocked string
	var oldestAt, oldestLockedAt time.Time
	for k, e := range l.mu.entries {
		locked := now.Before(e.until)
		if !locked && now.Sub(e.first) > authFailWindow {
			delete(l.mu.entries, k)
			continue
		}
		if locked {
			if oldestLocked == "" || e.last.Before(oldestLockedAt) {
				oldestLocked, oldestLockedAt = k, e.last
			}
		} else if oldest == "" || e.last.Before(oldestAt) {
			oldest, oldestAt = k, e.last
		}
	}
	if len(l.mu.entries) < authTableMax {
		return
	}
	if oldest == "" {
		oldest = oldestLocked
	}
	delete(l.mu.entries, oldest)
}

// succeeded clears the records of a successful CHAP login.
func (l *authLimiter) succeeded(remote, initiator string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.mu.entries, addrKey(remote))
	delete(l.mu.entries, nameKey(initiator))
}

func (l *authLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.mu.entries)
}
