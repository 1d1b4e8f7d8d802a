package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteThenCheck runs the writer with a real qemu-io on a raw file,
// checks the result, then plays the two failures the checker must catch:
// a sector back at the pattern it had before its last durable write (an
// acknowledged write lost) and a sector with bytes no write put there.
func TestWriteThenCheck(t *testing.T) {
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("qemu-io not installed (qemu-utils)")
	}
	dir := t.TempDir()
	state, img, jpath := filepath.Join(dir, "state"), filepath.Join(dir, "img"), filepath.Join(dir, "journal")
	const sectors = 2048 // 1 MiB
	if err := initCmd([]string{"-sectors", "2048", "-state", state, "-image", img}); err != nil {
		t.Fatal(err)
	}
	// -hot 16: many writes per sector, so durable writes get overwritten.
	if err := writeCmd([]string{"-url", img, "-state", state, "-journal", jpath, "-seed", "7",
		"-hot", "16", "-flush-every", "4", "-max", "300"}); err != nil {
		t.Fatal(err)
	}
	st, _ := os.ReadFile(state)
	image, _ := os.ReadFile(img)
	jf, err := os.Open(jpath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := parseJournal(jf)
	jf.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.writes) != 300 || l.flushes == 0 {
		t.Fatalf("journal: %d writes, %d flushes; want 300 writes and some flushes", len(l.writes), l.flushes)
	}
	rep, next := check(st, image, l)
	if rep.lost != 0 || rep.garbage != 0 || rep.durable != 300 {
		t.Fatalf("clean run: lost %d garbage %d durable %d/300: %v", rep.lost, rep.garbage, rep.durable, rep.problems)
	}
	if !bytes.Equal(next, func() []byte {
		b := make([]byte, sectors)
		for s := range b {
			b[s] = image[s*sectorSize]
		}
		return b
	}()) {
		t.Fatal("next state is not the image's sector bytes")
	}

	// A sector with at least two writes: put back the older pattern.
	var victim int = -1
	var older byte
	for s := 0; s < sectors && victim < 0; s++ {
		var h []*write
		for _, w := range l.writes {
			if s >= w.sector && s < w.sector+w.count {
				h = append(h, w)
			}
		}
		if len(h) >= 2 {
			victim, older = s, h[len(h)-2].pat
		}
	}
	if victim < 0 {
		t.Fatal("no sector written twice; raise -max or lower -hot")
	}
	lost := bytes.Clone(image)
	copy(lost[victim*sectorSize:(victim+1)*sectorSize], bytes.Repeat([]byte{older}, sectorSize))
	if rep, _ := check(st, lost, l); rep.lost != 1 || rep.garbage != 0 || !strings.Contains(rep.problems[0], "LOST") {
		t.Fatalf("older pattern in sector %d: lost %d garbage %d %v; want 1 lost", victim, rep.lost, rep.garbage, rep.problems)
	}
	// A never written sector reading zeros (a region a migration skipped).
	garbage := bytes.Clone(image)
	last := sectors - 1
	copy(garbage[last*sectorSize:], make([]byte, sectorSize))
	if rep, _ := check(st, garbage, l); rep.garbage != 1 || rep.lost != 0 {
		t.Fatalf("zeros in sector %d: lost %d garbage %d %v; want 1 garbage", last, rep.lost, rep.garbage, rep.problems)
	}
	// Without a journal the image must equal the state exactly.
	if rep, _ := check(next, image, &journalLog{}); rep.lost+rep.garbage != 0 {
		t.Fatalf("exact check of the image against its own state: %v", rep.problems)
	}
	if rep, _ := check(st, image, &journalLog{}); rep.garbage == 0 {
		t.Fatal("exact check of the written image against the initial state found nothing")
	}
}

// TestUnflushedMayBeMissing: writes acknowledged but never flushed may be
// absent after a cut (the sector still holds its previous content) and
// that is not a loss; a FUA write may not be absent.
func TestUnflushedMayBeMissing(t *testing.T) {
	st := []byte{1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2}
	img := bytes.Repeat([]byte{1}, 8*sectorSize)
	img = append(img, bytes.Repeat([]byte{2}, 8*sectorSize)...)
	j := "I 1 0 8 9 false\nA 1\nI 2 8 8 9 true\nA 2\nI 3 0 8 10 false\n"
	l, err := parseJournal(strings.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	rep, _ := check(st, img, l)
	if rep.lost != 8 || rep.garbage != 0 {
		t.Fatalf("FUA write 2 missing: lost %d garbage %d, want 8 lost (sectors 8-15): %v", rep.lost, rep.garbage, rep.problems)
	}
	// Without FUA, and write 1 flushed only after write 3 was issued: fine.
	l, err = parseJournal(strings.NewReader(strings.Replace(j, "9 true", "9 false", 1) + "F 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if rep, _ := check(st, img, l); rep.lost != 0 || rep.garbage != 0 || rep.torn != 0 {
		t.Fatalf("no durable write: lost %d garbage %d torn %d: %v", rep.lost, rep.garbage, rep.torn, rep.problems)
	}
	// Half of write 1 landed: allowed (not durable), counted as torn.
	half := bytes.Clone(img)
	copy(half, bytes.Repeat([]byte{9}, 4*sectorSize))
	if rep, _ := check(st, half, l); rep.lost != 0 || rep.garbage != 0 || rep.torn != 1 {
		t.Fatalf("half of write 1: lost %d garbage %d torn %d, want 0 0 1: %v", rep.lost, rep.garbage, rep.torn, rep.problems)
	}
	// Once the flush returned, both are durable and missing.
	l, _ = parseJournal(strings.NewReader(strings.Replace(j, "9 true", "9 false", 1) + "F 2\nD 2\n"))
	if rep, _ := check(st, img, l); rep.lost != 16 {
		t.Fatalf("flushed writes missing: lost %d, want 16: %v", rep.lost, rep.problems)
	}
}
