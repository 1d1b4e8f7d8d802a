package volume

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestFaulty(t *testing.T) {
	f := NewFaulty(create(t, 1<<20, Options{}))
	boom := errors.New("boom")
	p := pattern(5, 4096)
	if _, err := f.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBack(t, f, 0, 4096), p) || f.Size() != 1<<20 {
		t.Fatal("pass-through")
	}

	f.FailWrites(boom)
	if _, err := f.WriteAt(p, 4096); !errors.Is(err, boom) {
		t.Fatalf("write while failing: %v", err)
	}
	if err := f.Unmap(0, 4096); !errors.Is(err, boom) {
		t.Fatalf("unmap while failing: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, boom) {
		t.Fatalf("sync while failing: %v", err)
	}
	// Reads still work, and the failed calls changed nothing.
	if !bytes.Equal(readBack(t, f, 0, 4096), p) || !bytes.Equal(readBack(t, f, 4096, 4096), make([]byte, 4096)) {
		t.Fatal("failed writes reached the volume")
	}
	f.Heal()
	if _, err := f.WriteAt(p, 4096); err != nil {
		t.Fatalf("write after heal: %v", err)
	}

	f.FailReads(boom)
	if _, err := f.ReadAt(make([]byte, 10), 0); !errors.Is(err, boom) {
		t.Fatalf("read while failing: %v", err)
	}
	if _, err := f.WriteAt(p, 0); err != nil {
		t.Fatalf("write while reads fail: %v", err)
	}
	f.Heal()

	// Writes numbered from 0: writes 0..2 pass, write 3 and later fail.
	f.FailWritesAfter(3, boom)
	before := f.Writes()
	for i := range 6 {
		_, err := f.WriteAt(p, int64(i)*4096)
		if (i < 3) != (err == nil) {
			t.Fatalf("write %d after FailWritesAfter(3): %v", i, err)
		}
	}
	if f.Writes()-before != 3 {
		t.Fatalf("%d writes reached the volume, want 3", f.Writes()-before)
	}
	f.Heal()
	f.FailWritesAfter(0, boom)
	if _, err := f.WriteAt(p, 0); !errors.Is(err, boom) {
		t.Fatalf("FailWritesAfter(0): %v", err)
	}
	f.Heal()
	if _, err := f.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(p, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

func TestFaultyDelay(t *testing.T) {
	f := NewFaulty(create(t, 1<<20, Options{}))
	const d = 20 * time.Millisecond
	f.Delay(d)
	start := time.Now()
	if _, err := f.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < d {
		t.Fatalf("write took %v with a %v delay", el, d)
	}
	f.Delay(0)
}
