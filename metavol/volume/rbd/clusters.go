package rbd

import (
	"sync"
)

// Clusters holds one connection per distinct cluster configuration (the
// server's default and every other cluster a LUN names), so that LUNs of
// several Ceph clusters live in one server and a migration can go from an
// image of one cluster to an image of another. A connection is made on
// first use (Use) and closed once Retain was told no configuration in use
// names it, or by Close, in both cases only when its last user is done:
// a caller never finds its connection closed under it. The zero value is
// ready; it must not be copied.
//
// Connect is I/O (the monitors): mu is never held while connecting or
// closing. Concurrent first uses of one configuration may both connect;
// the first to come back keeps its connection, the other closes its own.
type Clusters struct {
	mu     sync.Mutex
	conns  map[Config]*clusterUse
	closed bool
}

// clusterUse is one connection and its users (under Clusters.mu).
type clusterUse struct {
	c       *Cluster
	users   int
	retired bool // out of the map: the last user closes it
}

// Use returns the connection to the cluster cfg names, connecting on
// first use, and done, which the caller calls once it no longer uses the
// connection (volumes it opened have their own and may stay open).
func (cs *Clusters) Use(cfg Config) (c *Cluster, done func(), err error) {
	cs.mu.Lock()
	if u := cs.take(cfg); u != nil {
		cs.mu.Unlock()
		return u.c, cs.doneFunc(u), nil
	}
	closed := cs.closed
	cs.mu.Unlock()
	if closed {
		return nil, nil, ErrClosed
	}
	c, err = Connect(cfg)
	if err != nil {
		return nil, nil, err
	}
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		c.Close()
		return nil, nil, ErrClosed
	}
	if u := cs.take(cfg); u != nil {
		cs.mu.Unlock()
		c.Close()
		return u.c, cs.doneFunc(u), nil
	}
	if cs.conns == nil {
		cs.conns = make(map[Config]*clusterUse)
	}
	u := &clusterUse{c: c, users: 1}
	cs.conns[cfg] = u
	cs.mu.Unlock()
	return c, cs.doneFunc(u), nil
}

// take counts a user of cfg's connection, nil if there is none (mu held).
func (cs *Clusters) take(cfg Config) *clusterUse {
	u := cs.conns[cfg]
	if u != nil {
		u.users++
	}
	return u
}

// doneFunc ends one use of u; the last use of a retired connection
// closes it. Calling it twice counts once.
func (cs *Clusters) doneFunc(u *clusterUse) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			cs.mu.Lock()
			u.users--
			last := u.retired && u.users == 0
			cs.mu.Unlock()
			if last {
				u.c.Close()
			}
		})
	}
}

// retire takes u out of the map; it returns whether the caller closes it
// now (no user), else its last user will (mu held).
func (cs *Clusters) retire(cfg Config, u *clusterUse) bool {
	delete(cs.conns, cfg)
	u.retired = true
	return u.users == 0
}

// Retain retires the connections of the configurations not in keep (the
// last LUN naming that cluster went) and returns how many it retired; each
// is closed now or when its last user is done. Volumes opened through a
// connection have connections of their own, so closing an admin
// connection never cuts an open image.
func (cs *Clusters) Retain(keep map[Config]bool) int {
	var drop []*Cluster
	n := 0
	cs.mu.Lock()
	for cfg, u := range cs.conns {
		if !keep[cfg] {
			n++
			if cs.retire(cfg, u) {
				drop = append(drop, u.c)
			}
		}
	}
	cs.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
	return n
}

// Open returns the configurations connected now (not retired).
func (cs *Clusters) Open() []Config {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]Config, 0, len(cs.conns))
	for cfg := range cs.conns {
		out = append(out, cfg)
	}
	return out
}

// Close retires every connection (each closed now or when its last user
// is done); Use fails with ErrClosed from then on.
func (cs *Clusters) Close() {
	var drop []*Cluster
	cs.mu.Lock()
	cs.closed = true
	for cfg, u := range cs.conns {
		if cs.retire(cfg, u) {
			drop = append(drop, u.c)
		}
	}
	cs.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
}
