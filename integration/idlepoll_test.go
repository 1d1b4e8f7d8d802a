package integration

import (
	"fmt"
	"testing"
)

// TestIdlePollWithQemuIO: a host at queue depth 1 (qemu-io issuing one
// command at a time) through the real daemon: the connection polls for
// the host's next command after each (lmtgt_iscsi_idle_polls_total), the
// data reads back right, and a daemon started with --idle-poll 0 never
// polls.
func TestIdlePollWithQemuIO(t *testing.T) {
	needTools(t, "qemu-io")
	for _, c := range []struct {
		flag  string
		polls bool
	}{{"100us", true}, {"0", false}} {
		d := StartDaemon(t, "", "--metrics", "127.0.0.1:0", "--idle-poll", c.flag)
		addr := metricsAddr(t, d)
		iqn := d.Export("ip", "16MiB", 512)
		var cmds []string
		for k := 0; k < 64; k++ {
			cmds = append(cmds, fmt.Sprintf("write -P %#x %d 4096", 0x20+k, k*65536))
		}
		for k := 0; k < 64; k++ {
			cmds = append(cmds, fmt.Sprintf("read -P %#x %d 4096", 0x20+k, k*65536))
		}
		qemuIOOK(t, d.URL(iqn, 0), cmds...)
		s := scrape(t, addr)
		polls := s[`lmtgt_iscsi_idle_polls_total{result="caught"}`] + s[`lmtgt_iscsi_idle_polls_total{result="missed"}`]
		if c.polls && polls == 0 {
			t.Errorf("--idle-poll %s: no poll over 128 commands at queue depth 1", c.flag)
		}
		if !c.polls && polls != 0 {
			t.Errorf("--idle-poll %s: %v polls", c.flag, polls)
		}
		t.Logf("--idle-poll %s: caught %v, missed %v, refused %v, others active %v", c.flag, s[`lmtgt_iscsi_idle_polls_total{result="caught"}`],
			s[`lmtgt_iscsi_idle_polls_total{result="missed"}`], s[`lmtgt_iscsi_idle_polls_total{result="refused"}`],
			s[`lmtgt_iscsi_idle_polls_total{result="others_active"}`])
	}
}
