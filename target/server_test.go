package target

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/lmtgt/lmtgt/target/iscsi"
)

func tur() []byte { return []byte{0, 0, 0, 0, 0, 0} }

func TestApplyNewLUNRaisesReportedLUNsChanged(t *testing.T) {
	v0 := newTestVolume(t, "a", 1<<20)
	v1 := newTestVolume(t, "b", 2<<20)
	l0, l1 := testLUN("A", 0, v0, 512), testLUN("B", 1, v1, 512)
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{l0}})
	n := openNexus(t, s, "iqn.test:a", 1)
	mustGood(t, exec(n, 0, tur(), nil, 0))

	if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: []LUN{l0, l1}}}); err != nil {
		t.Fatal(err)
	}
	// INQUIRY does not report the unit attention, TEST UNIT READY does.
	mustGood(t, exec(n, 0, inquiryCDB(false, 0, 96), nil, 96))
	mustSense(t, exec(n, 0, tur(), nil, 0), keyUnitAttention, ascReportedLUNsDataChanged)
	mustGood(t, exec(n, 0, tur(), nil, 0))
	// REPORT LUNS clears it for the other LUN too.
	c := exec(n, 0, reportLUNsCDB(64), nil, 64)
	mustGood(t, c)
	if binary.BigEndian.Uint32(data(c)) != 16 {
		t.Fatalf("REPORT LUNS after Apply: %x", data(c))
	}
	mustGood(t, exec(n, 1, tur(), nil, 0))

	// Unmapping LUN 1: LOGICAL UNIT NOT SUPPORTED.
	if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: []LUN{l0}}}); err != nil {
		t.Fatal(err)
	}
	mustSense(t, exec(n, 1, cdb10(0x28, 0, 1, 0), nil, 512), keyIllegalRequest, ascLUNNotSupported)

	// Bad configurations are refused with a clear error.
	bad := []Target{{IQN: testIQN, LUNs: []LUN{l0, testLUN("C", 0, v1, 512)}}}
	if err := s.Apply(bad); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("duplicate LUN number: %v", err)
	}
	bs := testLUN("D", 2, v1, 1000)
	if err := s.Apply([]Target{{IQN: testIQN, LUNs: []LUN{bs}}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("block size 1000: %v", err)
	}
}

func TestCapacityChanged(t *testing.T) {
	s, v := oneLUN(t, 1<<20, 512)
	n := openNexus(t, s, "iqn.test:a", 1)
	m := openNexus(t, s, "iqn.test:b", 2)
	if err := v.Resize(2 << 20); err != nil {
		t.Fatal(err)
	}
	s.CapacityChanged("L0")
	for _, x := range []iscsi.Nexus{n, m} {
		mustSense(t, exec(x, 0, cdb10(0x28, 0, 1, 0), nil, 512), keyUnitAttention, ascCapacityDataChanged)
		c := exec(x, 0, rc16CDB(32), nil, 32)
		mustGood(t, c)
		if got := binary.BigEndian.Uint64(data(c)); got != 4095 {
			t.Fatalf("last LBA after resize %d, want 4095", got)
		}
	}
	mustGood(t, exec(n, 0, cdb10(0x2a, 4095, 1, 0), make([]byte, 512), 0))
	s.CapacityChanged("no-such-lun") // ignored
}

func TestACLAndLogin(t *testing.T) {
	v := newTestVolume(t, "a", 1<<20)
	s := newTestServer(t, nil,
		Target{IQN: testIQN, Initiators: []string{"iqn.test:ok"}, LUNs: []LUN{testLUN("A", 0, v, 512)},
			CHAP: &iscsi.CHAP{User: "u", Secret: "s3cr3t-secret"}},
		Target{IQN: testIQN + "2", AllowAll: true})
	if _, err := s.Login(testIQN, "iqn.test:nope"); !errors.Is(err, iscsi.ErrNotAuthorized) {
		t.Fatalf("login refused initiator: %v", err)
	}
	if _, err := s.Login("iqn.none", "iqn.test:ok"); !errors.Is(err, iscsi.ErrTargetNotFound) {
		t.Fatalf("login unknown target: %v", err)
	}
	a, err := s.Login(testIQN, "iqn.test:ok")
	if err != nil || a.CHAP == nil || a.CHAP.User != "u" {
		t.Fatalf("login: %+v %v", a, err)
	}
	if got := s.Targets("iqn.test:nope"); len(got) != 1 || got[0].Name != testIQN+"2" {
		t.Fatalf("discovery for a stranger: %+v", got)
	}
	if got := s.Targets("iqn.test:ok"); len(got) != 2 {
		t.Fatalf("discovery: %+v", got)
	}
	// Revoking access live: the open session sees no LUNs any more.
	n := openNexus(t, s, "iqn.test:ok", 1)
	mustGood(t, exec(n, 0, cdb10(0x28, 0, 1, 0), nil, 512))
	if err := s.Apply([]Target{{IQN: testIQN, Initiators: []string{"iqn.test:other"}, LUNs: []LUN{testLUN("A", 0, v, 512)}}}); err != nil {
		t.Fatal(err)
	}
	mustSense(t, exec(n, 0, cdb10(0x28, 0, 1, 0), nil, 512), keyIllegalRequest, ascLUNNotSupported)
}

// acceptable: GOOD, a unit attention (capacity / LUN inventory changed) or,
// for the LUN being mapped and unmapped, LOGICAL UNIT NOT SUPPORTED.
func acceptable(c *iscsi.Command, lun uint64) bool {
	if c.Status == statusGood || c.Status == statusReservationConflict { // churn nexus holds RESERVE(6)
		return true
	}
	key, code, _ := senseKeyASC(c.Sense)
	return c.Status == statusCheckCondition &&
		(key == keyUnitAttention || lun == 1 && code == ascLUNNotSupported)
}

// TestConcurrentApplyIOAndNexuses runs I/O while the configuration changes
// and nexuses come and go (run with -race).
func TestConcurrentApplyIOAndNexuses(t *testing.T) {
	v0 := newTestVolume(t, "a", 4<<20)
	v1 := newTestVolume(t, "b", 4<<20)
	l0, l1 := testLUN("A", 0, v0, 512), testLUN("B", 1, v1, 512)
	s := newTestServer(t, nil, Target{IQN: testIQN, AllowAll: true, LUNs: []LUN{l0, l1}})

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	stop := make(chan struct{})
	for w := 0; w < 3; w++ {
		n := openNexus(t, s, "iqn.test:io", byte(w+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := pattern(4096, byte(w))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				lba := uint32(w*64 + i%64)
				for _, lun := range []uint64{0, 1} {
					c := exec(n, lun, cdb10(0x2a, lba, 8, 0), buf, 0)
					if !acceptable(c, lun) {
						errs <- fmt.Errorf("write lun %d: status %#x sense %x", lun, c.Status, c.Sense)
						return
					}
					c = exec(n, lun, cdb10(0x28, lba, 8, 0), nil, 4096)
					if !acceptable(c, lun) {
						errs <- fmt.Errorf("read lun %d: status %#x", lun, c.Status)
						return
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // nexuses come and go
		defer wg.Done()
		for i := 0; i < 50; i++ {
			n, err := s.OpenNexus(iscsi.NexusInfo{Target: testIQN, Initiator: "iqn.test:churn", ISID: [6]byte{1, 2, 3, 4, 5, byte(i)}})
			if err != nil {
				errs <- err
				return
			}
			exec(n, 0, reportLUNsCDB(64), nil, 64)
			exec(n, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
			n.Close()
		}
	}()
	for i := 0; i < 40; i++ { // LUN 1 mapped and unmapped, capacity events
		luns := []LUN{l0}
		if i%2 == 0 {
			luns = append(luns, l1)
		}
		if err := s.Apply([]Target{{IQN: testIQN, AllowAll: true, LUNs: luns}}); err != nil {
			t.Fatal(err)
		}
		s.CapacityChanged("A")
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
