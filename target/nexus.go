package target

import (
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/gostor/gotgt/pkg/api"

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
	itn api.ITNexus

	// pendingUA counts queued unit attentions: the fast path skips mu.
	pendingUA atomic.Int32
	mu        sync.Mutex
	ua        map[string][]asc // by LUN ID, oldest first
	closed    bool
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
	n.itn = api.ITNexus{Tag: n.key}
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

// task carries one command through gotgt without heap allocation.
type task struct {
	cmd     api.SCSICommand
	in, out api.SCSIDataBuffer
	luInfo  api.ITNexusLuInfo
	scb     [16]byte
}

var taskPool = sync.Pool{New: func() any { return new(task) }}

// Execute runs one SCSI command.
func (n *nexus) Execute(c *iscsi.Command) {
	c.Status, c.Sense, c.DataInLen = statusGood, nil, 0
	defer func() {
		if r := recover(); r != nil {
			n.srv.log.Error().Str("nexus", n.key).Uint64("lun", c.LUN).
				Str("cdb", fmt.Sprintf("%x", c.CDB)).Interface("panic", r).
				Bytes("stack", debug.Stack()).Msg("panic in SCSI command")
			c.Status = statusCheckCondition
			c.Sense = buildSense(keyHardwareError, ascInternalTargetFailure, 0, false)
			c.DataInLen = 0
		}
	}()
	if len(c.CDB) == 0 {
		n.fail(c, keyIllegalRequest, ascInvalidOpcode)
		return
	}
	op := c.CDB[0]
	sn := n.srv.snap.Load()
	tv := sn.targets[n.info.Target]
	if tv != nil && !tv.cfg.AllowAll && !tv.allow[n.info.Initiator] {
		tv = nil // the ACL changed under the session: it sees no LUNs
	}
	var dev *lunDev
	if tv != nil {
		dev = tv.luns[c.LUN]
	}
	if dev == nil {
		n.noLUN(c, tv)
		return
	}

	// Unit attention (SAM-5 5.14): INQUIRY and REPORT LUNS run anyway,
	// REQUEST SENSE returns it as data, everything else reports it.
	if op != 0x12 && op != 0xa0 {
		if code, ok := n.takeUA(dev.id); ok {
			if op == 0x03 {
				n.senseAsData(c, buildSense(keyUnitAttention, code, 0, false))
				return
			}
			c.Status = statusCheckCondition
			c.Sense = buildSense(keyUnitAttention, code, 0, false)
			return
		}
	}
	// ALUA (alua.go): a port in a non-active state refuses media access;
	// REPORT TARGET PORT GROUPS is answered from the snapshot.
	if st := tv.accessState(dev.id); !st.Active() && !aluaAllowed(c.CDB) {
		n.fail(c, keyNotReady, st.notReady())
		return
	}
	if op == 0xa3 && len(c.CDB) > 1 && c.CDB[1]&0x1f == 0x0a {
		n.reportTargetPortGroups(c, sn, dev)
		return
	}
	if dev.res.conflict(n.key, c.CDB) {
		c.Status = statusReservationConflict
		return
	}

	st := dev.cur()
	t := taskPool.Get().(*task)
	t.fill(c, n, tv, st)
	res := st.lu.PerformCommand(0, &t.cmd)
	n.finish(c, t, res)
	*t = task{}
	taskPool.Put(t)

	if op == 0xa0 && c.Status == statusGood {
		n.clearUA(ascReportedLUNsDataChanged)
	}
}

func (t *task) fill(c *iscsi.Command, n *nexus, tv *targetView, st *luState) {
	scb := c.CDB
	if len(scb) < 16 {
		copy(t.scb[:], scb)
		scb = t.scb[:]
	}
	t.in = api.SCSIDataBuffer{Buffer: c.DataIn[:cap(c.DataIn)], Length: uint32(cap(c.DataIn))}
	t.out = api.SCSIDataBuffer{Buffer: c.DataOut, Length: uint32(len(c.DataOut))}
	t.luInfo = api.ITNexusLuInfo{Lu: st.lu, ID: c.LUN}
	t.cmd = api.SCSICommand{
		OpCode:          c.CDB[0],
		Target:          tv.gt,
		Device:          st.lu,
		DeviceID:        st.lu.UUID,
		InSDBBuffer:     &t.in,
		OutSDBBuffer:    &t.out,
		RelTargetPortID: tv.port,
		SCB:             scb,
		SCBLength:       len(c.CDB),
		Attribute:       int(c.Attr),
		Tag:             uint64(c.Tag),
		ITNexus:         &n.itn,
		ITNexusLuInfo:   &t.luInfo,
	}
	binary.LittleEndian.PutUint64(t.cmd.Lun[:], c.LUN) // gotgt reads it native-endian
	switch {
	case len(c.DataOut) > 0:
		t.cmd.Direction = api.SCSIDataWrite
	case cap(c.DataIn) > 0:
		t.cmd.Direction = api.SCSIDataRead
	}
}

// finish turns gotgt's result into the transport's.
func (n *nexus) finish(c *iscsi.Command, t *task, res api.SAMStat) {
	c.Status = res.Stat
	if t.cmd.State == stateTransferLength {
		c.TransferLength, c.HasTransferLength = t.cmd.TL, true
	}
	switch res.Stat {
	case statusGood, 0x04: // GOOD, CONDITION MET
		l := int(t.in.Resid)
		if l > cap(c.DataIn) {
			l = cap(c.DataIn)
		}
		c.DataInLen = l
	case statusCheckCondition:
		var s []byte
		if t.cmd.SenseBuffer != nil {
			s = t.cmd.SenseBuffer.Buffer
		}
		key, code, ok := senseKeyASC(s)
		if !ok {
			key, code = keyHardwareError, ascInternalTargetFailure
		}
		if len(s) == senseLen && s[0]&0x7f == 0x70 {
			c.Sense = s // ours, already fixed format
		} else {
			c.Sense = buildSense(key, code, 0, false)
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
		data := standardInquiry(0x7f)
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
		var nums []uint64
		if tv != nil {
			nums = tv.numbers
		}
		data, key, code := reportLUNsData(cdb, nums)
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
		if tv == nil || tv.luns[lun] == nil {
			return iscsi.TMFLUNNotExist
		}
		n.resetLU(tv.luns[lun])
		return iscsi.TMFComplete
	case iscsi.TMFTargetWarmReset, iscsi.TMFTargetColdReset:
		if tv == nil {
			return iscsi.TMFComplete
		}
		for _, num := range tv.numbers {
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
