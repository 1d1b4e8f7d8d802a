//go:build rbd

package integration

import (
	"os/exec"
	"strings"
)

// rbdBuildTags are the tags of an lmtgt with RBD support on this machine:
// what scripts/rbd-tags.sh says (rbd plus go-ceph's Ceph release tag),
// the tags `make build` uses.
func rbdBuildTags() ([]string, error) {
	out, err := exec.Command("bash", "../scripts/rbd-tags.sh", "1").Output()
	if err != nil {
		return nil, err
	}
	return []string{"-tags", strings.TrimSpace(string(out))}, nil
}
