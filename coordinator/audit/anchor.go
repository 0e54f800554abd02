package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// Anchor keeps the log's head (the last entry's sequence number and hash)
// outside the log: the coordinator's job store, beside the runs the entries
// describe. The chain alone cannot show entries cut from the end, an emptied
// log, or a log replaced by another valid chain; a head kept elsewhere can.
type Anchor interface {
	// LoadAuditHead returns the recorded head; anchored is false when no
	// head was ever recorded.
	LoadAuditHead(ctx context.Context) (seq uint64, hash string, anchored bool, err error)
	// StoreAuditHead records a new head.
	StoreAuditHead(ctx context.Context, seq uint64, hash string) error
}

// Head is a position in a log: an entry's sequence number and hash. The
// head of an empty log is {0, ZeroHash}.
type Head struct {
	Seq  uint64
	Hash string
}

func (h Head) String() string { return fmt.Sprintf("entry %d (hash %s)", h.Seq, h.Hash) }

// MismatchError says that a log and its anchor disagree.
type MismatchError struct {
	Log    Head // where the log ends
	Anchor Head // what the anchor recorded
	Reason string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("audit log ends at %s but the job store anchored %s: %s", e.Log, e.Anchor, e.Reason)
}

// CheckAgainst compares a verified log, given by its entries' hashes in
// order (hashes[i] is entry i+1's), with an anchored head. The log must hold
// the anchored entry with the anchored hash: fewer entries means entries cut
// from the end or an emptied log, another hash means a log rewritten or
// replaced. Entries after the anchored one are not an error (the anchor is
// committed to the store without waiting for the disk, so a power cut can
// leave it behind the log, whose every entry is synced); ahead says how many
// there are.
func CheckAgainst(hashes []string, anchor Head) (ahead uint64, err error) {
	n := uint64(len(hashes))
	logHead := Head{Seq: n, Hash: ZeroHash}
	if n > 0 {
		logHead.Hash = hashes[n-1]
	}
	switch {
	case n < anchor.Seq && n == 0:
		return 0, &MismatchError{Log: logHead, Anchor: anchor, Reason: "the log is empty (emptied or replaced)"}
	case n < anchor.Seq:
		return 0, &MismatchError{Log: logHead, Anchor: anchor, Reason: fmt.Sprintf("%d entries are missing from the end (log cut short)", anchor.Seq-n)}
	case anchor.Seq == 0 && anchor.Hash != ZeroHash:
		return 0, &MismatchError{Log: logHead, Anchor: anchor, Reason: "the anchor is malformed"}
	case anchor.Seq > 0 && hashes[anchor.Seq-1] != anchor.Hash:
		return 0, &MismatchError{Log: logHead, Anchor: anchor, Reason: fmt.Sprintf("entry %d has another hash in the log (log rewritten, replaced or forked)", anchor.Seq)}
	}
	return n - anchor.Seq, nil
}

// Opened says what OpenAnchored found.
type Opened struct {
	// Adopted: the anchor had never recorded a head (a new store, or one
	// from before anchoring) and now records this log's.
	Adopted bool
	// Unanchored is how many entries at the end of the log the anchor had
	// not recorded (the machine lost power between an entry and its
	// anchor); they are anchored now.
	Unanchored uint64
}

// OpenAnchored opens the log at path as Open does, then checks it against
// the head that a recorded (CheckAgainst) and anchors later appends there:
// in the background, a moment after each, and the final head on Close. A disagreement is a *MismatchError and the log is not opened;
// neither the log nor the anchor is changed.
func OpenAnchored(ctx context.Context, path string, a Anchor) (l *Log, opened Opened, err error) {
	if a == nil {
		return nil, Opened{}, errors.New("open audit log: no anchor")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, Opened{}, fmt.Errorf("open audit log: %w", err)
	}
	var last Entry
	var hashes []string
	if _, err := verify(f, func(e Entry) { last = e; hashes = append(hashes, e.Hash) }); err != nil {
		f.Close()
		return nil, Opened{}, fmt.Errorf("open audit log %s: %w", path, err)
	}
	l = &Log{path: path, f: f, last: last, now: time.Now, anchor: a}
	seq, hash, anchored, err := a.LoadAuditHead(ctx)
	if err != nil {
		f.Close()
		return nil, Opened{}, fmt.Errorf("open audit log %s: %w", path, err)
	}
	opened.Adopted = !anchored
	if anchored {
		if opened.Unanchored, err = CheckAgainst(hashes, Head{Seq: seq, Hash: hash}); err != nil {
			f.Close()
			return nil, Opened{}, fmt.Errorf("audit log %s: %w", path, err)
		}
	}
	head := Head{Seq: last.Seq, Hash: ZeroHash}
	if last.Seq > 0 {
		head.Hash = last.Hash
	}
	if !anchored || head.Seq != seq {
		if err := a.StoreAuditHead(ctx, head.Seq, head.Hash); err != nil {
			f.Close()
			return nil, Opened{}, fmt.Errorf("open audit log %s: %w", path, err)
		}
	}
	l.anchorKick, l.anchorStop, l.anchorDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go l.anchorLoop()
	return l, opened, nil
}
