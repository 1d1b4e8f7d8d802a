package integration

import (
	"errors"
	"fmt"
	"github.com/lmtgt/lmtgt/target/api/wire"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTargetDeleteClosesSessions: `target delete --force` ends the sessions
// logged in to that target (the initiator's connection closes); a session of
// another target is left alone.
func TestTargetDeleteClosesSessions(t *testing.T) {
	d := StartDaemon(t, "")
	gone := d.Export("del1", "8MiB", 512)
	kept := d.Export("del2", "8MiB", 512)
	login := func(iqn string, isid byte) (rcLoginResp, interface {
		io.Reader
		SetReadDeadline(time.Time) error
		Close() error
	}) {
		keys := []string{"InitiatorName=iqn.2026-11.org.lmtgt.test:del-host", "TargetName=" + iqn, "SessionType=Normal", "AuthMethod=None"}
		r, c := rcLogin(t, d.Portal, [6]byte{0x80, 0, 0, 0, 0, isid}, 0, rcTransit|rcCSGSecurity|rcNSGFFP, keys...)
		t.Cleanup(func() { c.Close() })
		if r.opcode != rcOpLoginResp || r.class != 0 {
			t.Fatalf("login to %s: opcode %#x status %d/%#x", iqn, r.opcode, r.class, r.detail)
		}
		return r, c
	}
	_, cg := login(gone, 1)
	_, ck := login(kept, 2)

	d.OK("target", "delete", gone, "--force")

	cg.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [48]byte
	if _, err := io.ReadFull(cg, b[:]); err != io.EOF && err != io.ErrUnexpectedEOF && !isConnReset(err) {
		t.Fatalf("session of the deleted target %s: read gave %v, want the connection closed", gone, err)
	}
	// The other target's session is still open: nothing arrives, the read
	// times out.
	ck.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := io.ReadFull(ck, b[:1]); !isTimeout(err) {
		t.Fatalf("session of %s after deleting %s: read gave %v, want it still open (timeout)", kept, gone, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isConnReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestTargetShowSessions: `target show` lists the sessions logged in now,
// with the initiator and its address, and forgets them after logout.
func TestTargetShowSessions(t *testing.T) {
	d := StartDaemon(t, "")
	iqn := d.Export("ss1", "8MiB", 512)
	var v wire.Target
	d.JSON(&v, "target", "show", iqn)
	if len(v.Sessions) != 0 {
		t.Fatalf("target show before any login: sessions %+v", v.Sessions)
	}
	host := "iqn.2026-11.org.lmtgt.test:show-host"
	keys := []string{"InitiatorName=" + host, "TargetName=" + iqn, "SessionType=Normal", "AuthMethod=None"}
	r, c := rcLogin(t, d.Portal, [6]byte{0x80, 0, 0, 0, 0, 9}, 0, rcTransit|rcCSGSecurity|rcNSGFFP, keys...)
	if r.class != 0 {
		t.Fatalf("login: status %d/%#x", r.class, r.detail)
	}
	d.JSON(&v, "target", "show", iqn)
	if len(v.Sessions) != 1 || v.Sessions[0].Initiator != host || v.Sessions[0].TSIH != r.tsih || v.Sessions[0].Remote == "" {
		t.Fatalf("target show with one session (TSIH %d): %+v", r.tsih, v.Sessions)
	}
	if out := d.OK("target", "show", iqn); !strings.Contains(out, host) {
		t.Fatalf("target show (table) does not list the session of %s:\n%s", host, out)
	}
	c.Close()
	waitFor(t, 10*time.Second, "target show: no session after the connection closed", func() (bool, string) {
		v.Sessions = nil // an absent "sessions" leaves the field as it was
		d.JSON(&v, "target", "show", iqn)
		return len(v.Sessions) == 0, fmt.Sprintf("sessions %+v", v.Sessions)
	})
}
