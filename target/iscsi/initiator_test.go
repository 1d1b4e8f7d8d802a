package iscsi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// ini is a small test initiator: enough of RFC 7143 to drive the target
// through login, SCSI commands with every data-out mode, NOP, TMF, text
// and logout.
type ini struct {
	t   testing.TB
	nc  net.Conn
	br  *bufio.Reader
	hd  bool // header digest
	dd  bool // data digest
	itt uint32

	cmdSN, expStatSN, maxCmdSN uint32
	tsih                       uint16
	isid                       [6]byte

	// negotiated
	targetMRDSL   uint32 // what the target accepts per PDU
	firstBurst    uint32
	maxBurst      uint32
	initialR2T    bool
	immediateData bool
	resp          map[string]string // final negotiated keys seen
	nopIns        int               // target pings answered
	r2ts, other   []*inPDU          // set aside by nopSkipping
	answerPings   bool
}

type loginOpts struct {
	initiator  string
	target     string
	discovery  bool
	isid       [6]byte
	tsih       uint16
	user       string
	secret     string
	mutualUser string // expected CHAP_N from the target
	mutualSec  string
	keys       []kv // operational keys to offer (defaults when nil)
	digest     bool // offer CRC32C first
	skipOpNeg  bool // go from security straight to full feature phase
}

func defaultKeys() []kv {
	return []kv{
		{Key: "HeaderDigest", Value: "None"}, {Key: "DataDigest", Value: "None"},
		{Key: "MaxRecvDataSegmentLength", Value: "262144"},
		{Key: "InitialR2T", Value: "No"}, {Key: "ImmediateData", Value: "Yes"},
		{Key: "MaxBurstLength", Value: "1048576"}, {Key: "FirstBurstLength", Value: "262144"},
		{Key: "MaxOutstandingR2T", Value: "1"}, {Key: "MaxConnections", Value: "1"},
		{Key: "ErrorRecoveryLevel", Value: "0"}, {Key: "DefaultTime2Wait", Value: "2"},
		{Key: "DefaultTime2Retain", Value: "0"}, {Key: "DataPDUInOrder", Value: "Yes"},
		{Key: "DataSequenceInOrder", Value: "Yes"},
	}
}

func dialIni(t testing.TB, addr string) *ini {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &ini{t: t, nc: nc, br: bufio.NewReader(nc), itt: 0x100, answerPings: true,
		targetMRDSL: 8192, firstBurst: 65536, maxBurst: 262144, initialR2T: true, immediateData: true}
}

type inPDU struct {
	h    header
	data []byte
}

func (i *ini) write(b *[pdu.BHSLen]byte, data []byte) error {
	pdu.SetDataLen(b, uint32(len(data)))
	buf := append([]byte(nil), b[:]...)
	if i.hd {
		buf = binary.LittleEndian.AppendUint32(buf, pdu.CRC32C(b[:]))
	}
	if len(data) > 0 {
		buf = append(buf, data...)
		pad := pdu.PadLen(uint32(len(data)))
		buf = append(buf, zeroPad[:pad]...)
		if i.dd {
			sum := pdu.CRC32CUpdate(pdu.CRC32C(data), zeroPad[:pad])
			buf = binary.LittleEndian.AppendUint32(buf, sum)
		}
	}
	_, err := i.nc.Write(buf)
	return err
}

func (i *ini) read() (*inPDU, error) {
	p := &inPDU{}
	if err := pdu.ReadHeader(i.br, &p.h, pdu.Limits{HeaderDigest: i.hd, MaxData: 1 << 24}); err != nil {
		return nil, err
	}
	p.data = make([]byte, p.h.DataLen())
	if err := pdu.ReadData(i.br, p.data, i.dd); err != nil {
		return nil, err
	}
	if p.h.Opcode() != pdu.OpLoginResp && p.h.Opcode() != pdu.OpDataIn && p.h.Opcode() != pdu.OpR2T {
		// StatSN-bearing PDUs
		if sn := p.h.U32(24); int32(sn+1-i.expStatSN) > 0 {
			i.expStatSN = sn + 1
		}
	}
	if p.h.Opcode() == pdu.OpDataIn && p.h.Flags()&0x01 != 0 {
		i.expStatSN = p.h.U32(24) + 1
	}
	if p.h.Opcode() != pdu.OpLoginResp {
		if m := p.h.U32(32); int32(m-i.maxCmdSN) > 0 {
			i.maxCmdSN = m
		}
	}
	return p, nil
}

func (i *ini) nextITT() uint32 { i.itt++; return i.itt }

// loginResult is the outcome of a login attempt.
type loginResult struct {
	status uint16
	keys   map[string]string
}

func (i *ini) loginPDU(csg, nsg int, transit bool, keys []kv) (*inPDU, error) {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpLoginReq | pdu.FlagImmed
	b[1] = byte(csg<<2) | byte(nsg)
	if transit {
		b[1] |= pdu.FlagFinal
	}
	copy(b[8:14], i.isid[:])
	pdu.Put16(b[14:], i.tsih)
	pdu.Put32(b[16:], i.nextITT())
	pdu.Put32(b[24:], i.cmdSN)
	pdu.Put32(b[28:], i.expStatSN)
	if err := i.write(&b, pdu.EncodeText(keys)); err != nil {
		return nil, err
	}
	p, err := i.read()
	if err != nil {
		return nil, err
	}
	if p.h.Opcode() != pdu.OpLoginResp {
		return nil, fmt.Errorf("got opcode %#x during login", p.h.Opcode())
	}
	i.expStatSN = p.h.U32(24) + 1
	i.maxCmdSN = p.h.U32(32)
	return p, nil
}

func status(p *inPDU) uint16 { return uint16(p.h.B[36])<<8 | uint16(p.h.B[37]) }

// login performs a whole login. A refused login returns its status.
func (i *ini) login(o loginOpts) (loginResult, error) {
	i.isid = o.isid
	if i.isid == ([6]byte{}) {
		i.isid = [6]byte{0x80, 0, 0, 0, 0, 1}
	}
	i.tsih = o.tsih
	if o.initiator == "" {
		o.initiator = "iqn.2024-01.org.lmtgt:ini"
	}
	lead := []kv{{Key: "InitiatorName", Value: o.initiator}}
	if o.discovery {
		lead = append(lead, kv{Key: "SessionType", Value: "Discovery"})
	} else {
		lead = append(lead, kv{Key: "SessionType", Value: "Normal"}, kv{Key: "TargetName", Value: o.target})
	}
	auth := "None"
	if o.user != "" {
		auth = "CHAP,None"
	}
	next := 1
	if o.skipOpNeg {
		next = 3
	}
	res := loginResult{keys: map[string]string{}}
	collect := func(p *inPDU) error {
		kvs, err := pdu.ParseText(p.data)
		if err != nil {
			return err
		}
		for _, k := range kvs {
			res.keys[k.Key] = k.Value
		}
		return nil
	}
	p, err := i.loginPDU(0, next, true, append(lead, kv{Key: "AuthMethod", Value: auth}))
	if err != nil {
		return res, err
	}
	if res.status = status(p); res.status != 0 {
		return res, nil
	}
	if err := collect(p); err != nil {
		return res, err
	}
	if res.keys["AuthMethod"] == "CHAP" {
		if p, err = i.loginPDU(0, next, false, []kv{{Key: "CHAP_A", Value: "7,5"}}); err != nil {
			return res, err
		}
		if res.status = status(p); res.status != 0 {
			return res, nil
		}
		if err := collect(p); err != nil {
			return res, err
		}
		id, _ := strconv.Atoi(res.keys["CHAP_I"])
		ch, err := decodeCHAPBinary(res.keys["CHAP_C"])
		if err != nil {
			return res, err
		}
		r := pdu.CHAPResponse(byte(id), o.secret, ch)
		keys := []kv{{Key: "CHAP_N", Value: o.user}, {Key: "CHAP_R", Value: pdu.EncodeHex(r[:])}}
		myCh := []byte("0123456789abcdef")
		if o.mutualUser != "" {
			keys = append(keys, kv{Key: "CHAP_I", Value: "77"}, kv{Key: "CHAP_C", Value: pdu.EncodeHex(myCh)})
		}
		if p, err = i.loginPDU(0, next, true, keys); err != nil {
			return res, err
		}
		if res.status = status(p); res.status != 0 {
			return res, nil
		}
		if err := collect(p); err != nil {
			return res, err
		}
		if o.mutualUser != "" {
			want := pdu.CHAPResponse(77, o.mutualSec, myCh)
			got, err := decodeCHAPBinary(res.keys["CHAP_R"])
			if err != nil || res.keys["CHAP_N"] != o.mutualUser || string(got) != string(want[:]) {
				return res, fmt.Errorf("target failed mutual CHAP: N=%q", res.keys["CHAP_N"])
			}
		}
	}
	for p.h.Flags()&pdu.FlagFinal == 0 {
		// target did not transit yet: ask again
		if p, err = i.loginPDU(0, next, true, nil); err != nil {
			return res, err
		}
		if res.status = status(p); res.status != 0 {
			return res, nil
		}
		if err := collect(p); err != nil {
			return res, err
		}
	}
	if !o.skipOpNeg {
		keys := o.keys
		if keys == nil {
			keys = defaultKeys()
		}
		if o.digest {
			keys = append(dropKey(dropKey(append([]kv(nil), keys...), "HeaderDigest"), "DataDigest"),
				kv{Key: "HeaderDigest", Value: "CRC32C,None"}, kv{Key: "DataDigest", Value: "CRC32C,None"})
		}
		p, err = i.loginPDU(1, 3, true, keys)
		for err == nil && status(p) == 0 && p.h.Flags()&pdu.FlagFinal == 0 {
			if err = collect(p); err != nil {
				return res, err
			}
			p, err = i.loginPDU(1, 3, true, nil)
		}
		if err != nil {
			return res, err
		}
		if res.status = status(p); res.status != 0 {
			return res, nil
		}
		if err := collect(p); err != nil {
			return res, err
		}
	}
	i.tsih = p.h.U16(14)
	i.cmdSN = p.h.U32(28)
	i.resp = res.keys
	num := func(k string, def uint32) uint32 {
		if v, ok := res.keys[k]; ok {
			n, _ := strconv.Atoi(v)
			return uint32(n)
		}
		return def
	}
	i.targetMRDSL = num("MaxRecvDataSegmentLength", 8192)
	i.firstBurst = num("FirstBurstLength", 65536)
	i.maxBurst = num("MaxBurstLength", 262144)
	i.initialR2T = res.keys["InitialR2T"] != "No"
	i.immediateData = res.keys["ImmediateData"] != "No"
	i.hd = res.keys["HeaderDigest"] == "CRC32C"
	i.dd = res.keys["DataDigest"] == "CRC32C"
	return res, nil
}

func (i *ini) mustLogin(o loginOpts) {
	i.t.Helper()
	if o.target == "" && !o.discovery {
		o.target = testIQN
	}
	r, err := i.login(o)
	if err != nil {
		i.t.Fatalf("login: %v", err)
	}
	if r.status != 0 {
		i.t.Fatalf("login refused: status %#04x", r.status)
	}
}

// icmd is one SCSI command driven by run.
type icmd struct {
	lun   uint64
	cdb   []byte
	read  bool
	edtl  uint32
	out   []byte // data to send (len may differ from edtl in tests)
	noImm bool   // send no immediate data
	itt   uint32
	// results
	done      bool
	status    byte
	sense     []byte
	in        []byte
	resFlags  byte
	residual  uint32
	dataInPDU int
	maxSeg    int
	sInData   bool
	nextOut   uint32
}

func (i *ini) sendCmd(c *icmd) error {
	c.itt = i.nextITT()
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpSCSICmd
	b[1] = pdu.FlagFinal | 0x01 // simple
	if c.read {
		b[1] |= pdu.FlagRead
	}
	if len(c.out) > 0 || (!c.read && c.edtl > 0) {
		b[1] |= pdu.FlagWrite
	}
	lf := EncodeLUN(c.lun)
	copy(b[8:16], lf[:])
	pdu.Put32(b[16:], c.itt)
	pdu.Put32(b[20:], c.edtl)
	pdu.Put32(b[24:], i.cmdSN)
	i.cmdSN++
	pdu.Put32(b[28:], i.expStatSN)
	copy(b[32:48], c.cdb)
	var imm []byte
	limit := min(uint32(len(c.out)), c.edtl)
	if i.immediateData && !c.noImm {
		imm = c.out[:min(limit, i.targetMRDSL, i.firstBurst)]
	}
	unsol := uint32(0)
	if !i.initialR2T {
		unsol = min(limit, i.firstBurst)
	}
	if uint32(len(imm)) < unsol {
		b[1] &^= pdu.FlagFinal
	}
	if err := i.write(&b, imm); err != nil {
		return err
	}
	c.nextOut = uint32(len(imm))
	// unsolicited Data-Out
	var sn uint32
	for c.nextOut < unsol {
		n := min(unsol-c.nextOut, i.targetMRDSL)
		if err := i.dataOut(c, pdu.ReservedTag, sn, c.nextOut, n, c.nextOut+n == unsol); err != nil {
			return err
		}
		sn++
		c.nextOut += n
	}
	return nil
}

func (i *ini) dataOut(c *icmd, ttt, sn, off, n uint32, final bool) error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpDataOut
	if final {
		b[1] = pdu.FlagFinal
	}
	lf := EncodeLUN(c.lun)
	copy(b[8:16], lf[:])
	pdu.Put32(b[16:], c.itt)
	pdu.Put32(b[20:], ttt)
	pdu.Put32(b[28:], i.expStatSN)
	pdu.Put32(b[36:], sn)
	pdu.Put32(b[40:], off)
	data := make([]byte, n)
	if int(off) < len(c.out) {
		copy(data, c.out[off:])
	}
	return i.write(&b, data)
}

// run sends cmds (respecting MaxCmdSN) and services the connection until
// all have completed.
func (i *ini) run(cmds ...*icmd) error {
	byITT := map[uint32]*icmd{}
	next, left := 0, len(cmds)
	for left > 0 {
		for next < len(cmds) && int32(i.maxCmdSN-i.cmdSN) >= 0 {
			if err := i.sendCmd(cmds[next]); err != nil {
				return err
			}
			byITT[cmds[next].itt] = cmds[next]
			next++
		}
		p, err := i.read()
		if err != nil {
			return err
		}
		switch p.h.Opcode() {
		case pdu.OpNopIn:
			if err := i.answerNop(p); err != nil {
				return err
			}
		case pdu.OpR2T:
			c := byITT[p.h.ITT()]
			if c == nil {
				return fmt.Errorf("R2T for unknown itt %#x", p.h.ITT())
			}
			off, want := p.h.U32(40), p.h.U32(44)
			var sn uint32
			for sent := uint32(0); sent < want; sn++ {
				n := min(want-sent, i.targetMRDSL)
				if err := i.dataOut(c, p.h.TTT(), sn, off+sent, n, sent+n == want); err != nil {
					return err
				}
				sent += n
			}
		case pdu.OpDataIn:
			c := byITT[p.h.ITT()]
			if c == nil {
				return fmt.Errorf("Data-In for unknown itt %#x", p.h.ITT())
			}
			if p.h.U32(36) != uint32(c.dataInPDU) {
				return fmt.Errorf("DataSN %d, want %d", p.h.U32(36), c.dataInPDU)
			}
			if int(p.h.U32(40)) != len(c.in) {
				return fmt.Errorf("Data-In offset %d, want %d", p.h.U32(40), len(c.in))
			}
			c.dataInPDU++
			c.maxSeg = max(c.maxSeg, len(p.data))
			c.in = append(c.in, p.data...)
			if p.h.Flags()&0x01 != 0 {
				c.done, c.sInData = true, true
				c.status = p.h.B[3]
				c.resFlags = p.h.Flags() & 0x06
				c.residual = p.h.U32(44)
				left--
			}
		case pdu.OpSCSIResp:
			c := byITT[p.h.ITT()]
			if c == nil {
				return fmt.Errorf("response for unknown itt %#x", p.h.ITT())
			}
			c.done = true
			c.status = p.h.B[3]
			c.resFlags = p.h.Flags() & 0x06
			c.residual = p.h.U32(44)
			if len(p.data) >= 2 {
				sl := int(binary.BigEndian.Uint16(p.data))
				c.sense = p.data[2 : 2+min(sl, len(p.data)-2)]
			}
			left--
		case pdu.OpReject:
			return fmt.Errorf("reject reason %#x", p.h.B[2])
		default:
			return fmt.Errorf("unexpected opcode %#x", p.h.Opcode())
		}
	}
	return nil
}

func (i *ini) answerNop(p *inPDU) error {
	if p.h.TTT() == pdu.ReservedTag || !i.answerPings {
		return nil
	}
	i.nopIns++
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpNopOut | pdu.FlagImmed
	b[1] = pdu.FlagFinal
	pdu.Put32(b[16:], pdu.ReservedTag)
	pdu.Put32(b[20:], p.h.TTT())
	pdu.Put32(b[24:], i.cmdSN)
	pdu.Put32(b[28:], i.expStatSN)
	return i.write(&b, nil)
}

// expect reads PDUs (answering pings) until one with opcode op arrives.
func (i *ini) expect(op uint8) (*inPDU, error) {
	for {
		p, err := i.read()
		if err != nil {
			return nil, err
		}
		if p.h.Opcode() == pdu.OpNopIn && p.h.ITT() == pdu.ReservedTag {
			if err := i.answerNop(p); err != nil {
				return nil, err
			}
			continue
		}
		if p.h.Opcode() != op {
			return p, fmt.Errorf("got opcode %#x, want %#x", p.h.Opcode(), op)
		}
		return p, nil
	}
}

// nop sends a NOP-Out (immediate or not) and waits for the NOP-In.
func (i *ini) nop(immediate bool, data []byte) (*inPDU, error) {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpNopOut
	if immediate {
		b[0] |= pdu.FlagImmed
	}
	b[1] = pdu.FlagFinal
	pdu.Put32(b[16:], i.nextITT())
	pdu.Put32(b[20:], pdu.ReservedTag)
	pdu.Put32(b[24:], i.cmdSN)
	if !immediate {
		i.cmdSN++
	}
	pdu.Put32(b[28:], i.expStatSN)
	if err := i.write(&b, data); err != nil {
		return nil, err
	}
	return i.expect(pdu.OpNopIn)
}

func (i *ini) text(keys []kv) (map[string][]string, error) {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpTextReq | pdu.FlagImmed
	b[1] = pdu.FlagFinal
	pdu.Put32(b[16:], i.nextITT())
	pdu.Put32(b[20:], pdu.ReservedTag)
	pdu.Put32(b[24:], i.cmdSN)
	pdu.Put32(b[28:], i.expStatSN)
	if err := i.write(&b, pdu.EncodeText(keys)); err != nil {
		return nil, err
	}
	p, err := i.expect(pdu.OpTextResp)
	if err != nil {
		return nil, err
	}
	kvs, err := parseTextMulti(p.data)
	return kvs, err
}

// parseTextMulti parses text allowing repeated keys (SendTargets answers).
func parseTextMulti(b []byte) (map[string][]string, error) {
	out := map[string][]string{}
	for _, item := range splitNUL(b) {
		for j := 0; j < len(item); j++ {
			if item[j] == '=' {
				out[item[:j]] = append(out[item[:j]], item[j+1:])
				break
			}
		}
	}
	return out, nil
}

func splitNUL(b []byte) []string {
	var out []string
	start := 0
	for j, x := range b {
		if x == 0 {
			if j > start {
				out = append(out, string(b[start:j]))
			}
			start = j + 1
		}
	}
	return out
}

func (i *ini) tmf(fn TMFunction, lun uint64, ref uint32, refCmdSN uint32) (byte, error) {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpTMFReq | pdu.FlagImmed
	b[1] = pdu.FlagFinal | byte(fn)
	lf := EncodeLUN(lun)
	copy(b[8:16], lf[:])
	pdu.Put32(b[16:], i.nextITT())
	pdu.Put32(b[20:], ref)
	pdu.Put32(b[24:], i.cmdSN)
	pdu.Put32(b[28:], i.expStatSN)
	pdu.Put32(b[32:], refCmdSN)
	if err := i.write(&b, nil); err != nil {
		return 0, err
	}
	p, err := i.expect(pdu.OpTMFResp)
	if err != nil {
		return 0, err
	}
	return p.h.B[2], nil
}

func (i *ini) logout() error {
	var b [pdu.BHSLen]byte
	b[0] = pdu.OpLogoutReq | pdu.FlagImmed
	b[1] = pdu.FlagFinal
	pdu.Put32(b[16:], i.nextITT())
	pdu.Put32(b[24:], i.cmdSN)
	pdu.Put32(b[28:], i.expStatSN)
	if err := i.write(&b, nil); err != nil {
		return err
	}
	p, err := i.expect(pdu.OpLogoutResp)
	if err != nil {
		return err
	}
	if p.h.B[2] != 0 {
		return fmt.Errorf("logout response %d", p.h.B[2])
	}
	// the target closes the connection
	if _, err := i.br.ReadByte(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("connection still open after logout: %v", err)
	}
	return nil
}

// CDB builders.
func read10(lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = 0x28
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func write10(lba uint32, blocks uint16) []byte {
	c := read10(lba, blocks)
	c[0] = 0x2a
	return c
}

func read16(lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = 0x88
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func write16(lba uint64, blocks uint32) []byte {
	c := read16(lba, blocks)
	c[0] = 0x8a
	return c
}

func (i *ini) writeBlocks(lba uint32, data []byte) *icmd {
	i.t.Helper()
	c := &icmd{cdb: write10(lba, uint16(len(data)/testBlock)), edtl: uint32(len(data)), out: data}
	if err := i.run(c); err != nil {
		i.t.Fatalf("write lba %d: %v", lba, err)
	}
	if c.status != 0 {
		i.t.Fatalf("write lba %d: status %#x sense %x", lba, c.status, c.sense)
	}
	return c
}

func (i *ini) readBlocks(lba uint32, blocks int) *icmd {
	i.t.Helper()
	c := &icmd{cdb: read10(lba, uint16(blocks)), read: true, edtl: uint32(blocks * testBlock)}
	if err := i.run(c); err != nil {
		i.t.Fatalf("read lba %d: %v", lba, err)
	}
	if c.status != 0 {
		i.t.Fatalf("read lba %d: status %#x sense %x", lba, c.status, c.sense)
	}
	return c
}
