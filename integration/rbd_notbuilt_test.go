//go:build !rbd

package integration

import (
	"strings"
	"testing"
)

// A binary built without the rbd tag serves everything else, says so in
// `lmtgt version`, and refuses --rbd with how to build it in.
func TestRBDNotBuilt(t *testing.T) {
	d := StartDaemon(t, "")
	if out := d.OK("version"); !strings.Contains(out, "without RBD") {
		t.Fatalf("lmtgt version of a build without rbd: %q", out)
	}
	d.Fail(1, []string{"lun x", "built without RBD support", "-tags rbd"}, "lun", "create", "x", "--rbd", "rbd/x", "--size", "1MiB")
	if r := d.Run("lun", "show", "x"); r.Code == 0 {
		t.Fatal("the refused LUN exists")
	}
	d.OK("lun", "create", "y", "--size", "1MiB")
}
