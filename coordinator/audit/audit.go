// Package audit keeps the coordinator's append-only, hash-chained record of
// everything that happened to a run: submissions, policy decisions,
// dispatches, node responses and releases (DESIGN §10).
//
// The log is a file of JSON lines. Each entry carries the SHA-256 of the
// entry before it, and its own hash over its canonical encoding, so editing,
// deleting or reordering any entry breaks the chain at that entry, and
// Verify names it. The first entry chains to the all-zero hash.
//
// Entries describe runs, never patients: callers put identifiers of runs,
// sites, definitions and people in them, and counts; never an NHS number,
// a date of birth or a pseudonym.
package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Kind says what an entry records.
type Kind string

// Entry kinds.
const (
	KindSubmission   Kind = "submission"    // a commissioner asked for a run
	KindDecision     Kind = "decision"      // a policy decision (submit, disclose)
	KindDispatch     Kind = "dispatch"      // a task sent to a node
	KindNodeResponse Kind = "node_response" // a node accepted, refused, finished or failed a task
	KindRelease      Kind = "release"       // a table was released
	KindRunState     Kind = "run_state"     // a run changed state (cancelled, interrupted, failed)
	KindNode         Kind = "node"          // a node connected, disconnected or was rejected
)

// ZeroHash is the Prev of the first entry in a log.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Entry is one record in the log.
type Entry struct {
	Seq   uint64          `json:"seq"`
	Time  time.Time       `json:"time"`
	Kind  Kind            `json:"kind"`
	RunID string          `json:"run_id,omitempty"`
	Actor string          `json:"actor,omitempty"` // who caused it: a user id, a site ODS code, "coordinator"
	Data  json.RawMessage `json:"data,omitempty"`  // kind-specific detail, a JSON object
	Prev  string          `json:"prev"`            // hex SHA-256 of the previous entry
	Hash  string          `json:"hash"`            // hex SHA-256 of this entry with Hash empty
}

// computeHash returns the hash of e over its JSON encoding with Hash empty.
// encoding/json writes struct fields in declaration order and Data is
// compacted on the way in, so the encoding is canonical.
func (e Entry) computeHash() (string, error) {
	e.Hash = ""
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Record is what a caller appends; the log fills in sequence, time and hashes.
type Record struct {
	Kind  Kind
	RunID string
	Actor string
	Data  any // marshalled to a JSON object; nil for none
}

// Log is an open audit log file. It is safe for concurrent use; appends are
// serialised and each is synced to disk before Append returns.
type Log struct {
	mu     sync.Mutex
	path   string
	f      *os.File
	last   Entry // zero Seq when the log is empty
	now    func() time.Time
	anchor Anchor // nil for a log kept without one (tests, tools)

	// The anchorer goroutine (anchorLoop) writes the newest head to
	// anchor whenever kicked, until anchorStop closes.
	anchorKick chan struct{}
	anchorStop chan struct{}
	anchorDone chan struct{}
	anchorErr  error // the first failure to anchor, reported by Close
}

// Open opens the log at path, creating it if absent. It verifies the whole
// chain first: a coordinator must not extend a log that was tampered with.
func Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	var last Entry
	_, err = verify(f, func(e Entry) { last = e })
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	return &Log{path: path, f: f, last: last, now: time.Now}, nil
}

// Append adds r to the log and returns the stored entry.
func (l *Log) Append(ctx context.Context, r Record) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if r.Kind == "" {
		return Entry{}, errors.New("audit: record has no kind")
	}
	var data json.RawMessage
	if r.Data != nil {
		b, err := json.Marshal(r.Data)
		if err != nil {
			return Entry{}, fmt.Errorf("audit: encode %s data: %w", r.Kind, err)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return Entry{}, fmt.Errorf("audit: encode %s data: %w", r.Kind, err)
		}
		if buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return Entry{}, fmt.Errorf("audit: %s data must encode as a JSON object", r.Kind)
		}
		data = buf.Bytes()
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return Entry{}, errors.New("audit: log is closed")
	}
	e := Entry{
		Seq:   l.last.Seq + 1,
		Time:  l.now().UTC().Truncate(time.Microsecond),
		Kind:  r.Kind,
		RunID: r.RunID,
		Actor: r.Actor,
		Data:  data,
		Prev:  ZeroHash,
	}
	if l.last.Seq > 0 {
		e.Prev = l.last.Hash
	}
	h, err := e.computeHash()
	if err != nil {
		return Entry{}, fmt.Errorf("audit: hash entry: %w", err)
	}
	e.Hash = h
	line, err := json.Marshal(e)
	if err != nil {
		return Entry{}, fmt.Errorf("audit: encode entry: %w", err)
	}
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		return Entry{}, fmt.Errorf("audit: write %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return Entry{}, fmt.Errorf("audit: sync %s: %w", l.path, err)
	}
	l.last = e
	if l.anchor != nil {
		// The anchor follows the log off the append's path: a commit per
		// entry there contends with the run commits for the store's write
		// lock. It lags by at most the entries of the last few moments,
		// which OpenAnchored accepts; Close anchors the final head.
		select {
		case l.anchorKick <- struct{}{}:
		default: // a kick is pending; the anchorer reads the newest head
		}
	}
	return e, nil
}

// Head returns the last entry's sequence number and hash. Storing the head
// elsewhere (the job store does) lets Verify's caller detect a log cut short,
// which the chain alone cannot show.
func (l *Log) Head() (seq uint64, hash string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.Seq == 0 {
		return 0, ZeroHash
	}
	return l.last.Seq, l.last.Hash
}

// Close closes the log file. An anchored log anchors its final head first,
// so that after a clean stop the store and the log agree exactly.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	var errs []error
	if l.anchor != nil {
		close(l.anchorStop)
		<-l.anchorDone
		errs = append(errs, l.anchorErr, l.storeHead())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	errs = append(errs, l.f.Close())
	l.f = nil
	return errors.Join(errs...)
}

// anchorLoop writes the newest head to the anchor each time an append
// kicks it, until Close.
func (l *Log) anchorLoop() {
	defer close(l.anchorDone)
	for {
		select {
		case <-l.anchorStop:
			return
		case <-l.anchorKick:
			if err := l.storeHead(); err != nil && l.anchorErr == nil {
				l.anchorErr = err
			}
		}
	}
}

// storeHead anchors the current head.
func (l *Log) storeHead() error {
	l.mu.Lock()
	seq, hash := l.last.Seq, l.last.Hash
	l.mu.Unlock()
	if seq == 0 {
		hash = ZeroHash
	}
	if err := l.anchor.StoreAuditHead(context.Background(), seq, hash); err != nil {
		return fmt.Errorf("audit: anchor entry %d: %w", seq, err)
	}
	return nil
}

// BrokenError says where and why a chain does not verify.
type BrokenError struct {
	Line   int    // 1-based line in the file
	Seq    uint64 // sequence number the entry claims, if it could be read
	Reason string
}

func (e *BrokenError) Error() string {
	if e.Seq > 0 {
		return fmt.Sprintf("audit chain broken at line %d (entry %d): %s", e.Line, e.Seq, e.Reason)
	}
	return fmt.Sprintf("audit chain broken at line %d: %s", e.Line, e.Reason)
}

// Summary describes a verified log.
type Summary struct {
	Entries int
	Head    string // hash of the last entry; ZeroHash for an empty log
}

// Verify reads a whole log from r and checks every entry: that it parses,
// that its hash matches its content, that it chains to the entry before it,
// and that sequence numbers run 1, 2, 3… It returns a summary, or a
// *BrokenError naming the first entry that fails.
//
// The chain cannot show that entries were cut from the end; compare the
// summary's Entries and Head with a head recorded elsewhere for that.
func Verify(r io.Reader) (Summary, error) { return verify(r, nil) }

// Scan verifies the log in r as Verify does and calls fn for each entry in
// order. It stops at the first broken entry.
func Scan(r io.Reader, fn func(Entry)) (Summary, error) { return verify(r, fn) }

func verify(r io.Reader, fn func(Entry)) (Summary, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	prev := ZeroHash
	var n int
	for line := 1; ; line++ {
		raw, err := br.ReadBytes('\n')
		if err == io.EOF && len(raw) == 0 {
			return Summary{Entries: n, Head: prev}, nil
		}
		if err != nil && err != io.EOF {
			return Summary{Entries: n, Head: prev}, fmt.Errorf("read audit log: %w", err)
		}
		if err == io.EOF {
			return Summary{Entries: n, Head: prev}, &BrokenError{Line: line, Reason: "last entry is incomplete (no newline)"}
		}
		var e Entry
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return Summary{Entries: n, Head: prev}, &BrokenError{Line: line, Reason: "entry is not valid JSON: " + err.Error()}
		}
		want, err := e.computeHash()
		if err != nil {
			return Summary{Entries: n, Head: prev}, &BrokenError{Line: line, Seq: e.Seq, Reason: err.Error()}
		}
		switch {
		case e.Hash != want:
			return Summary{Entries: n, Head: prev}, &BrokenError{Line: line, Seq: e.Seq, Reason: "content does not match its hash (entry edited)"}
		case e.Prev != prev:
			return Summary{Entries: n, Head: prev}, &BrokenError{Line: line, Seq: e.Seq, Reason: "does not chain to the entry before it (entry deleted, inserted or moved)"}
		case e.Seq != uint64(n+1):
			return Summary{Entries: n, Head: prev}, &BrokenError{Line: line, Seq: e.Seq, Reason: fmt.Sprintf("sequence number %d, want %d", e.Seq, n+1)}
		}
		if fn != nil {
			fn(e)
		}
		prev = e.Hash
		n++
	}
}
