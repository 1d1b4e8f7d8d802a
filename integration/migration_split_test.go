package integration

import (
	"encoding/json"
	"fmt"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMigrationLiveSplit: under concurrent host writes from two qemu-io
// processes, a pair syncs and splits. Afterwards the source LUN (now on the
// new volume) holds every acknowledged write, the target LUN holds the
// source as it was at the split, the SCSI identity did not move, and the
// host sessions never dropped or saw an error.
func TestMigrationLiveSplit(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img", "iscsi-inq")
	const size = 64 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "")
	iqn := d.Export("la", "64MiB", 512)
	d.OK("lun", "create", "lb", "--size", "64MiB")
	url := d.URL(iqn, 0)

	vpd80, vpd83 := vpd(t, url, 128), vpd(t, url, 131)
	la0, lb0 := d.lun("la"), d.lun("lb")

	// Data for the copy: 48 MiB of pattern 0x11, then two host streams over
	// disjoint block sets (even and odd blocks), each its own session.
	base := []image{make(image, nblocks)}
	q0 := startQIO(t, "prefill", url)
	prefill(t, q0, base[0], 0, nblocks*3/4, 0x11)
	q0.close()

	even, odd := evenOddBlocks(nblocks)
	q1, q2 := startQIO(t, "host1", url), startQIO(t, "host2", url)
	s1 := runStream("host1", 1, []*qio{q1}, even, 0)
	s2 := runStream("host2", 2, []*qio{q2}, odd, 100)
	defer s1.stop()
	defer s2.stop()
	s1.waitAcked(t, 20, "before the pair is created")
	s2.waitAcked(t, 20, "before the pair is created")

	d.OK("migration", "create", "--source", "la", "--target", "lb", "--speed", "highest")
	st := d.waitMig("la", syncTimeout, "synced")
	t.Logf("synced: %s", migString(st))
	if st.DoneBytes != st.TotalBytes || st.TotalBytes != size {
		t.Errorf("synced with copied %d of %d bytes, want %d of %d", st.DoneBytes, st.TotalBytes, size, size)
	}
	if st.Vehicle == "" {
		t.Errorf("migration show does not say which vehicle copied: %s", migString(st))
	}
	// Dual-write under host writes for a while.
	s1.waitAcked(t, 50, "in dual-write")
	s2.waitAcked(t, 50, "in dual-write")

	from := time.Now()
	var sr wire.SplitResult
	d.JSON(&sr, "migration", "split", "la")
	to := time.Now()
	t.Logf("split: pairs %v, pause %.3f ms", sr.Pairs, sr.PauseMS)
	if !slices.Equal(sr.Pairs, []string{"la"}) {
		t.Errorf("split result names pairs %v, want [la]", sr.Pairs)
	}
	// Measured, not timed: --max-pause bounds only the drain, and a
	// pause's length is a benchmark figure (scripts/bench migration).
	if sr.PauseMS <= 0 {
		t.Errorf("split pause %.3f ms: want it measured", sr.PauseMS)
	}
	s1.waitAcked(t, 30, "after the split")
	s2.waitAcked(t, 30, "after the split")
	w1, w2 := s1.stop(), s2.stop()
	if err := s1.firstErr(); err != nil {
		t.Fatal(err)
	}
	if err := s2.firstErr(); err != nil {
		t.Fatal(err)
	}
	q1.close()
	q2.close()
	t.Logf("host writes: %d + %d, all acknowledged", len(w1), len(w2))

	// The pair is gone (or shown as split), the volumes swapped.
	if s, _, ok := d.migTry("la"); ok && s.State != "split" {
		t.Errorf("after the split the pair is %s, want gone or split", migString(s))
	}
	la1, lb1 := d.lun("la"), d.lun("lb")
	if la1.Volume == la0.Volume || la1.Volume != lb0.Volume || lb1.Volume != la0.Volume {
		t.Errorf("volumes not swapped: la %s -> %s, lb %s -> %s", la0.Volume, la1.Volume, lb0.Volume, lb1.Volume)
	}
	if la1.ID != la0.ID || la1.NAA != la0.NAA || la1.Serial != la0.Serial {
		t.Errorf("la's identity moved: %+v -> %+v", la0, la1)
	}
	if la1.Migration != nil || lb1.Migration != nil {
		t.Errorf("LUNs still show a migration after the split: la %+v lb %+v", la1.Migration, lb1.Migration)
	}
	if v := vpd(t, url, 128); v != vpd80 {
		t.Errorf("VPD 0x80 changed by the split:\nbefore:\n%s\nafter:\n%s", vpd80, v)
	}
	if v := vpd(t, url, 131); v != vpd83 {
		t.Errorf("VPD 0x83 changed by the split:\nbefore:\n%s\nafter:\n%s", vpd83, v)
	}

	// The source holds every acknowledged write.
	want := cloneImages(base)
	apply(want, w1)
	apply(want, w2)
	compareRef(t, "source LUN la after the split", url, want[0], size)

	// The target holds the source at the split: one cut per host stream.
	iqnB := testIQN("lb")
	d.OK("target", "create", iqnB)
	d.OK("target", "map", iqnB, "lb")
	d.OK("target", "allow", iqnB, "ALL")
	got := []image{readImage(t, d.URL(iqnB, 0))}
	k1, err := cutOf(base, got, even, w1, from, to)
	if err != nil {
		t.Fatalf("target LUN lb is not the source at the split (host1): %v", err)
	}
	k2, err := cutOf(base, got, odd, w2, from, to)
	if err != nil {
		t.Fatalf("target LUN lb is not the source at the split (host2): %v", err)
	}
	t.Logf("lb holds host1's first %d of %d writes and host2's first %d of %d", k1, len(w1), k2, len(w2))
	d.noDrops(t)
}

// TestMigrationConsistentSplit8: eight pairs split in one command under
// host writes. One serial host writes round-robin over the eight source
// LUNs (each write waits for the previous one), so the eight target LUNs
// hold a common prefix of its writes only if all eight switched in one
// pause.
func TestMigrationConsistentSplit8(t *testing.T) {
	needTools(t, "qemu-io", "qemu-img")
	const n = 8
	const size = 32 << 20
	const nblocks = size / mBlock
	d := StartDaemon(t, "")
	iqn := testIQN("cs")
	d.OK("target", "create", iqn)
	d.OK("target", "allow", iqn, "ALL")
	var srcs []string
	base := make([]image, n)
	qs := make([]*qio, n)
	var blocks [][2]int
	vols := map[string]string{}
	for i := range n {
		a, b := fmt.Sprintf("ca%d", i+1), fmt.Sprintf("cb%d", i+1)
		srcs = append(srcs, a)
		d.OK("lun", "create", a, "--size", "32MiB")
		d.OK("lun", "create", b, "--size", "32MiB")
		d.OK("target", "map", iqn, a, "--lun", fmt.Sprint(i))
		vols[a], vols[b] = d.lun(a).Volume, d.lun(b).Volume
		base[i] = make(image, nblocks)
		qs[i] = startQIO(t, a, d.URL(iqn, i))
		prefill(t, qs[i], base[i], 0, 64, byte(0x20+i)) // 4 MiB of data each
		for blk := 0; blk < nblocks; blk++ {
			blocks = append(blocks, [2]int{i, blk})
		}
	}
	s := runStream("round-robin", 8, qs, blocks, 0)
	defer s.stop()
	for _, a := range srcs {
		d.OK("migration", "create", "--source", a, "--target", "cb"+strings.TrimPrefix(a, "ca"), "--speed", "highest")
	}
	for _, a := range srcs {
		d.waitMig(a, syncTimeout, "synced")
	}
	s.waitAcked(t, 40, "in dual-write")

	from := time.Now()
	var sr wire.SplitResult
	d.JSON(&sr, append([]string{"migration", "split"}, srcs...)...)
	to := time.Now()
	t.Logf("consistent split of %d pairs: pause %.3f ms", len(sr.Pairs), sr.PauseMS)
	if got := slices.Sorted(slices.Values(sr.Pairs)); !slices.Equal(got, srcs) {
		t.Errorf("split result lists %v, want all of %v", sr.Pairs, srcs)
	}
	if sr.PauseMS <= 0 {
		t.Errorf("split pause %.3f ms: not measured", sr.PauseMS)
	}
	// Any pair still shown must be split with the one common pause.
	for _, a := range srcs {
		if st, _, ok := d.migTry(a); ok {
			if st.State != "split" || st.SplitPauseMS != sr.PauseMS {
				t.Errorf("pair %s after the consistent split: %s, want split with pause %.3f ms", a, migString(st), sr.PauseMS)
			}
		}
	}
	s.waitAcked(t, 40, "after the split")
	ws := s.stop()
	if err := s.firstErr(); err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		q.close()
	}
	for _, a := range srcs {
		b := "cb" + strings.TrimPrefix(a, "ca")
		la, lb := d.lun(a), d.lun(b)
		if la.Volume != vols[b] || lb.Volume != vols[a] {
			t.Errorf("%s/%s volumes not swapped: %s now %s, %s now %s", a, b, a, la.Volume, b, lb.Volume)
		}
	}

	// Sources: every write. Targets: one common prefix of the serial stream.
	want := cloneImages(base)
	apply(want, ws)
	for i := range n {
		compareRef(t, srcs[i]+" after the split", d.URL(iqn, i), want[i], size)
	}
	iqnB := testIQN("cs-b")
	d.OK("target", "create", iqnB)
	d.OK("target", "allow", iqnB, "ALL")
	got := make([]image, n)
	for i := range n {
		d.OK("target", "map", iqnB, fmt.Sprintf("cb%d", i+1), "--lun", fmt.Sprint(i))
		got[i] = readImage(t, d.URL(iqnB, i))
	}
	k, err := cutOf(base, got, blocks, ws, from, to)
	if err != nil {
		b, _ := json.Marshal(sr)
		t.Fatalf("the 8 target LUNs do not hold one common point of the host's writes: not one consistent split (%s): %v", b, err)
	}
	t.Logf("all 8 target LUNs hold exactly the host's first %d of %d writes", k, len(ws))
	d.noDrops(t)
}
