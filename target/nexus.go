package target

import (
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume"
	"github.com/lmtgt/lmtgt/target/iscsi"
)

// nexus is the SCSI side of one iSCSI session (an I_T nexus).
type nexus struct {
	srv  *Server
	info iscsi.NexusInfo
	// port is the iSCSI initiator port name "IQN,i,0xISID".
	port string
	// key identifies the I_T nexus for reservations: initiator port plus
	// target name.
	key string

	// pendingUA counts queued unit attentions: the fast path skips mu.
	pendingUA atomic.Int32
	mu        sync.Mutex
	ua        map[string][]asc // by LUN ID, oldest first
	closed    bool
	// copies holds EXTENDED COPY results by list ID, copyOrder their
	// IDs oldest first (xcopy.go).
	copies    map[byte]copyResult
	copyOrder []byte
}

func newNexus(s *Server, info iscsi.NexusInfo) *nexus {
	port := fmt.Sprintf("%s,i,0x%012x", info.Initiator, isidUint(info.ISID))
	n := &nexus{
		srv:  s,
		info: info,
		port: port,
		key:  port + "|" + info.Target,
		ua:   map[string][]asc{},
	}
	return n
}

func isidUint(b [6]byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// addUA queues a unit attention for LUN lunID (deduplicated).
func (n *nexus) addUA(lunID string, code asc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	for _, c := range n.ua[lunID] {
		if c == code {
			return
		}
	}
	n.ua[lunID] = append(n.ua[lunID], code)
	n.pendingUA.Add(1)
}

// takeUA pops the oldest unit attention for lunID.
func (n *nexus) takeUA(lunID string) (asc, bool) {
	if n.pendingUA.Load() == 0 {
		return 0, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.ua[lunID]
	if len(q) == 0 {
		return 0, false
	}
	code := q[0]
	if len(q) == 1 {
		delete(n.ua, lunID)
	} else {
		n.ua[lunID] = q[1:]
	}
	n.pendingUA.Add(-1)
	return code, true
}

// clearUA drops every queued code for every LUN (REPORT LUNS clears
// REPORTED LUNS DATA HAS CHANGED for the whole nexus).
func (n *nexus) clearUA(code asc) {
	if n.pendingUA.Load() == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, q := range n.ua {
		out := q[:0]
		for _, c := range q {
			if c == code {
				n.pendingUA.Add(-1)
				continue
			}
			out = append(out, c)
		}
		if len(out) == 0 {
			delete(n.ua, id)
		} else {
			n.ua[id] = out
		}
	}
}

// Execute runs one SCSI command: it resolves the LUN in the Server's
// snapshot, reports a pending unit attention or a reservation conflict,
// and otherwise hands a Cmd to the LUN's dispatch table (dispatch.go).
var _ iscsi.QuickNexus = (*nexus)(nil)

// Quick reports whether a WRITE of lun, as this nexus sees it, completes
// in memory (iscsi.QuickNexus): its volume says so (QuickVolume). A LUN
// this initiator cannot see is not quick (its command fails on a worker).
func (n *nexus) Quick(lun uint64) bool {
	sn := n.srv.snap.Load()
	tv := sn.targets[n.info.Target]
	if tv == nil || !tv.cfg.AllowAll && !tv.allow[n.info.Initiator] {
		return false
	}
	dev := tv.lun(lun, n.info.Initiator)
	if dev == nil {
		return false
	}
	st := dev.cur()
	return st.quick != nil && st.quick.Quick()
}

func (n *nexus) Execute(ic *iscsi.Command) {
	ic.Status, ic.Sense, ic.DataInLen = statusGood, nil, 0
	defer func() {
		if r := recover(); r != nil {
			n.srv.log.Error().Str("nexus", n.key).Uint64("lun", ic.LUN).
				Str("cdb", fmt.Sprintf("%x", ic.CDB)).Interface("panic", r).
				Bytes("stack", debug.Stack()).Msg("panic in SCSI command")
			ic.Status = statusCheckCondition
			ic.Sense = buildSense(keyHardwareError, ascInternalTargetFailure, 0, false)
			ic.DataInLen = 0
		}
	}()
	if len(ic.CDB) == 0 {
		n.fail(ic, keyIllegalRequest, ascInvalidOpcode)
		return
	}
	op := ic.CDB[0]
	sn := n.srv.snap.Load()
	tv := sn.targets[n.info.Target]
	if tv != nil && !tv.cfg.AllowAll && !tv.allow[n.info.Initiator] {
		tv = nil // the ACL changed under the session: it sees no LUNs
	}
	var dev *lunDev
	if tv != nil {
		dev = tv.lun(ic.LUN, n.info.Initiator) // nil when masked from this initiator
	}
	if dev == nil {
		n.noLUN(ic, tv)
		return
	}

	// Unit attention (SAM-5 5.14): INQUIRY and REPORT LUNS run anyway,
	// REQUEST SENSE returns it as data, everything else reports it.
	if op != 0x12 && op != 0xa0 {
		if code, ok := n.takeUA(dev.id); ok {
			if op == 0x03 {
				n.senseAsData(ic, buildSense(keyUnitAttention, code, 0, false))
				return
			}
			ic.Status = statusCheckCondition
			ic.Sense = buildSense(keyUnitAttention, code, 0, false)
			return
		}
	}
	if n.aluaGate(ic, sn, tv, dev) { // alua.go: NOT READY on a non-active port, REPORT TARGET PORT GROUPS
		return
	}
	if dev.res.conflict(n.key, ic.CDB) {
		ic.Status = statusReservationConflict
		return
	}

	// The Cmd comes from a pool: handlers are free to let it escape, and
	// READ/WRITE still allocate nothing (alloc_test.go).
	c := n.srv.cmds.Get().(*Cmd)
	*c = Cmd{CDB: ic.CDB, LUN: ic.LUN, Out: ic.DataOut, In: ic.DataIn[:cap(ic.DataIn)], nexus: n, tv: tv,
		readOnly: tv.readOnly[ic.LUN], fileOK: ic.FileOK}
	if len(c.CDB) < len(c.cdb) {
		copy(c.cdb[:], c.CDB)
		c.CDB = c.cdb[:]
	}
	// Data commands are timed (two clock reads, no allocation): for the
	// LUN's latency histograms (stats.go) from here, and for the
	// host-latency guard (latency.go) from the arrival of the command's
	// PDU (its wait in the transport included).
	class := ioOpOf(c.CDB)
	var t0 time.Time
	if class != OpNone {
		t0 = time.Now()
	}
	st := dev.cur()
	status := st.serve(c)
	if st.lat != nil && timedOp(op) {
		from := ic.Arrived
		if from.IsZero() {
			from = t0
		}
		st.lat.ObserveHostLatency(time.Since(from))
	}
	n.finish(ic, c, status)
	if class != OpNone {
		dev.stats.observe(class, time.Since(t0), status, ic.Sense)
	}
	*c = Cmd{}
	n.srv.cmds.Put(c)

	if op == 0xa0 && ic.Status == statusGood {
		n.clearUA(ascReportedLUNsDataChanged)
	}
}

// finish copies a Cmd's results into the transport's command.
func (n *nexus) finish(ic *iscsi.Command, c *Cmd, status samStatus) {
	ic.Status = byte(status)
	ic.TransferLength, ic.HasTransferLength = c.TransferLength, c.HasTransferLength
	if c.file.Owner != nil {
		// Data-In in a file (sbc.go read): the transport sends and
		// releases it; on any other status it is released here.
		if status == statusGood {
			ic.DataInFile = iscsi.FileData{Fd: c.file.Fd, Off: c.file.Off, Len: c.file.Len, Owner: c.file.Owner}
		} else {
			c.file.Release()
		}
		c.file = volume.FileRef{}
	}
	switch status {
	case statusGood, 0x04: // GOOD, CONDITION MET
		ic.DataInLen = min(c.InLen, cap(ic.DataIn))
	case statusCheckCondition:
		ic.Sense = c.Sense
		if len(ic.Sense) == 0 {
			ic.Sense = buildSense(keyHardwareError, ascInternalTargetFailure, 0, false)
		}
	}
}

func (n *nexus) fail(c *iscsi.Command, key byte, code asc) {
	c.Status = statusCheckCondition
	c.Sense = buildSense(key, code, 0, false)
	c.DataInLen = 0
}

// senseAsData answers REQUEST SENSE with sense as parameter data.
func (n *nexus) senseAsData(c *iscsi.Command, sense []byte) {
	alloc := 0
	if len(c.CDB) > 4 {
		alloc = int(c.CDB[4])
	}
	if alloc > len(sense) {
		alloc = len(sense)
	}
	c.DataInLen = copy(c.DataIn[:cap(c.DataIn)], sense[:alloc])
}

// noLUN answers a command for a LUN number that is not mapped: INQUIRY
// reports "no device here" (peripheral qualifier 011b), REPORT LUNS and
// REQUEST SENSE work, the rest gets LOGICAL UNIT NOT SUPPORTED.
func (n *nexus) noLUN(c *iscsi.Command, tv *targetView) {
	cdb := c.CDB
	switch cdb[0] {
	case 0x12:
		if len(cdb) < 6 {
			n.fail(c, keyIllegalRequest, ascInvalidFieldInCDB)
			return
		}
		if cdb[1]&0x01 != 0 || cdb[2] != 0 {
			n.fail(c, keyIllegalRequest, ascLUNNotSupported)
			return
		}
		data := noLUNInquiry()
		alloc := int(cdb[3])<<8 | int(cdb[4])
		if alloc > len(data) {
			alloc = len(data)
		}
		c.DataInLen = copy(c.DataIn[:cap(c.DataIn)], data[:alloc])
	case 0xa0:
		if len(cdb) < 12 {
			n.fail(c, keyIllegalRequest, ascInvalidFieldInCDB)
			return
		}
		data, key, code := reportLUNsData(cdb, tv.numbersFor(n.info.Initiator))
		if key != 0 {
			n.fail(c, key, code)
			return
		}
		alloc := int(be32(cdb[6:10]))
		if alloc > len(data) {
			alloc = len(data)
		}
		c.DataInLen = copy(c.DataIn[:cap(c.DataIn)], data[:alloc])
		n.clearUA(ascReportedLUNsDataChanged)
	case 0x03:
		n.senseAsData(c, buildSense(keyIllegalRequest, ascLUNNotSupported, 0, false))
	default:
		n.fail(c, keyIllegalRequest, ascLUNNotSupported)
	}
}

// TaskManagement handles the SCSI side of task management functions.
func (n *nexus) TaskManagement(fn iscsi.TMFunction, lun uint64) iscsi.TMFResponse {
	tv := n.srv.snap.Load().targets[n.info.Target]
	switch fn {
	case iscsi.TMFAbortTask, iscsi.TMFAbortTaskSet, iscsi.TMFClearTaskSet, iscsi.TMFClearACA:
		// Commands run synchronously; the transport owns aborts.
		return iscsi.TMFComplete
	case iscsi.TMFLogicalUnitReset:
		d := tv.lun(lun, n.info.Initiator)
		if d == nil {
			return iscsi.TMFLUNNotExist
		}
		n.resetLU(d)
		return iscsi.TMFComplete
	case iscsi.TMFTargetWarmReset, iscsi.TMFTargetColdReset:
		if tv == nil {
			return iscsi.TMFComplete
		}
		for _, num := range tv.numbersFor(n.info.Initiator) {
			n.resetLU(tv.luns[num])
		}
		return iscsi.TMFComplete
	}
	return iscsi.TMFNotSupported
}

// resetLU performs a logical unit reset of d: SPC-2 reservations are
// released and every nexus of d, the one that asked included, gets a
// BUS DEVICE RESET FUNCTION OCCURRED unit attention (SAM-5 6.3.3; libiscsi's
// MultipathIO.Reset checks every path). Persistent reservations survive
// resets.
func (n *nexus) resetLU(d *lunDev) {
	d.res.resetSPC2()
	n.srv.raiseUA(d, ascBusDeviceReset, nil)
}

// Close ends the nexus: SPC-2 reservations it holds are released.
func (n *nexus) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.ua = map[string][]asc{}
	n.pendingUA.Store(0)
	n.mu.Unlock()
	n.srv.closeNexus(n)
}
