package target

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/lmtgt/lmtgt/metavol/volume"
)

// offlineVol is a real volume whose I/O fails the way lm's router fails it
// for an offline LUN (an error wrapping volume.ErrOffline), when armed.
type offlineVol struct {
	*volume.Faulty
	off atomic.Bool
}

func (o *offlineVol) Offline() error {
	if o.off.Load() {
		return fmt.Errorf("lun x: offline: pair p could not be loaded: %w", volume.ErrOffline)
	}
	return nil
}

func (o *offlineVol) setOffline() {
	o.off.Store(true)
	err := fmt.Errorf("lun x: offline: %w", volume.ErrOffline)
	o.FailReads(err)
	o.FailWrites(err)
}

// An offline LUN answers every command that touches its data, and TEST
// UNIT READY, with NOT READY / LOGICAL UNIT NOT READY, MANUAL INTERVENTION
// REQUIRED: never data, never GOOD for a write.
func TestOfflineLUNIsNotReady(t *testing.T) {
	const bs = 512
	v := &offlineVol{Faulty: volume.NewFaulty(newTestVolume(t, "lun0", 1<<20))}
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{testLUN("L0", 0, v, bs)}})
	n := openNexus(t, s, "iqn.test:a", 1)
	tur := make([]byte, 6)
	// A new nexus may owe a unit attention first; TUR reports it once.
	exec(n, 0, tur, nil, 0)
	mustGood(t, exec(n, 0, tur, nil, 0))
	mustGood(t, exec(n, 0, cdb10(0x2a, 0, 1, 0), pattern(bs, 1), 0))

	v.setOffline()
	mustSense(t, exec(n, 0, tur, nil, 0), keyNotReady, ascNotReadyManual)
	mustSense(t, exec(n, 0, cdb10(0x28, 0, 1, 0), nil, bs), keyNotReady, ascNotReadyManual)
	mustSense(t, exec(n, 0, cdb10(0x2a, 0, 1, 0), pattern(bs, 2), 0), keyNotReady, ascNotReadyManual)
	mustSense(t, exec(n, 0, cdb16(0x8a, 0, 1, 0), pattern(bs, 2), 0), keyNotReady, ascNotReadyManual)
}
