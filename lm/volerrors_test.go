package lm

import (
	"syscall"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

// TestRecoveredInterruptedPairKeepsRetrying: a pair that was interrupted
// when the daemon stopped, and whose target is still unavailable after the
// restart, retries for RetryBudget like any interrupted pair. It used to
// go faulty (final) at its first failed probe: the budget was counted
// from the zero time, as the retry start is only set by a transition to
// interrupted (found by TestPowerLoss: pairs interrupted by the power cut
// went faulty in the next life).
func TestRecoveredInterruptedPairKeepsRetrying(t *testing.T) {
	e := newEnv(t, Options{RetryMin: 5 * time.Millisecond, RetryMax: 5 * time.Millisecond}, true)
	size := int64(2 * mib)
	l, _ := syncedPair(t, e, "src", "tgt", size)
	e.faultyOf("tgt").FailWrites(syscall.EIO)
	if err := writeBlock(e.handle(l), 3, 99); err != nil {
		t.Fatalf("host write with a failing target: %v", err)
	}
	e.waitState("src", StateInterrupted, 10*time.Second)
	var path string
	if err := e.db.View(func(tx *metavol.Tx) error {
		tl, err := tx.LUNByName("tgt")
		if err != nil {
			return err
		}
		v, err := tx.GetVolume(tl.VolumeID)
		path = v.Path
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.close()
	// The target is still away when the daemon comes back.
	if err := renameFile(path, path+".away"); err != nil {
		t.Fatal(err)
	}
	e.open()
	p, err := e.m.activePair("src")
	if err != nil {
		t.Fatal(err)
	}
	attempts := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.mu.retryAttempt
	}
	waitFor(t, 20*time.Second, "three retries or a final state", func() bool {
		return attempts() >= 3 || p.getState().Final()
	})
	if st := p.getState(); st != StateInterrupted {
		p.mu.Lock()
		reason := p.mu.rec.Reason
		p.mu.Unlock()
		t.Fatalf("after %d failed probes since the restart the pair is %s (%s), want interrupted (retry budget %v)",
			attempts(), st, reason, e.m.opts.RetryBudget)
	}
	if err := renameFile(path+".away", path); err != nil {
		t.Fatal(err)
	}
	e.waitState("src", StateSynced, 20*time.Second)
}
