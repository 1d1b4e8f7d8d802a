package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSecret writes a secret file (mode 0600) and returns its path.
func writeSecret(t *testing.T, name, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// cmdlineOf is the daemon's argv as ps shows it.
func cmdlineOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// TestSecretsFromFilesAndStdin: the admin token and CHAP secrets can be
// given in files or on stdin, never showing in the process list, and they
// work: the TCP admin listener takes the token from --admin-token-file (the
// daemon) and from --admin-token-file or --admin-token - (the CLI), and a
// CHAP secret given with --secret - or --secret-file lets an initiator in.
func TestSecretsFromFilesAndStdin(t *testing.T) {
	needTools(t, "qemu-io")
	const token = "tok-file-0123456789"
	tokFile := writeSecret(t, "token", token)
	d := StartDaemon(t, "", "--admin-tcp", "127.0.0.1:0", "--admin-token-file", tokFile)
	if cl := cmdlineOf(t, d.pid()); strings.Contains(cl, token) {
		t.Fatalf("the admin token shows in the daemon's argv: %s", cl)
	}
	tcp := func(stdin string, args ...string) result {
		return runCmd(t, stdin, nil, cliBin, append([]string{"--admin", d.AdminTCP}, args...)...)
	}
	if r := tcp("", "--admin-token-file", tokFile, "lun", "create", "viafile", "--size", "1MiB"); r.Code != 0 {
		t.Fatalf("CLI over TCP with --admin-token-file: %s", r)
	}
	if r := tcp(token+"\n", "--admin-token", "-", "lun", "show", "viafile"); r.Code != 0 {
		t.Fatalf("CLI over TCP with --admin-token - (stdin): %s", r)
	}
	if r := runCmd(t, "", []string{"LMTGT_ADMIN_TOKEN_FILE=" + tokFile}, cliBin, "--admin", d.AdminTCP, "lun", "show", "viafile"); r.Code != 0 {
		t.Fatalf("CLI over TCP with LMTGT_ADMIN_TOKEN_FILE: %s", r)
	}
	wrong := writeSecret(t, "wrong", "not-the-token")
	if r := tcp("", "--admin-token-file", wrong, "lun", "list"); r.Code != 1 {
		t.Fatalf("CLI over TCP with a wrong token file: want exit 1: %s", r)
	}
	if r := tcp("", "--admin-token-file", filepath.Join(t.TempDir(), "none"), "lun", "list"); r.Code != 2 || !strings.Contains(r.Stderr, "--admin-token-file") {
		t.Fatalf("missing token file: want a usage error: %s", r)
	}

	// Target CHAP, secret on stdin.
	iqn := d.Export("chapstdin", "16MiB", 512)
	const secret = "stdin-secret-0123"
	r := runCmd(t, secret+"\n", nil, cliBin, "--admin", d.Admin, "target", "chap", iqn, "--user", "alice", "--secret", "-")
	if r.Code != 0 {
		t.Fatalf("target chap --secret -: %s", r)
	}
	url := fmt.Sprintf("iscsi://alice%%%s@%s/%s/0", secret, d.Portal, iqn)
	qemuIOOK(t, url, "write -P 0x11 0 64k", "read -P 0x11 0 64k")
	if r := qemuIO(t, d.URL(iqn, 0), "read 0 4k"); r.Code == 0 {
		t.Fatalf("login without the CHAP secret worked: %s", r)
	}
	// Mutual CHAP from files.
	secFile := writeSecret(t, "sec", "file-secret-01234")
	mutFile := writeSecret(t, "mut", "file-mutual-56789")
	d.OK("target", "chap", iqn, "--user", "bob", "--secret-file", secFile, "--mutual-user", "tgt", "--mutual-secret-file", mutFile)
	r = runCmd(t, "read -P 0x11 0 64k\n", []string{"LIBISCSI_CHAP_TARGET_USERNAME=tgt", "LIBISCSI_CHAP_TARGET_PASSWORD=file-mutual-56789"},
		"qemu-io", "-f", "raw", "-t", "none", fmt.Sprintf("iscsi://bob%%file-secret-01234@%s/%s/0", d.Portal, iqn))
	if r.Code != 0 || strings.Contains(r.Stdout+r.Stderr, "verification failed") {
		t.Fatalf("mutual CHAP with secrets from files: %s", r)
	}
	d.Fail(2, []string{"--secret", "--secret-file"}, "target", "chap", iqn, "--user", "bob", "--secret", "x", "--secret-file", secFile)
	d.Fail(2, []string{"standard input"}, "target", "chap", iqn, "--user", "bob", "--secret", "-", "--mutual-user", "m", "--mutual-secret", "-")
}

// TestDiscoveryCHAP: discovery sessions need no authentication by default;
// once `discovery chap` is set, iscsi-ls lists targets only with the right
// credentials, the setting survives a restart, and --disable turns it off.
func TestDiscoveryCHAP(t *testing.T) {
	needTools(t, "iscsi-ls")
	d := StartDaemon(t, "")
	iqn := d.Export("disc", "16MiB", 512)
	ls := func(user, secret string) result {
		u := "iscsi://" + d.Portal
		if user != "" {
			u = fmt.Sprintf("iscsi://%s%%%s@%s", user, secret, d.Portal)
		}
		return runCmd(t, "", nil, "iscsi-ls", u)
	}
	if r := ls("", ""); r.Code != 0 || !strings.Contains(r.Stdout, iqn) {
		t.Fatalf("discovery without CHAP (the default): %s", r)
	}
	if out := d.OK("discovery", "show"); !strings.Contains(out, "off") {
		t.Fatalf("discovery show: %s", out)
	}
	const secret = "disc-secret-0123"
	d.OK("discovery", "chap", "--user", "disco", "--secret-file", writeSecret(t, "dsec", secret))
	if out := d.OK("discovery", "show"); !strings.Contains(out, "one-way (user disco)") || strings.Contains(out, secret) {
		t.Fatalf("discovery show after chap: %s", out)
	}
	check := func() {
		t.Helper()
		if r := ls("", ""); r.Code == 0 || strings.Contains(r.Stdout, iqn) {
			t.Fatalf("discovery without credentials listed targets: %s", r)
		}
		if r := ls("disco", "wrong-secret-000"); r.Code == 0 || strings.Contains(r.Stdout, iqn) {
			t.Fatalf("discovery with a wrong secret listed targets: %s", r)
		}
		if r := ls("disco", secret); r.Code != 0 || !strings.Contains(r.Stdout, iqn) {
			t.Fatalf("discovery with the right secret: %s", r)
		}
	}
	check()
	d.Restart(false)
	check()
	d.OK("discovery", "chap", "--disable")
	if r := ls("", ""); r.Code != 0 || !strings.Contains(r.Stdout, iqn) {
		t.Fatalf("discovery after --disable: %s", r)
	}
	d.Fail(2, []string{"--disable takes no --user"}, "discovery", "chap", "--disable", "--user", "x")
}
