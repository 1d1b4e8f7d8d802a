package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	rbdvol "github.com/lmtgt/lmtgt/metavol/volume/rbd"
)

// versionInfo is what `lmtgt version` prints: the Makefile's
// -X main.version when set, else the module version from the build info;
// the VCS revision and whether the tree was modified; the Go version.
type versionInfo struct {
	Version   string `json:"version"`
	Module    string `json:"module,omitempty"`
	Revision  string `json:"revision,omitempty"`
	Time      string `json:"vcs_time,omitempty"`
	Modified  bool   `json:"modified"`
	GoVersion string `json:"go_version"`
	// RBD says whether Ceph RBD data volumes are built in (the rbd build
	// tag, metavol/volume/rbd).
	RBD bool `json:"rbd"`
}

// revision is the commit the Makefile builds (-X main.revision=...): the
// revision `lmtgt version` shows when the build info has none (go build
// -buildvcs=false, or a tree without .git).
var revision = ""

// buildVersion reads the build info of the running binary; ldflags is
// main.version ("dev" when the Makefile did not set it).
func buildVersion(ldflags string) versionInfo {
	v := versionInfo{Version: ldflags, GoVersion: runtime.Version(), RBD: rbdvol.Built, Revision: revision}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Module = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	if v.Revision == revision && revision != "" && strings.HasSuffix(v.Version, "-dirty") {
		v.Modified = true // the Makefile's `git describe --dirty`
	}
	if v.Version == "" || v.Version == "dev" {
		switch {
		case v.Module != "" && v.Module != "(devel)":
			v.Version = v.Module
		case v.Revision != "":
			v.Version = "dev-" + shortRev(v.Revision)
			if v.Modified {
				v.Version += "-dirty"
			}
		}
	}
	return v
}

func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}

// String is the one-line form (also what --version prints).
func (v versionInfo) String() string {
	s := v.Version
	if v.Revision != "" {
		s += " (revision " + shortRev(v.Revision)
		if v.Modified {
			s += ", modified"
		}
		s += ")"
	}
	s += " " + v.GoVersion
	if v.RBD {
		return s + ", RBD built in"
	}
	return s + ", without RBD"
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, VCS revision and Go version of this binary",
		Flags: []cli.Flag{outputFlag},
		Action: func(c *cli.Context) error {
			if err := args0(c); err != nil {
				return err
			}
			asJSON, err := jsonOutput(c)
			if err != nil {
				return err
			}
			v := buildVersion(version)
			if asJSON {
				return printJSON(c.App.Writer, v)
			}
			fmt.Fprintf(c.App.Writer, "lmtgt %s\n", v)
			return nil
		},
	}
}
