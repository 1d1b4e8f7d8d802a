package iscsi

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// needTool skips the test when a real initiator tool is not installed.
func needTool(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (apt-get install libiscsi-bin qemu-utils qemu-block-extra): %v", n, err)
		}
	}
}

// runTool runs a command with a deadline and returns its combined output.
func runTool(t *testing.T, timeout time.Duration, env []string, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v: %w", name, timeout, ctx.Err())
	}
	return string(out), err
}

func urlFor(s *Server, userinfo string) string {
	if userinfo != "" {
		userinfo += "@"
	}
	return "iscsi://" + userinfo + addrOf(s) + "/" + testIQN + "/0"
}

func TestLibiscsiTools(t *testing.T) {
	needTool(t, "iscsi-ls", "iscsi-inq", "iscsi-readcapacity16")
	b := newFileBackend(t, 16<<20)
	s := startServer(t, b, nil)
	out, err := runTool(t, 20*time.Second, nil, "", "iscsi-ls", "-s", "iscsi://"+addrOf(s))
	if err != nil || !strings.Contains(out, "Target:"+testIQN) || !strings.Contains(out, "Lun:0") {
		t.Fatalf("iscsi-ls: %v\n%s", err, out)
	}
	out, err = runTool(t, 20*time.Second, nil, "", "iscsi-inq", urlFor(s, ""))
	if err != nil || !strings.Contains(out, "LMTGT") {
		t.Fatalf("iscsi-inq: %v\n%s", err, out)
	}
	out, err = runTool(t, 20*time.Second, nil, "", "iscsi-inq", "-e", "1", "-c", "128", urlFor(s, ""))
	if err != nil || !strings.Contains(out, "SERIAL01") {
		t.Fatalf("iscsi-inq VPD 0x80: %v\n%s", err, out)
	}
	out, err = runTool(t, 20*time.Second, nil, "", "iscsi-readcapacity16", urlFor(s, ""))
	if err != nil || !strings.Contains(out, "LOGICAL BLOCK LENGTH IN BYTES:512") {
		t.Fatalf("iscsi-readcapacity16: %v\n%s", err, out)
	}
}

func TestQemuIO(t *testing.T) {
	needTool(t, "qemu-io")
	b := newFileBackend(t, 16<<20)
	s := startServer(t, b, nil)
	script := strings.Join([]string{
		"write -P 0xab 0 4k",
		"write -P 0xcd 1M 1M",
		"write -P 0x5a 3M 3M",
		"read -P 0xab 0 4k",
		"read -P 0xcd 1M 1M",
		"read -P 0x5a 3M 3M",
		"flush",
	}, "\n") + "\n"
	out, err := runTool(t, 60*time.Second, nil, script, "qemu-io", "-f", "raw", "-t", "none", urlFor(s, ""))
	if err != nil || strings.Contains(out, "failed") || strings.Contains(out, "error") {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	if got := fileBytes(t, b, 3<<20, 3<<20); !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 3<<20)) {
		t.Fatal("file does not hold what qemu-io wrote")
	}
}

// TestQemuImgBench keeps a libiscsi session busy for more than 10 s, past
// the non-immediate NOP-Out libiscsi sends after about 5 s.
func TestQemuImgBench(t *testing.T) {
	needTool(t, "qemu-img")
	if testing.Short() {
		t.Skip("runs 11 s; skipped with -short")
	}
	b := newFileBackend(t, 64<<20)
	s := startServer(t, b, nil)
	start := time.Now()
	rounds := 0
	for time.Since(start) < 11*time.Second {
		rounds++
		args := []string{"bench", "-f", "raw", "-t", "none", "-c", "2000", "-s", "4096", "-d", "16", "-S", "1052672"}
		if rounds%2 == 1 {
			args = append(args, "-w")
		}
		out, err := runTool(t, 60*time.Second, nil, "", "qemu-img", append(args, urlFor(s, ""))...)
		if err != nil || !strings.Contains(out, "Run completed") {
			t.Fatalf("qemu-img bench round %d: %v\n%s", rounds, err, out)
		}
	}
	// One long-lived session across the NOP-Out: qemu-io with a pause.
	needTool(t, "qemu-io")
	script := "write -P 0x11 0 64k\nsleep 6500\nread -P 0x11 0 64k\nwrite -P 0x22 64k 64k\nread -P 0x22 64k 64k\n"
	out, err := runTool(t, 60*time.Second, nil, script, "qemu-io", "-f", "raw", "-t", "none", urlFor(s, ""))
	if err != nil || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io across the NOP-Out: %v\n%s", err, out)
	}
}

func TestLibiscsiCHAP(t *testing.T) {
	needTool(t, "iscsi-inq")
	b := newFileBackend(t, 1<<20)
	b.chap = &CHAP{User: "alice", Secret: "alicesecret12"}
	s := startServer(t, b, nil)
	if out, err := runTool(t, 20*time.Second, nil, "", "iscsi-inq", urlFor(s, "alice%alicesecret12")); err != nil {
		t.Fatalf("right secret refused: %v\n%s", err, out)
	}
	if out, err := runTool(t, 20*time.Second, nil, "", "iscsi-inq", urlFor(s, "alice%wrongsecret")); err == nil {
		t.Fatalf("wrong secret accepted:\n%s", out)
	}
	if out, err := runTool(t, 20*time.Second, nil, "", "iscsi-inq", urlFor(s, "")); err == nil {
		t.Fatalf("no CHAP accepted:\n%s", out)
	}
	b.mu.Lock()
	b.chap = &CHAP{User: "alice", Secret: "alicesecret12", MutualUser: "tgtuser", MutualSecret: "targetsecret1"}
	b.mu.Unlock()
	mutual := []string{"LIBISCSI_CHAP_TARGET_USERNAME=tgtuser", "LIBISCSI_CHAP_TARGET_PASSWORD=targetsecret1"}
	if out, err := runTool(t, 20*time.Second, mutual, "", "iscsi-inq", urlFor(s, "alice%alicesecret12")); err != nil {
		t.Fatalf("mutual CHAP refused: %v\n%s", err, out)
	}
	bad := []string{"LIBISCSI_CHAP_TARGET_USERNAME=tgtuser", "LIBISCSI_CHAP_TARGET_PASSWORD=notthetarget"}
	if out, err := runTool(t, 20*time.Second, bad, "", "iscsi-inq", urlFor(s, "alice%alicesecret12")); err == nil {
		t.Fatalf("initiator accepted a target with the wrong mutual secret:\n%s", out)
	}
}

// TestLibiscsiProtocolSuites runs libiscsi's iSCSI protocol suites against
// the loopback backend.
func TestLibiscsiProtocolSuites(t *testing.T) {
	needTool(t, "iscsi-test-cu")
	if testing.Short() {
		t.Skip("skipped with -short")
	}
	b := newFileBackend(t, 64<<20)
	s := startServer(t, b, nil)
	list, err := runTool(t, 20*time.Second, nil, "", "iscsi-test-cu", "--list")
	if err != nil {
		t.Fatalf("iscsi-test-cu --list: %v\n%s", err, list)
	}
	for _, suite := range []string{"iSCSIResiduals", "iSCSITMF", "iSCSIcmdsn", "iSCSIdatasn", "iSCSISendTargets", "iSCSINop"} {
		t.Run(suite, func(t *testing.T) {
			if !strings.Contains(list, "ALL."+suite+"\n") {
				t.Skipf("this libiscsi has no suite %s", suite)
			}
			args := []string{"-d", "-t", "ALL." + suite}
			if v := os.Getenv("LMTGT_TEST_CU_ARGS"); v != "" {
				args = append(args, strings.Fields(v)...)
			}
			out, err := runTool(t, 120*time.Second, nil, "", "iscsi-test-cu", append(args, urlFor(s, ""))...)
			if err != nil || !cuAllPassed(out) {
				t.Fatalf("%s: %v\n%s", suite, err, out)
			}
			t.Logf("%s:\n%s", suite, lastLines(out, 8))
		})
	}
}

// cuAllPassed reads CUnit's "tests N N P F I" summary line.
func cuAllPassed(out string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && f[0] == "tests" {
			return f[1] == f[3] && f[4] == "0" && f[1] != "0"
		}
	}
	return false
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
