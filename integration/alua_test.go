package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	iscsivol "github.com/lmtgt/lmtgt/metavol/volume/iscsi"
	"github.com/lmtgt/lmtgt/target/api/wire"
)

// aluaSession is a raw SCSI session of lmtgt's own initiator on one LUN,
// for the bytes libiscsi's tools do not print (RTPG, binary designators)
// and for commands sent one by one (no retries).
type aluaSession struct {
	t  *testing.T
	cl *iscsivol.Client
}

func dialALUA(t *testing.T, url string) *aluaSession {
	t.Helper()
	cfg, err := iscsivol.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cl, err := iscsivol.Dial(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("login to %s: %v", url, err)
	}
	t.Cleanup(func() { cl.Close() })
	return &aluaSession{t: t, cl: cl}
}

// do runs one command and returns its status, sense key/ASC/ASCQ and data.
func (s *aluaSession) do(cdb []byte, alloc int) (status byte, sense [3]byte, data []byte) {
	s.t.Helper()
	buf := make([]byte, alloc)
	r, err := s.cl.Do(iscsivol.Command{CDB: cdb, Data: buf, Read: alloc > 0})
	if err != nil {
		s.t.Fatalf("cdb %x: %v", cdb, err)
	}
	if r.Status == 0x02 && len(r.Sense) >= 14 {
		sense = [3]byte{r.Sense[2] & 0x0f, r.Sense[12], r.Sense[13]}
	}
	n := alloc - int(r.Residual)
	if !r.Underrun {
		n = alloc
	}
	return r.Status, sense, buf[:n]
}

func (s *aluaSession) mustSense(what string, cdb []byte, alloc int, want [3]byte) {
	s.t.Helper()
	st, sense, _ := s.do(cdb, alloc)
	if st != 0x02 || sense != want {
		s.t.Fatalf("%s: status 0x%02x sense %x, want CHECK CONDITION %x", what, st, sense, want)
	}
}

func (s *aluaSession) mustGood(what string, cdb []byte, alloc int) []byte {
	s.t.Helper()
	st, sense, data := s.do(cdb, alloc)
	if st != 0 {
		s.t.Fatalf("%s: status 0x%02x sense %x, want GOOD", what, st, sense)
	}
	return data
}

var (
	cdbTUR   = []byte{0, 0, 0, 0, 0, 0}
	cdbRead  = []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	cdbRTPG  = []byte{0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	cdbVPD83 = []byte{0x12, 1, 0x83, 1, 0, 0}

	senseStandby       = [3]byte{0x02, 0x04, 0x0b}
	senseUnavailable   = [3]byte{0x02, 0x04, 0x0c}
	senseTransitioning = [3]byte{0x02, 0x04, 0x0a}
	senseALUAChanged   = [3]byte{0x06, 0x2a, 0x06}
)

// rtpgGroups decodes REPORT TARGET PORT GROUPS data (length-only format)
// into "group:state:ports" strings.
func rtpgGroups(t *testing.T, b []byte) []string {
	t.Helper()
	if len(b) < 4 || int(binary.BigEndian.Uint32(b))+4 != len(b) {
		t.Fatalf("RTPG data %x: bad length", b)
	}
	var out []string
	for off := 4; off < len(b); {
		d := b[off:]
		n := int(d[7])
		var ports []string
		for i := range n {
			ports = append(ports, fmt.Sprint(binary.BigEndian.Uint16(d[8+4*i+2:])))
		}
		out = append(out, fmt.Sprintf("%d:%x:%s", binary.BigEndian.Uint16(d[2:]), d[0]&0x0f, strings.Join(ports, ",")))
		off += 8 + 4*n
	}
	return out
}

// vpdPorts returns the relative target port and target port group
// designators of VPD page 0x83 data.
func vpdPorts(t *testing.T, page []byte) (rel, group int) {
	t.Helper()
	rel, group = -1, -1
	for off := 4; off+4 <= len(page); off += 4 + int(page[off+3]) {
		d := page[off:]
		switch d[1] & 0x0f {
		case 4:
			rel = int(binary.BigEndian.Uint16(d[6:]))
		case 5:
			group = int(binary.BigEndian.Uint16(d[6:]))
		}
	}
	return rel, group
}

// TestALUA drives ALUA with the real binary, its CLI and real clients:
// two targets (ports) export one LUN; the CLI puts one into its own group
// with its own relative port ID and sets the LUN's state there. libiscsi
// sees implicit ALUA in INQUIRY; the initiator's RTPG and VPD 0x83 show
// the groups, ports and states; a session logged in before a change gets
// ASYMMETRIC ACCESS STATE CHANGED and stays logged in; qemu-io through
// the non-active port fails with the state's NOT READY sense while the
// active port serves the data; the settings survive a restart.
func TestALUA(t *testing.T) {
	needTools(t, "iscsi-inq", "qemu-io")
	d := StartDaemon(t, "")
	iqnA := d.Export("alua", "16MiB", 512)
	iqnB := testIQN("alua-b")
	d.OK("target", "create", iqnB)
	d.OK("target", "map", iqnB, "alua")
	d.OK("target", "allow", iqnB, "ALL")
	urlA, urlB := d.URL(iqnA, 0), d.URL(iqnB, 0)

	var a wire.ALUA
	d.JSON(&a, "alua", "show")
	if len(a.Targets) != 2 || a.Targets[0].Port == a.Targets[1].Port || a.Targets[0].Group != 1 || a.Targets[1].Group != 1 {
		t.Fatalf("targets after create: %+v", a.Targets)
	}
	d.OK("alua", "group", iqnB, "2")
	d.OK("alua", "port", iqnB, "9")
	var portA uint16
	d.JSON(&a, "alua", "show")
	for _, tp := range a.Targets {
		if tp.IQN == iqnA {
			portA = tp.Port
		}
	}
	d.Fail(1, []string{"relative target port ID", "used by target " + iqnB}, "alua", "port", iqnA, "9")
	d.Fail(1, []string{"target port group 0"}, "alua", "group", iqnB, "0")
	d.Fail(2, []string{`STATE "offline"`, "want active-optimized"}, "alua", "state", "alua", "2", "offline")
	d.Fail(2, []string{"GROUP_ID"}, "alua", "state", "alua", "two", "standby")

	qemuIOOK(t, urlA, "write -P 0x5a 0 64k")
	for _, u := range []string{urlA, urlB} {
		if out := tool(t, "iscsi-inq", u); !strings.Contains(out, "TPGS:1") {
			t.Fatalf("iscsi-inq %s: no TPGS:1 (implicit ALUA)\n%s", u, out)
		}
	}
	sb := dialALUA(t, urlB)
	if rel, g := vpdPorts(t, sb.mustGood("VPD 0x83 via B", cdbVPD83, 256)); rel != 9 || g != 2 {
		t.Fatalf("VPD 0x83 via B: relative port %d group %d, want 9 and 2", rel, g)
	}
	sa := dialALUA(t, urlA)
	if rel, g := vpdPorts(t, sa.mustGood("VPD 0x83 via A", cdbVPD83, 256)); rel != int(portA) || g != 1 {
		t.Fatalf("VPD 0x83 via A: relative port %d group %d, want %d and 1", rel, g, portA)
	}
	sb.mustGood("TUR via B", cdbTUR, 0)

	// Standby on B's group: the session logged in before the change hears
	// of it, then gets the standby sense; RTPG shows both groups.
	out := d.OK("alua", "state", "alua", "2", "standby")
	if !strings.Contains(out, "standby in target port group 2") {
		t.Fatalf("alua state: %q", out)
	}
	sb.mustSense("TUR via B after the change", cdbTUR, 0, senseALUAChanged)
	sb.mustSense("READ via B in standby", cdbRead, 512, senseStandby)
	want := []string{fmt.Sprintf("1:0:%d", portA), "2:2:9"}
	if g := rtpgGroups(t, sb.mustGood("RTPG via B", cdbRTPG, 256)); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("RTPG via B: %v, want %v", g, want)
	}
	sa.mustSense("TUR via A after the change", cdbTUR, 0, senseALUAChanged)
	if g := rtpgGroups(t, sa.mustGood("RTPG via A", cdbRTPG, 256)); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("RTPG via A: %v, want %v", g, want)
	}
	data := sa.mustGood("READ via A", cdbRead, 512)
	if !bytes.Equal(data, bytes.Repeat([]byte{0x5a}, 512)) {
		t.Fatalf("READ via A: %x...", data[:16])
	}
	qemuIOOK(t, urlA, "read -P 0x5a 0 64k")
	r := qemuIO(t, urlB, "read -P 0x5a 0 64k")
	if r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "NOT READY") || !strings.Contains(r.Stdout+r.Stderr, "0x040b") {
		t.Fatalf("qemu-io via the standby port: want NOT READY 0x040b\n%s", r)
	}

	for _, tc := range []struct {
		state string
		sense [3]byte
		code  string
	}{{"unavailable", senseUnavailable, "0x040c"}, {"transitioning", senseTransitioning, "0x040a"}} {
		d.OK("alua", "state", "alua", "2", tc.state)
		sb.mustSense("TUR via B after "+tc.state, cdbTUR, 0, senseALUAChanged)
		sb.mustSense("READ via B in "+tc.state, cdbRead, 512, tc.sense)
		r := qemuIO(t, urlB, "read 0 4k")
		if r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, tc.code) {
			t.Fatalf("qemu-io via the %s port: want NOT READY %s\n%s", tc.state, tc.code, r)
		}
	}

	// The configuration survives a restart.
	d.OK("alua", "state", "alua", "2", "standby")
	d.Restart(false)
	d.JSON(&a, "alua", "show", "alua")
	if len(a.LUNs) != 1 || len(a.LUNs[0].Groups) != 2 || fmt.Sprint(a.LUNs[0].Groups[1]) != fmt.Sprint(wire.ALUALUNGroup{Group: 2, State: "standby", Ports: []uint16{9}, Set: true}) {
		t.Fatalf("after restart: %+v", a.LUNs)
	}
	r = qemuIO(t, urlB, "read 0 4k")
	if r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "0x040b") {
		t.Fatalf("qemu-io via B after restart: want NOT READY 0x040b\n%s", r)
	}
	sb2 := dialALUA(t, urlB)
	deadline := time.Now().Add(cmdTimeout)
	for { // a fresh session may first report power-on/reset unit attentions
		st, sense, _ := sb2.do(cdbRead, 512)
		if st == 0x02 && sense == senseStandby {
			break
		}
		if st != 0x02 || sense[0] != 0x06 || time.Now().After(deadline) {
			t.Fatalf("READ via B after restart: status 0x%02x sense %x, want standby", st, sense)
		}
	}

	// Back to active/optimized: B serves the data.
	d.OK("alua", "state", "alua", "2", "active-optimized")
	qemuIOOK(t, urlB, "read -P 0x5a 0 64k")
	d.JSON(&a, "alua", "show", "alua")
	if g := a.LUNs[0].Groups[1]; g.Set || g.State != "active-optimized" {
		t.Fatalf("after reset to the default: %+v", g)
	}
}
