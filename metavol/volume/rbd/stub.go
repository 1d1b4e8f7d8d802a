//go:build !rbd

package rbd

import "fmt"

// Built reports whether this binary has RBD support.
const Built = false

// Cluster is a connection to a Ceph cluster. Without RBD support every
// method fails with ErrNotBuilt.
type Cluster struct{}

// Connect fails: this binary has no RBD support.
func Connect(cfg Config) (*Cluster, error) {
	return nil, fmt.Errorf("ceph cluster %s: %w", cfg, ErrNotBuilt)
}

// Create fails with ErrNotBuilt.
func (c *Cluster) Create(ref Ref, size int64) error {
	return fmt.Errorf("rbd %s: %w", ref, ErrNotBuilt)
}

// Remove fails with ErrNotBuilt.
func (c *Cluster) Remove(ref Ref) error { return fmt.Errorf("rbd %s: %w", ref, ErrNotBuilt) }

// Open fails with ErrNotBuilt.
func (c *Cluster) Open(ref Ref, opts OpenOptions) (*Volume, error) {
	return nil, fmt.Errorf("rbd %s: %w", ref, ErrNotBuilt)
}

// State is "not built".
func (c *Cluster) State() string { return "not built" }

// Close does nothing.
func (c *Cluster) Close() error { return nil }

// Volume is an RBD image. Without RBD support none can be opened.
type Volume struct{}

// ReadAt fails with ErrNotBuilt (no Volume exists without RBD support).
func (v *Volume) ReadAt(p []byte, off int64) (int, error) { return 0, ErrNotBuilt }

// WriteAt fails with ErrNotBuilt.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) { return 0, ErrNotBuilt }

// Unmap fails with ErrNotBuilt.
func (v *Volume) Unmap(off, length int64) error { return ErrNotBuilt }

// Sync fails with ErrNotBuilt.
func (v *Volume) Sync() error { return ErrNotBuilt }

// Size is 0.
func (v *Volume) Size() int64 { return 0 }

// Close does nothing.
func (v *Volume) Close() error { return nil }

// NextData fails with ErrNotBuilt.
func (v *Volume) NextData(off int64) (start, end int64, err error) { return 0, 0, ErrNotBuilt }

// Resize fails with ErrNotBuilt.
func (v *Volume) Resize(size int64) error { return ErrNotBuilt }

// Ref is empty.
func (v *Volume) Ref() Ref { return Ref{} }

// LockState is "not built".
func (v *Volume) LockState() string { return "not built" }
