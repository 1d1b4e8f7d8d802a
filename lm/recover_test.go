package lm

import (
	"bytes"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// onOpenStack reports whether the calling goroutine runs inside lm.Open
// (recovery), as opposed to a goroutine Open started (a pair's run
// goroutine, the DCL committer): the stack of a started goroutine names
// Open only in its "created by" line, which has no "(".
func onOpenStack() bool {
	buf := make([]byte, 64<<10)
	return bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("/lm.Open("))
}

// TestRecoverSyncedWithDCL: a pair killed while synced, with a write in
// flight whose mark was durable and whose source leg landed but not its
// target leg, holds that region in its DCL after the restart. From the
// moment Open returns the pair must not say synced until the region is
// re-copied: it said synced until its run goroutine noticed the DCL, so
// TestCrashLoop compared the legs in that window and found them different
// (1 run in 10 on a loaded machine). Here every commit of a goroutine
// other than Open's own waits until the status has been read, so the run
// goroutine cannot close the window before it is looked at.
func TestRecoverSyncedWithDCL(t *testing.T) {
	var armed atomic.Bool
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	e := newEnvMeta(t, Options{}, false, "", metavol.Options{BeforeCommit: func() error {
		if armed.Load() && !onOpenStack() {
			<-release
		}
		return nil
	}})
	t.Cleanup(free) // before the env's Close, which waits for the run goroutine

	size := int64(4 * mib)
	syncedPair(t, e, "src", "tgt", size)
	p, err := e.m.activePair("src")
	if err != nil {
		t.Fatal(err)
	}
	// The write in flight at the kill: its mark is durable ...
	const bl = 300 // in region 1
	r := bl * blk / p.region
	if err := p.log.BeginWrite(r, r); err != nil {
		t.Fatal(err)
	}
	srcPath := volumePath(t, e.db, "src")
	e.close()
	// ... and it reached the source only.
	f := openRaw(t, srcPath)
	if err := writeBlock(f, bl, 77); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	armed.Store(true)
	e.open()
	st, err := e.m.Pair("src")
	if err != nil {
		t.Fatal(err)
	}
	// copying: its run goroutine may have re-copied the region already
	// (no commit), but cannot have recorded synced.
	if st.State != StateCopying.String() {
		t.Fatalf("just after the restart: pair %s (reason %q) with %d DCL bytes, want copying: region %d differs on the target",
			st.State, st.Reason, st.DCLBytes, r)
	}
	free()
	e.waitState("src", StateSynced, 20*time.Second)
	sameLUNs(t, e.db, "target == source after the re-copy", "src", "tgt", size)
}
