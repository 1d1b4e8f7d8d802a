package pdu

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// An armed Read that finds no data polls: data sent while it polls (here
// from the admission function, which runs when the poll starts) is caught
// without a netpoller wait, and done hears so.
func TestSpinNextReadCatches(t *testing.T) {
	a, b := tcpPair(t)
	s := NewSock(b)
	var tried, caught, ended int
	s.SpinNextRead(time.Minute, func() bool {
		tried++
		if _, err := a.Write([]byte("next")); err != nil {
			t.Error(err)
		}
		return true
	}, func(c bool) {
		ended++
		if c {
			caught++
		}
	})
	got := make([]byte, 4)
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte("next")) || tried != 1 || ended != 1 || caught != 1 {
		t.Fatalf("read %q, admission %d, done %d (caught %d); want next, 1, 1, 1", got, tried, ended, caught)
	}
}

// A poll that times out reports it, then the Read waits as usual and gets
// what comes later (sent here from done, after the poll gave up); the
// arming is used up (the next empty read does not poll).
func TestSpinNextReadMisses(t *testing.T) {
	a, b := tcpPair(t)
	s := NewSock(b)
	var results []bool
	tries := 0
	s.SpinNextRead(time.Millisecond, func() bool { tries++; return true }, func(c bool) {
		results = append(results, c)
		if _, err := a.Write([]byte{1}); err != nil {
			t.Error(err)
		}
	})
	got := make([]byte, 1)
	if _, err := io.ReadFull(s, got); err != nil || got[0] != 1 {
		t.Fatalf("read %v %v", got, err)
	}
	if tries != 1 || len(results) != 1 || results[0] {
		t.Fatalf("admission %d, done %v: want one poll that missed", tries, results)
	}
	go a.Write([]byte{2})
	if _, err := io.ReadFull(s, got); err != nil || got[0] != 2 {
		t.Fatalf("second read %v %v", got, err)
	}
	if tries != 1 {
		t.Fatalf("%d admissions: the arming was not used up by the first read", tries)
	}
}

// A refused admission (too many connections polling) means no poll and
// no done; data already there means neither is asked.
func TestSpinNextReadRefusedOrNotNeeded(t *testing.T) {
	a, b := tcpPair(t)
	s := NewSock(b)
	dones := 0
	s.SpinNextRead(time.Minute, func() bool { return false }, func(bool) { dones++ })
	go a.Write([]byte{7})
	got := make([]byte, 1)
	if _, err := io.ReadFull(s, got); err != nil || got[0] != 7 {
		t.Fatalf("read %v %v", got, err)
	}
	if dones != 0 {
		t.Fatal("done ran for a poll that was refused")
	}

	// Two bytes in one write: the first read takes one, the second is
	// already there when the armed read comes.
	if _, err := a.Write([]byte{8, 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, got); err != nil || got[0] != 8 {
		t.Fatalf("read %v %v", got, err)
	}
	tries := 0
	s.SpinNextRead(time.Minute, func() bool { tries++; return true }, func(bool) { dones++ })
	if _, err := io.ReadFull(s, got); err != nil || got[0] != 9 {
		t.Fatalf("read %v %v", got, err)
	}
	if tries != 0 || dones != 0 {
		t.Fatalf("a read that found data polled (admission %d, done %d)", tries, dones)
	}
}

// The arming is good for one Read: after a poll that caught data, the
// next read that finds nothing waits without polling (the target arms
// again for what it wants polled).
func TestSpinArmingIsOneShot(t *testing.T) {
	a, b := tcpPair(t)
	s := NewSock(b)
	tries := 0
	s.SpinNextRead(time.Minute, func() bool {
		tries++
		if _, err := a.Write([]byte{1}); err != nil {
			t.Error(err)
		}
		return true
	}, func(bool) {})
	got := make([]byte, 1)
	if _, err := io.ReadFull(s, got); err != nil || got[0] != 1 {
		t.Fatalf("read %v %v", got, err)
	}
	go a.Write([]byte{2})
	if _, err := io.ReadFull(s, got); err != nil || got[0] != 2 {
		t.Fatalf("read %v %v", got, err)
	}
	if tries != 1 {
		t.Fatalf("%d polls, want 1: the arming outlived its read", tries)
	}
}
