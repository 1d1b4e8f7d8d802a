package lm

import (
	"errors"
	"io"
)

// extentWalker is what allocatedBytes needs of a data volume.
type extentWalker interface {
	NextData(off int64) (start, end int64, err error)
}

// allocatedBytes is the number of bytes in [from, to) that the volume's
// extents hold data for (SEEK_DATA/SEEK_HOLE): what a copy of that range
// would read and write. A volume without hole tracking (a block device, a
// remote LUN) reports the whole range.
func allocatedBytes(v extentWalker, from, to int64) (int64, error) {
	var n int64
	for off := from; off < to; {
		s, e, err := v.NextData(off)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if s >= to {
			break
		}
		e = min(e, to)
		if e <= s {
			break
		}
		n += e - s
		off = e
	}
	return n, nil
}
