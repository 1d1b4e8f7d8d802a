package crashfs

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// State is where a mounted FS is in its life.
type State int

const (
	// Running: ops are applied; fsyncs make data and entries durable.
	Running State = iota
	// Cut: the power was cut. The durable image is frozen; the mount keeps
	// serving (or fails every op with FailAfterCut), but nothing done from
	// now on reaches the image.
	Cut
	// Down: Crash or Unmount ran; every op fails with EIO and the backing
	// directory holds the image.
	Down
)

func (s State) String() string {
	switch s {
	case Running:
		return "running"
	case Cut:
		return "cut"
	case Down:
		return "down"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// pageSize is the unit of partial writeback.
const pageSize = 4096

// extent is a byte range [off, end).
type extent struct{ off, end int64 }

// addExtent merges [off,end) into the sorted, disjoint list xs.
func addExtent(xs []extent, off, end int64) []extent {
	if off >= end {
		return xs
	}
	out := make([]extent, 0, len(xs)+1)
	i := 0
	for ; i < len(xs) && xs[i].end < off; i++ {
		out = append(out, xs[i])
	}
	for ; i < len(xs) && xs[i].off <= end; i++ {
		off = min(off, xs[i].off)
		end = max(end, xs[i].end)
	}
	out = append(out, extent{off, end})
	return append(out, xs[i:]...)
}

// node is one inode of the model. Every field is guarded by fsys.mu.
type node struct {
	id   uint64
	dir  bool
	perm uint32

	// Directories: the current entries and the durable ones (a copy of the
	// current ones taken by the last fsync of the directory).
	kids  map[string]*node
	dkids map[string]*node

	// Files: the live content (what the mount shows), its size, the byte
	// ranges written since the last fsync, and the durable content (a
	// sparse file, durSize bytes; absent = empty).
	live    *os.File
	size    int64
	dirty   []extent
	durPath string
	durSize int64
	hasDur  bool

	// Size changes by truncate or fallocate since the last fsync: metadata
	// an OrderedMetadata journal commit makes durable (the lowest size
	// reached, then the last one).
	metaDirty bool
	metaMin   int64
	metaSize  int64

	links   int    // current names: 0 or 1 (no hard links)
	nlookup uint64 // the kernel's references
}

// fsys is the FUSE file system of one mount; it runs in the server process.
// One mutex orders every op: the op sequence is the state the crash points
// and the durable image are defined on, so serialising it is the point (a
// test tool, not a fast path). Reads of file data run outside the lock.
type fsys struct {
	fuse.RawFileSystem

	store string // private work dir: live and durable content by node id
	opts  Options

	mu struct {
		sync.Mutex
		state State
		nodes map[uint64]*node
		next  uint64
		ops   int64
		cutAt int64 // the op number the power was cut before (0 = not cut)
		rng   *rand.Rand
	}
}

func newFsys(store string, opts Options) *fsys {
	f := &fsys{RawFileSystem: fuse.NewDefaultRawFileSystem(), store: store, opts: opts}
	f.mu.nodes = make(map[uint64]*node)
	f.mu.next = fuse.FUSE_ROOT_ID
	f.mu.rng = rand.New(rand.NewPCG(uint64(opts.Seed), 0x63726173686673))
	root := f.newNodeLocked(true, 0o755)
	root.links = 1
	return f
}

func (f *fsys) String() string { return "crashfs" }

func (f *fsys) newNodeLocked(dir bool, perm uint32) *node {
	n := &node{id: f.mu.next, dir: dir, perm: perm & 0o7777}
	f.mu.next++
	if dir {
		n.kids = make(map[string]*node)
		n.dkids = make(map[string]*node)
	} else {
		n.durPath = filepath.Join(f.store, strconv.FormatUint(n.id, 10)+".durable")
	}
	f.mu.nodes[n.id] = n
	return n
}

// newFileLocked makes a file node with an empty live file.
func (f *fsys) newFileLocked(perm uint32) (*node, error) {
	n := f.newNodeLocked(false, perm)
	lf, err := os.OpenFile(filepath.Join(f.store, strconv.FormatUint(n.id, 10)+".live"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		delete(f.mu.nodes, n.id)
		return nil, err
	}
	n.live = lf
	return n, nil
}

// importTree loads the backing directory: every entry and byte in it is
// durable.
func (f *fsys) importTree(backing string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.importDirLocked(backing, f.mu.nodes[fuse.FUSE_ROOT_ID])
}

func (f *fsys) importDirLocked(path string, d *node) error {
	ents, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(path, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var n *node
		switch {
		case fi.IsDir():
			n = f.newNodeLocked(true, uint32(fi.Mode().Perm()))
			if err := f.importDirLocked(p, n); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			n, err = f.newFileLocked(uint32(fi.Mode().Perm()))
			if err != nil {
				return err
			}
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			err = copySparse(src, n.live, 0, fi.Size())
			if err == nil {
				err = n.live.Truncate(fi.Size())
			}
			if err == nil {
				err = f.writeDurableLocked(n, src, fi.Size())
			}
			src.Close()
			if err != nil {
				return fmt.Errorf("import %s: %w", p, err)
			}
			n.size = fi.Size()
		default:
			return fmt.Errorf("import %s: only files and directories are supported", p)
		}
		n.links = 1
		d.kids[e.Name()] = n
		d.dkids[e.Name()] = n
	}
	return nil
}

// writeDurableLocked makes the durable content of n the first size bytes of
// src.
func (f *fsys) writeDurableLocked(n *node, src *os.File, size int64) error {
	d, err := os.OpenFile(n.durPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := copySparse(src, d, 0, size); err != nil {
		return err
	}
	if err := d.Truncate(size); err != nil {
		return err
	}
	n.durSize, n.hasDur = size, true
	return nil
}

// syncFileLocked makes n's live content durable: the dirty ranges are
// copied into the durable content, which takes the live size.
func (f *fsys) syncFileLocked(n *node) error {
	if len(n.dirty) == 0 && n.durSize == n.size {
		return nil
	}
	d, err := os.OpenFile(n.durPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer d.Close()
	for _, e := range n.dirty {
		end := min(e.end, n.size)
		if e.off < end {
			if err := copySparse(n.live, d, e.off, end); err != nil {
				return err
			}
		}
	}
	if err := d.Truncate(n.size); err != nil {
		return err
	}
	n.dirty = nil
	n.durSize, n.hasDur = n.size, true
	n.metaDirty = false
	return nil
}

// noteSizeChange records an explicit size change (truncate, fallocate)
// from n.size to size.
func (n *node) noteSizeChange(size int64) {
	if !n.metaDirty {
		n.metaDirty, n.metaMin = true, n.size
	}
	n.metaMin = min(n.metaMin, size)
	n.metaSize = size
}

// partialWritebackLocked writes back a random half of the unsynced pages
// of every file, as the kernel may have done before the power went. Only
// pages inside the durable size are kept (the size itself is metadata
// that needs an fsync).
func (f *fsys) partialWritebackLocked() error {
	ids := make([]uint64, 0, len(f.mu.nodes))
	for id := range f.mu.nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		n := f.mu.nodes[id]
		if n.dir || len(n.dirty) == 0 || !n.hasDur {
			continue
		}
		limit := min(n.size, n.durSize)
		d, err := os.OpenFile(n.durPath, os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		for _, e := range n.dirty {
			for p := e.off &^ (pageSize - 1); p < min(e.end, limit); p += pageSize {
				if f.mu.rng.IntN(2) == 0 {
					continue
				}
				if err := copySparse(n.live, d, p, min(p+pageSize, limit)); err != nil {
					d.Close()
					return err
				}
			}
		}
		if err := d.Close(); err != nil {
			return err
		}
	}
	return nil
}

// stepLocked counts one op that changes the file system and reports
// whether it may run. The power is cut before op CrashAtOp.
func (f *fsys) stepLocked() fuse.Status {
	switch f.mu.state {
	case Down:
		return fuse.EIO
	case Cut:
		if f.opts.FailAfterCut {
			return fuse.EIO
		}
		return fuse.OK
	}
	f.mu.ops++
	if f.opts.BackgroundCommits && f.mu.rng.IntN(8) == 0 {
		if err := f.commitJournalLocked(); err != nil {
			return fuse.EIO
		}
	}
	if f.opts.CrashAtOp > 0 && f.mu.ops >= f.opts.CrashAtOp {
		if err := f.cutLocked(); err != nil {
			return fuse.EIO
		}
		if f.opts.FailAfterCut {
			return fuse.EIO
		}
	}
	return fuse.OK
}

// cutLocked cuts the power: the durable image is frozen from now on.
func (f *fsys) cutLocked() error {
	if f.mu.state != Running {
		return nil
	}
	f.mu.state = Cut
	f.mu.cutAt = f.mu.ops
	if f.opts.PartialWriteback {
		return f.partialWritebackLocked()
	}
	return nil
}

// durableLocked reports whether fsyncs still change the image.
func (f *fsys) durableLocked() bool { return f.mu.state == Running }

func (f *fsys) nodeLocked(id uint64) (*node, fuse.Status) {
	if f.mu.state == Down {
		return nil, fuse.EIO
	}
	n := f.mu.nodes[id]
	if n == nil {
		return nil, fuse.ENOENT
	}
	return n, fuse.OK
}

func (f *fsys) dirLocked(id uint64) (*node, fuse.Status) {
	n, st := f.nodeLocked(id)
	if !st.Ok() {
		return nil, st
	}
	if !n.dir {
		return nil, fuse.ENOTDIR
	}
	return n, fuse.OK
}

// fileLocked is nodeLocked for the ops on a regular file (EISDIR on a
// directory).
func (f *fsys) fileLocked(id uint64) (*node, fuse.Status) {
	n, st := f.nodeLocked(id)
	if !st.Ok() {
		return nil, st
	}
	if n.dir {
		return nil, fuse.Status(syscall.EISDIR)
	}
	return n, fuse.OK
}

func (f *fsys) attrLocked(n *node, a *fuse.Attr) {
	*a = fuse.Attr{Ino: n.id, Blksize: pageSize}
	a.Nlink = uint32(n.links)
	if n.dir {
		a.Mode = syscall.S_IFDIR | n.perm
		a.Nlink = 2
		a.Size = 4096
		return
	}
	a.Mode = syscall.S_IFREG | n.perm
	a.Size = uint64(n.size)
	var st unix.Stat_t
	if err := unix.Fstat(int(n.live.Fd()), &st); err == nil {
		a.Blocks = uint64(st.Blocks)
		a.Mtime, a.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
		a.Ctime, a.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
		a.Atime, a.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	}
}

func (f *fsys) entryLocked(n *node, out *fuse.EntryOut) {
	n.nlookup++
	out.NodeId = n.id
	out.Generation = 1
	out.EntryValid, out.EntryValidNsec = 0, 0
	out.AttrValid, out.AttrValidNsec = 0, 0
	f.attrLocked(n, &out.Attr)
}

func errnoStatus(err error) fuse.Status {
	var en syscall.Errno
	if errors.As(err, &en) {
		return fuse.Status(en)
	}
	return fuse.EIO
}

func (f *fsys) Lookup(_ <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, st := f.dirLocked(h.NodeId)
	if !st.Ok() {
		return st
	}
	n := d.kids[name]
	if n == nil {
		return fuse.ENOENT
	}
	f.entryLocked(n, out)
	return fuse.OK
}

func (f *fsys) Forget(id, nlookup uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := f.mu.nodes[id]; n != nil {
		n.nlookup -= min(n.nlookup, nlookup)
	}
}

func (f *fsys) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st := f.nodeLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	out.AttrValid, out.AttrValidNsec = 0, 0
	f.attrLocked(n, &out.Attr)
	return fuse.OK
}

func (f *fsys) SetAttr(_ <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st := f.nodeLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		if n.dir {
			return fuse.Status(syscall.EISDIR)
		}
		if st := f.truncateLocked(n, int64(in.Size)); !st.Ok() {
			return st
		}
	}
	if in.Valid&fuse.FATTR_MODE != 0 {
		n.perm = in.Mode & 0o7777
	}
	out.AttrValid, out.AttrValidNsec = 0, 0
	f.attrLocked(n, &out.Attr)
	return fuse.OK
}

// truncateLocked is one op (stepLocked) that sets file n's size.
func (f *fsys) truncateLocked(n *node, size int64) fuse.Status {
	if st := f.stepLocked(); !st.Ok() {
		return st
	}
	if err := n.live.Truncate(size); err != nil {
		return errnoStatus(err)
	}
	n.dirty = addExtent(n.dirty, min(size, n.size), max(size, n.size))
	n.noteSizeChange(size)
	n.size = size
	return fuse.OK
}

func (f *fsys) Mkdir(_ <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, st := f.dirLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	if d.kids[name] != nil {
		return fuse.Status(syscall.EEXIST)
	}
	if st := f.stepLocked(); !st.Ok() {
		return st
	}
	n := f.newNodeLocked(true, in.Mode)
	n.links = 1
	d.kids[name] = n
	f.entryLocked(n, out)
	return fuse.OK
}

func (f *fsys) Unlink(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.remove(h.NodeId, name, false)
}

func (f *fsys) Rmdir(_ <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return f.remove(h.NodeId, name, true)
}

func (f *fsys) remove(parent uint64, name string, dir bool) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, st := f.dirLocked(parent)
	if !st.Ok() {
		return st
	}
	n := d.kids[name]
	if n == nil {
		return fuse.ENOENT
	}
	switch {
	case dir && !n.dir:
		return fuse.ENOTDIR
	case !dir && n.dir:
		return fuse.Status(syscall.EISDIR)
	case dir && len(n.kids) > 0:
		return fuse.Status(syscall.ENOTEMPTY)
	}
	if st := f.stepLocked(); !st.Ok() {
		return st
	}
	delete(d.kids, name)
	n.links = 0
	return fuse.OK
}

func (f *fsys) Rename(_ <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.Flags&^uint32(unix.RENAME_NOREPLACE) != 0 {
		return fuse.EINVAL
	}
	od, st := f.dirLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	nd, st := f.dirLocked(in.Newdir)
	if !st.Ok() {
		return st
	}
	n := od.kids[oldName]
	if n == nil {
		return fuse.ENOENT
	}
	if old := nd.kids[newName]; old != nil {
		switch {
		case old == n:
			return fuse.OK
		case in.Flags&unix.RENAME_NOREPLACE != 0:
			return fuse.Status(syscall.EEXIST)
		case old.dir && !n.dir:
			return fuse.Status(syscall.EISDIR)
		case !old.dir && n.dir:
			return fuse.ENOTDIR
		case old.dir && len(old.kids) > 0:
			return fuse.Status(syscall.ENOTEMPTY)
		}
	}
	if n.dir && f.isUnderLocked(nd, n) {
		return fuse.EINVAL
	}
	if st := f.stepLocked(); !st.Ok() {
		return st
	}
	if old := nd.kids[newName]; old != nil {
		old.links = 0
	}
	delete(od.kids, oldName)
	nd.kids[newName] = n
	return fuse.OK
}

// isUnderLocked reports whether d is a or lies below a in the current tree.
func (f *fsys) isUnderLocked(d, a *node) bool {
	if d == a {
		return true
	}
	for _, k := range a.kids {
		if k.dir && f.isUnderLocked(d, k) {
			return true
		}
	}
	return false
}

func (f *fsys) Create(_ <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, st := f.dirLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	if n := d.kids[name]; n != nil {
		if in.Flags&syscall.O_EXCL != 0 {
			return fuse.Status(syscall.EEXIST)
		}
		if n.dir {
			return fuse.Status(syscall.EISDIR)
		}
		if in.Flags&syscall.O_TRUNC != 0 {
			if st := f.truncateLocked(n, 0); !st.Ok() {
				return st
			}
		}
		f.entryLocked(n, &out.EntryOut)
		out.Fh = n.id
		return fuse.OK
	}
	if st := f.stepLocked(); !st.Ok() {
		return st
	}
	n, err := f.newFileLocked(in.Mode)
	if err != nil {
		return errnoStatus(err)
	}
	n.links = 1
	d.kids[name] = n
	f.entryLocked(n, &out.EntryOut)
	out.Fh = n.id
	return fuse.OK
}

func (f *fsys) Open(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st := f.fileLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	if in.Flags&syscall.O_TRUNC != 0 && in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if st := f.truncateLocked(n, 0); !st.Ok() {
			return st
		}
	}
	out.Fh = n.id
	return fuse.OK
}

func (f *fsys) Read(_ <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	f.mu.Lock()
	n, st := f.nodeLocked(in.NodeId)
	var lf *os.File
	if st.Ok() {
		lf = n.live
	}
	f.mu.Unlock()
	if !st.Ok() {
		return nil, st
	}
	if lf == nil {
		return nil, fuse.Status(syscall.EISDIR)
	}
	k, err := lf.ReadAt(buf[:min(len(buf), int(in.Size))], int64(in.Offset))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fuse.EIO
	}
	return fuse.ReadResultData(buf[:k]), fuse.OK
}

func (f *fsys) Write(_ <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st := f.fileLocked(in.NodeId)
	if !st.Ok() {
		return 0, st
	}
	if st := f.stepLocked(); !st.Ok() {
		return 0, st
	}
	off := int64(in.Offset)
	k, err := n.live.WriteAt(data, off)
	end := off + int64(k)
	n.dirty = addExtent(n.dirty, off, end)
	if end > n.size {
		n.dirty = addExtent(n.dirty, n.size, end)
		n.size = end
	}
	if err != nil {
		return uint32(k), errnoStatus(err)
	}
	return uint32(k), fuse.OK
}

func (f *fsys) Fallocate(_ <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st := f.fileLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	if st := f.stepLocked(); !st.Ok() {
		return st
	}
	off, end := int64(in.Offset), int64(in.Offset+in.Length)
	if err := unix.Fallocate(int(n.live.Fd()), in.Mode, off, int64(in.Length)); err != nil {
		return errnoStatus(err)
	}
	n.dirty = addExtent(n.dirty, off, end)
	if in.Mode&unix.FALLOC_FL_KEEP_SIZE == 0 && end > n.size {
		n.dirty = addExtent(n.dirty, n.size, end)
		n.noteSizeChange(end)
		n.size = end
	}
	return fuse.OK
}

func (f *fsys) Fsync(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st := f.nodeLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	return f.fsyncLocked(n)
}

// fsyncLocked is fsync(2) of n (a file or a directory): one op; while the
// power is on it commits the journal and makes n durable.
func (f *fsys) fsyncLocked(n *node) fuse.Status {
	if st := f.stepLocked(); !st.Ok() {
		return st
	}
	if !f.durableLocked() {
		return fuse.OK
	}
	if err := f.commitJournalLocked(); err != nil {
		return errnoStatus(err)
	}
	if err := f.syncLocked(n); err != nil {
		return errnoStatus(err)
	}
	return fuse.OK
}

// syncLocked makes n's current state durable: a directory's entries, a
// file's data and size.
func (f *fsys) syncLocked(n *node) error {
	if n.dir {
		f.syncDirLocked(n)
		return nil
	}
	return f.syncFileLocked(n)
}

// commitJournalLocked: with OrderedMetadata an fsync commits the journal:
// every directory's entries and every explicit size change (the bytes a
// truncate cut off are gone, those it added read as zeros; data written
// since the file's last fsync is not committed).
func (f *fsys) commitJournalLocked() error {
	if !f.opts.OrderedMetadata {
		return nil
	}
	for _, n := range f.mu.nodes {
		if n.dir {
			f.syncDirLocked(n)
			continue
		}
		if !n.metaDirty {
			continue
		}
		d, err := os.OpenFile(n.durPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		err = d.Truncate(min(n.durSize, n.metaMin))
		if err == nil {
			err = d.Truncate(n.metaSize)
		}
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		n.durSize, n.hasDur, n.metaDirty = n.metaSize, true, false
	}
	return nil
}

func (f *fsys) syncDirLocked(d *node) {
	d.dkids = make(map[string]*node, len(d.kids))
	for name, k := range d.kids {
		d.dkids[name] = k
	}
}

func (f *fsys) FsyncDir(_ <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, st := f.dirLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	return f.fsyncLocked(d)
}

func (f *fsys) Flush(_ <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, st := f.nodeLocked(in.NodeId)
	return st
}

func (f *fsys) Release(_ <-chan struct{}, _ *fuse.ReleaseIn) {}

func (f *fsys) OpenDir(_ <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, st := f.dirLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	out.Fh = d.id
	return fuse.OK
}

func (f *fsys) ReadDir(_ <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, st := f.dirLocked(in.NodeId)
	if !st.Ok() {
		return st
	}
	names := make([]string, 0, len(d.kids))
	for name := range d.kids {
		names = append(names, name)
	}
	sort.Strings(names)
	ents := []fuse.DirEntry{{Name: ".", Mode: syscall.S_IFDIR, Ino: d.id}, {Name: "..", Mode: syscall.S_IFDIR, Ino: fuse.FUSE_ROOT_ID}}
	for _, name := range names {
		k := d.kids[name]
		mode := uint32(syscall.S_IFREG)
		if k.dir {
			mode = syscall.S_IFDIR
		}
		ents = append(ents, fuse.DirEntry{Name: name, Mode: mode, Ino: k.id})
	}
	for i := int(in.Offset); i < len(ents); i++ {
		e := ents[i]
		e.Off = uint64(i + 1)
		if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (f *fsys) ReleaseDir(_ *fuse.ReleaseIn) {}

func (f *fsys) StatFs(_ <-chan struct{}, _ *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	var st unix.Statfs_t
	if err := unix.Statfs(f.store, &st); err != nil {
		return errnoStatus(err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize, out.NameLen = uint32(st.Bsize), uint32(st.Frsize), 255
	return fuse.OK
}

// down stops the FS: the power is cut if it was not, and every later op
// fails. clean says the current state is to be kept (a clean unmount):
// every file and directory is synced first.
func (f *fsys) down(clean bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.state == Down {
		return fmt.Errorf("crashfs: already down")
	}
	if clean && f.mu.state == Running {
		for _, n := range f.mu.nodes {
			if err := f.syncLocked(n); err != nil {
				return err
			}
		}
	}
	if err := f.cutLocked(); err != nil {
		return err
	}
	f.mu.state = Down
	return nil
}

// writeImage replaces the contents of backing with the durable image.
// Called after down, when no op touches the model any more.
func (f *fsys) writeImage(backing string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ents, err := os.ReadDir(backing)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(backing, e.Name())); err != nil {
			return err
		}
	}
	seen := map[*node]bool{}
	if err := f.writeDirLocked(backing, f.mu.nodes[fuse.FUSE_ROOT_ID], seen); err != nil {
		return err
	}
	for _, n := range f.mu.nodes {
		if n.live != nil {
			n.live.Close()
		}
	}
	return nil
}

func (f *fsys) writeDirLocked(path string, d *node, seen map[*node]bool) error {
	seen[d] = true
	for name, n := range d.dkids {
		p := filepath.Join(path, name)
		if n.dir {
			if seen[n] {
				continue // a directory durable under two names: keep one
			}
			if err := os.Mkdir(p, os.FileMode(n.perm&0o777)|0o700); err != nil {
				return err
			}
			if err := f.writeDirLocked(p, n, seen); err != nil {
				return err
			}
			continue
		}
		out, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, os.FileMode(n.perm&0o777)|0o600)
		if err != nil {
			return err
		}
		if n.hasDur {
			var src *os.File
			src, err = os.Open(n.durPath)
			if err == nil {
				err = copySparse(src, out, 0, n.durSize)
				src.Close()
			}
			if err == nil {
				err = out.Truncate(n.durSize)
			}
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// copySparse copies [off,end) of src to the same offsets of dst, punching
// holes in dst where src has holes.
func copySparse(src, dst *os.File, off, end int64) error {
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	for pos := off; pos < end; {
		data, err := unix.Seek(sfd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = end
		} else if err != nil {
			return err
		}
		data = min(data, end)
		if data > pos {
			if err := unix.Fallocate(dfd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, pos, data-pos); err != nil {
				return fmt.Errorf("punch hole: %w", err)
			}
			pos = data
			if pos >= end {
				break
			}
		}
		hole, err := unix.Seek(sfd, pos, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, end)
		if err := copyData(src, dst, pos, hole); err != nil {
			return err
		}
		pos = hole
	}
	return nil
}

func copyData(src, dst *os.File, off, end int64) error {
	buf := make([]byte, min(end-off, 1<<20))
	for off < end {
		n := min(int64(len(buf)), end-off)
		k, err := src.ReadAt(buf[:n], off)
		if k > 0 {
			if _, werr := dst.WriteAt(buf[:k], off); werr != nil {
				return werr
			}
			off += int64(k)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
	return nil
}
