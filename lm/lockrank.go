package lm

import "fmt"

// Lock ranks: the documented lock order of package lm (doc.go), checked in
// builds with the tag lockrank (lockrank_on.go; `go test -race -tags
// lockrank -run TestLockOrder ./lm/`). A goroutine may take a lock only
// while every lock it holds has a lower or equal rank; locks of equal rank
// (the persist locks of the pairs of one split, the stripes of a range
// lock, the gates of a split) are taken in a fixed order of their own
// (pair ID, stripe number, the split's gate list). Without the tag, mutex
// and rwMutex are sync.Mutex and sync.RWMutex and the checks compile to
// nothing (lockrank_off.go).
type lockRank int

const (
	lockNone      lockRank = iota
	lockAdmin              // Manager.admin
	lockPersist            // pair.persist: held across the commits of a pair's record
	lockGate               // a LUN's I/O gate: entered by host I/O, closed by the split, attach, detach
	lockSync               // pair.syncMu
	lockRange              // the stripes of a pair's range lock
	lockPairMu             // pair.mu
	lockManagerMu          // Manager.mu (the maps)
)

var lockNames = [...]string{
	lockNone:      "none",
	lockAdmin:     "Manager.admin",
	lockPersist:   "pair.persist",
	lockGate:      "gate",
	lockSync:      "pair.syncMu",
	lockRange:     "range lock",
	lockPairMu:    "pair.mu",
	lockManagerMu: "Manager.mu",
}

func (r lockRank) String() string {
	if r >= 0 && int(r) < len(lockNames) {
		return lockNames[r]
	}
	return fmt.Sprintf("lockRank(%d)", int(r))
}

// ranker names the rank of a mutex type by its type parameter, so that a
// mutex needs no initialisation: mutex[rankPersist].
type ranker interface{ rank() lockRank }

type (
	rankAdmin     struct{}
	rankPersist   struct{}
	rankSync      struct{}
	rankPairMu    struct{}
	rankManagerMu struct{}
)

func (rankAdmin) rank() lockRank     { return lockAdmin }
func (rankPersist) rank() lockRank   { return lockPersist }
func (rankSync) rank() lockRank      { return lockSync }
func (rankPairMu) rank() lockRank    { return lockPairMu }
func (rankManagerMu) rank() lockRank { return lockManagerMu }
