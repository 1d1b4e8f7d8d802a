package lm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmtgt/lmtgt/metavol"
)

func TestLUNLifecycle(t *testing.T) {
	e := newEnv(t, Options{}, false)
	m := e.m
	bad := []CreateLUNRequest{
		{Name: "", Size: 1 << 20},
		{Name: "-x", Size: 1 << 20},
		{Name: "a b", Size: 1 << 20},
		{Name: "ok", Size: 0},
		{Name: "ok", Size: -512},
		{Name: "ok", Size: 1000},
		{Name: "ok", Size: 1 << 20, BlockSize: 1024},
		{Name: "ok", Size: 4096 + 512, BlockSize: 4096},
	}
	for _, r := range bad {
		if _, err := m.CreateLUN(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateLUN(%+v) = %v, want ErrInvalid", r, err)
		}
	}
	l := e.lun("db1", 8<<20)
	if l.BlockSize != 512 || len(l.NAA) != 32 || l.Serial == "" || l.VolumeID == "" {
		t.Fatalf("bad LUN record %+v", l)
	}
	if _, err := m.CreateLUN(CreateLUNRequest{Name: "db1", Size: 1 << 20}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "volumes", l.VolumeID+".img")); err != nil {
		t.Fatalf("volume file: %v", err)
	}
	h := e.handle(l)
	b := make([]byte, 4096)
	pattern(b, 7, 1)
	if _, err := h.WriteAt(b, 7*4096); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(b, 8<<20-100); err == nil {
		t.Fatal("write past the end succeeded")
	}

	// Existing file with Size 0 = its size; a new file at a path.
	p := filepath.Join(t.TempDir(), "ext.img")
	if err := os.WriteFile(p, make([]byte, 3<<20+100), 0o600); err != nil {
		t.Fatal(err)
	}
	ext, err := m.CreateLUN(CreateLUNRequest{Name: "ext", Path: p})
	if err != nil || ext.Size != 3<<20+0 {
		t.Fatalf("existing file: %+v %v", ext, err)
	}
	if _, err := m.CreateLUN(CreateLUNRequest{Name: "ext2", Path: p}); !errors.Is(err, ErrExists) {
		t.Fatalf("same path twice: %v", err)
	}
	p2 := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(p2, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateLUN(CreateLUNRequest{Name: "big", Path: p2, Size: 8 << 20}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("size larger than the file: %v", err)
	}
	// A new file is created in an existing directory, never with its
	// directories (the rule the admin API always applied).
	np := filepath.Join(t.TempDir(), "sub", "new.img")
	if _, err := m.CreateLUN(CreateLUNRequest{Name: "new", Path: np, Size: 1 << 20}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("new file in a missing directory: %v", err)
	}
	if err := os.Mkdir(filepath.Dir(np), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateLUN(CreateLUNRequest{Name: "new", Path: np, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}

	// Resize: grow only.
	if _, err := m.ResizeLUN("db1", 4<<20); !errors.Is(err, ErrInvalid) {
		t.Fatalf("shrink: %v", err)
	}
	if l2, err := m.ResizeLUN("db1", 16<<20); err != nil || l2.Size != 16<<20 || h.Size() != 16<<20 {
		t.Fatalf("grow: %+v %v size %d", l2, err, h.Size())
	}
	if _, err := m.ResizeLUN("nope", 16<<20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resize unknown: %v", err)
	}

	// Delete refused while mapped.
	if err := e.db.Update(func(tx *metavol.Tx) error {
		return tx.PutTarget(metavol.Target{IQN: "iqn.2024-01.test:t1", Mappings: []metavol.Mapping{{LUN: 0, LUNID: l.ID}}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteLUN("db1"); !errors.Is(err, ErrMapped) {
		t.Fatalf("delete mapped: %v", err)
	}
	if err := e.db.Update(func(tx *metavol.Tx) error { return tx.DeleteTarget("iqn.2024-01.test:t1") }); err != nil {
		t.Fatal(err)
	}

	// Everything survives a reopen.
	e.reopen()
	m = e.m
	h = e.handle(l)
	got := make([]byte, 4096)
	if _, err := h.ReadAt(got, 7*4096); err != nil || string(got) != string(b) {
		t.Fatalf("data after reopen: %v", err)
	}
	if h.Size() != 16<<20 {
		t.Fatalf("size after reopen %d", h.Size())
	}
	if err := m.DeleteLUN("db1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "volumes", l.VolumeID+".img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("owned volume file not deleted: %v", err)
	}
	if _, err := h.ReadAt(got, 0); err == nil {
		t.Fatal("I/O on a deleted LUN succeeded")
	}
	if err := m.DeleteLUN("ext"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("existing file deleted with its LUN: %v", err)
	}
	if err := m.DeleteLUN("db1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	_ = time.Second
}

// TestLUNNextData: the router handle reports the data extents of the LUN's
// current volume (GET LBA STATUS relies on it).
func TestLUNNextData(t *testing.T) {
	e := newEnv(t, Options{}, false)
	v := e.handle(e.lun("nd", 8<<20))
	nd, ok := v.(interface {
		NextData(off int64) (int64, int64, error)
	})
	if !ok {
		t.Fatalf("LUN handle %T has no NextData", v)
	}
	if _, err := v.WriteAt(bytes.Repeat([]byte{7}, 1<<20), 4<<20); err != nil {
		t.Fatal(err)
	}
	start, end, err := nd.NextData(0)
	if err != nil || start > 4<<20 || end < 5<<20 || end > 8<<20 {
		t.Fatalf("NextData(0) = [%d,%d) %v, want an extent covering [4 MiB, 5 MiB)", start, end, err)
	}
	if _, _, err := nd.NextData(6 << 20); !errors.Is(err, io.EOF) {
		t.Fatalf("NextData past the last data: err %v, want io.EOF", err)
	}
}
