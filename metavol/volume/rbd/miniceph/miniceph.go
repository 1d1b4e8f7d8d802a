// Package miniceph starts and stops the single-node test cluster of
// scripts/mini-ceph.sh (one monitor, one OSD, auth none, on loopback) for
// the RBD tests of lmtgt's packages. It runs the script; it never touches a
// cluster it did not start.
package miniceph

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrMissing: the Ceph daemons are not installed (the tests skip).
var ErrMissing = errors.New("ceph-mon, ceph-osd or ceph (ceph-common) not installed; scripts/install-test-deps.sh installs them")

// Cluster is one running mini cluster.
type Cluster struct {
	Dir    string // its directory (logs in Dir/log)
	Conf   string // its ceph.conf: CEPH_CONF for clients
	script string
}

// Script returns the path of scripts/mini-ceph.sh, found from the
// working directory upwards (tests run in their package directory).
func Script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "mini-ceph.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", fmt.Errorf("miniceph: scripts/mini-ceph.sh not found above the working directory")
		}
		dir = up
	}
}

// Installed reports whether the Ceph daemons are there (ErrMissing if not).
func Installed() error {
	for _, c := range []string{"ceph-mon", "ceph-osd", "ceph", "rbd"} {
		if _, err := exec.LookPath(c); err != nil {
			return ErrMissing
		}
	}
	return nil
}

// Start starts a cluster in dir (created; its path must be short: the
// daemons' admin sockets live in it) on a free loopback port. objectstore
// is "memstore" or "bluestore" (survives an OSD restart).
func Start(dir, objectstore string) (*Cluster, error) {
	if err := Installed(); err != nil {
		return nil, err
	}
	script, err := Script()
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "ceph.conf"), script: script}
	if out, err := c.run("OBJECTSTORE="+objectstore, "start", dir, strconv.Itoa(port)); err != nil {
		c.Stop()
		return nil, fmt.Errorf("miniceph: start in %s: %w\n%s", dir, err, out)
	}
	return c, nil
}

func (c *Cluster) run(env string, args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{c.script}, args...)...)
	cmd.Env = append(os.Environ(), "CEPH_CONF="+c.Conf)
	if env != "" {
		cmd.Env = append(cmd.Env, env)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Stop stops the daemons and waits for them.
func (c *Cluster) Stop() error {
	if out, err := c.run("", "stop", c.Dir); err != nil {
		return fmt.Errorf("miniceph: stop: %w\n%s", err, out)
	}
	return nil
}

// StopOSD stops the OSD (I/O then waits or times out).
func (c *Cluster) StopOSD() error {
	if out, err := c.run("", "stop-osd", c.Dir); err != nil {
		return fmt.Errorf("miniceph: stop the OSD: %w\n%s", err, out)
	}
	return nil
}

// StartOSD starts the OSD again and waits until it is up.
func (c *Cluster) StartOSD() error {
	if out, err := c.run("", "start-osd", c.Dir); err != nil {
		return fmt.Errorf("miniceph: start the OSD: %w\n%s", err, out)
	}
	return nil
}

// Tool runs a Ceph command-line tool (rbd, ceph) against the cluster and
// returns its standard output.
func (c *Cluster) Tool(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "CEPH_CONF="+c.Conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}
