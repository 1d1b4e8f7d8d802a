package lm

import "testing"

// quicker is quicker (target imports lm).
type quicker interface{ Quick() bool }

// Quick (quicker) says a host write completes in the page
// cache only for a LUN on a plain local file in no pair: a pair's writes
// go to two volumes, a wrapped or closed volume is not known to be quick.
func TestQuickWrites(t *testing.T) {
	e := newEnv(t, Options{}, false)
	src := e.handle(e.lun("src", 8<<20)).(quicker)
	tgt := e.handle(e.lun("tgt", 8<<20)).(quicker)
	if !src.Quick() || !tgt.Quick() {
		t.Fatalf("LUNs on local files: Quick %v %v, want true", src.Quick(), tgt.Quick())
	}
	if _, err := e.m.CreatePair(PairRequest{Source: "src", Target: "tgt", Speed: SpeedLow}); err != nil {
		t.Fatal(err)
	}
	if src.Quick() || tgt.Quick() {
		t.Fatalf("LUNs of a pair: Quick %v %v, want false (dual write)", src.Quick(), tgt.Quick())
	}

	w := newEnv(t, Options{}, true)
	if w.handle(w.lun("w", 8<<20)).(quicker).Quick() {
		t.Fatal("a wrapped volume is Quick")
	}
	one := e.handle(e.lun("one", 8<<20)).(quicker)
	if err := e.m.DeleteLUN("one"); err != nil {
		t.Fatal(err)
	}
	if one.Quick() {
		t.Fatal("a deleted LUN is Quick")
	}
}
