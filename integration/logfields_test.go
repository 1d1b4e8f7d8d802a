package integration

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/target/api/wire"
	"github.com/lmtgt/lmtgt/target/iscsi/logtest"
)

// TestLogFieldNames: the daemon's JSON log keeps one name per thing
// (issue 12, "consistent field names"): a target's IQN is `iqn` (as in
// the iscsi lines and the metrics' label), never `target`; a split pause
// is `split_pause_ms` (as in the migration summary), not `pause`; and no
// line has a key twice (a CHAP refusal wrote initiator and iqn twice).
func TestLogFieldNames(t *testing.T) {
	needTools(t, "iscsi-inq")
	d := StartDaemon(t, "")
	iqn := d.Export("lf", "8MiB", 512)
	host := testIQN("logfields-host")
	keys := []string{"InitiatorName=" + host, "TargetName=" + iqn, "SessionType=Normal", "AuthMethod=None"}
	r, c := rcLogin(t, d.Portal, [6]byte{0x80, 0, 0, 0, 0, 1}, 0, rcTransit|rcCSGSecurity|rcNSGFFP, keys...)
	t.Cleanup(func() { c.Close() })
	if r.opcode != rcOpLoginResp || r.class != 0 {
		t.Fatalf("login: opcode %#x status %d/%#x", r.opcode, r.class, r.detail)
	}
	var lo wire.Logout
	d.JSON(&lo, "target", "logout", iqn, "--initiator", host)
	if lo.Sessions != 1 {
		t.Fatalf("target logout: %+v", lo)
	}
	d.OK("target", "chap", iqn, "--user", "u", "--secret", "lfsecret1234")
	if r := runCmd(t, "", nil, "iscsi-inq", "iscsi://u%wrongsecret12@"+d.Portal+"/"+iqn+"/0"); r.Code == 0 {
		t.Fatalf("wrong CHAP secret accepted: %s", r)
	}
	d.OK("lun", "create", "lfdst", "--size", "8MiB")
	d.OK("migration", "create", "--source", "lf", "--target", "lfdst", "--speed", "highest")
	d.waitMig("lf", time.Minute, "synced")
	d.OK("migration", "split", "lf")
	d.Stop()

	seen := map[string]bool{}
	for _, path := range d.logs {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "{") {
				continue
			}
			fields, dup := logtest.Fields(t, line)
			if len(dup) > 0 {
				t.Errorf("keys %v twice in %s", dup, line)
			}
			if v, ok := fields["target"].(string); ok && strings.HasPrefix(v, "iqn.") {
				t.Errorf("a target IQN under \"target\" (want \"iqn\"): %s", line)
			}
			if _, ok := fields["pause"]; ok {
				t.Errorf("a split pause under \"pause\" (want \"split_pause_ms\"): %s", line)
			}
			if m, _ := fields["message"].(string); m != "" {
				seen[m] = true
			}
		}
		f.Close()
	}
	for _, m := range []string{"initiator logged out by the administrator", "login refused", "pair split"} {
		if !seen[m] {
			t.Errorf("no %q line in the daemon log", m)
		}
	}
}
