package rbd

import (
	"sync"
)

// Clusters holds one connection per distinct cluster configuration (the
// server's default and every other cluster a LUN names), so that LUNs of
// several Ceph clusters live in one server and a migration can go from an
// image of one cluster to an image of another. A connection is made on
// first use (Get) and closed by Retain once no configuration in use names
// it, or by Close. The zero value is ready; it must not be copied.
//
// Connect is I/O (the monitors): mu is never held while connecting.
// Concurrent first uses of one configuration may both connect; the first
// to come back keeps its connection, the other closes its own.
type Clusters struct {
	mu     sync.Mutex
	conns  map[Config]*Cluster
	closed bool
}

// Get returns the connection to the cluster cfg names, connecting on
// first use.
func (cs *Clusters) Get(cfg Config) (*Cluster, error) {
	cs.mu.Lock()
	c, closed := cs.conns[cfg], cs.closed
	cs.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if closed {
		return nil, ErrClosed
	}
	c, err := Connect(cfg)
	if err != nil {
		return nil, err
	}
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		c.Close()
		return nil, ErrClosed
	}
	if have := cs.conns[cfg]; have != nil {
		cs.mu.Unlock()
		c.Close()
		return have, nil
	}
	if cs.conns == nil {
		cs.conns = make(map[Config]*Cluster)
	}
	cs.conns[cfg] = c
	cs.mu.Unlock()
	return c, nil
}

// Retain closes the connections of the configurations not in keep (the
// last LUN naming that cluster went) and returns how many it closed.
// Volumes opened through a connection have connections of their own, so
// closing an admin connection never cuts an open image.
func (cs *Clusters) Retain(keep map[Config]bool) int {
	var drop []*Cluster
	cs.mu.Lock()
	for cfg, c := range cs.conns {
		if !keep[cfg] {
			drop = append(drop, c)
			delete(cs.conns, cfg)
		}
	}
	cs.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
	return len(drop)
}

// Open returns the configurations connected now.
func (cs *Clusters) Open() []Config {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]Config, 0, len(cs.conns))
	for cfg := range cs.conns {
		out = append(out, cfg)
	}
	return out
}

// Close closes every connection; Get fails with ErrClosed from then on.
func (cs *Clusters) Close() {
	cs.mu.Lock()
	cs.closed = true
	conns := cs.conns
	cs.conns = nil
	cs.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
