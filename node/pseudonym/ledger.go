package pseudonym

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"
)

// ErrReplayedRun is returned by Ledger.Claim for a run id already claimed.
var ErrReplayedRun = errors.New("run id was seen before")

// Ledger is the node's persistent memory of the run ids it has served. A
// run id is claimed before any data is read for it, and the claim is
// written and synced to disk before Claim returns, so a crash can never
// let the same run id run twice.
//
// The file is a plain list, one run id per line, so provider IT can read it.
type Ledger struct {
	mu   sync.Mutex
	path string
	f    *os.File
	seen map[string]struct{}
}

// ledgerFile is the ledger's name inside the node's state directory.
const ledgerFile = "runs-seen.txt"

// OpenLedger opens (creating if need be) the ledger in stateDir.
func OpenLedger(stateDir string) (*Ledger, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("open run ledger: %w", err)
	}
	path := filepath.Join(stateDir, ledgerFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open run ledger: %w", err)
	}
	l := &Ledger{path: path, f: f, seen: map[string]struct{}{}}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read run ledger %s: %w", path, err)
	}
	// Only the last line can be torn (a crash mid-append). It was never
	// acknowledged, so no run used it; keep it as seen anyway (refusing
	// too much is safe) and start the next claim on a fresh line. A bad
	// line anywhere else is corruption and stops the node rather than
	// letting it forget runs.
	lines := strings.Split(string(data), "\n")
	torn := len(data) > 0 && data[len(data)-1] != '\n'
	for i, id := range lines {
		last := i == len(lines)-1
		if last && id == "" {
			break
		}
		if err := checkRunID(id); err != nil {
			if last && torn {
				break
			}
			f.Close()
			return nil, fmt.Errorf("run ledger %s: line %d is damaged: %v", path, i+1, err)
		}
		l.seen[id] = struct{}{}
	}
	if torn {
		if _, err := f.WriteString("\n"); err != nil {
			f.Close()
			return nil, fmt.Errorf("repair run ledger %s: %w", path, err)
		}
	}
	return l, nil
}

func checkRunID(id string) error {
	if id == "" {
		return ErrEmptyRunID
	}
	if len(id) > 128 {
		return fmt.Errorf("run id is %d bytes; at most 128", len(id))
	}
	if strings.IndexFunc(id, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		return errors.New("run id has characters other than printable ASCII")
	}
	return nil
}

// Claim records runID as seen. It fails with ErrReplayedRun if the id was
// claimed before, now or in an earlier life of the node.
func (l *Ledger) Claim(runID string) error {
	if err := checkRunID(runID); err != nil {
		return fmt.Errorf("claim run: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("claim run: ledger is closed")
	}
	if _, ok := l.seen[runID]; ok {
		return fmt.Errorf("claim run %s: %w", runID, ErrReplayedRun)
	}
	if _, err := l.f.WriteString(runID + "\n"); err != nil {
		return fmt.Errorf("claim run %s: write %s: %w", runID, l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("claim run %s: sync %s: %w", runID, l.path, err)
	}
	l.seen[runID] = struct{}{}
	return nil
}

// Seen reports whether runID has been claimed.
func (l *Ledger) Seen(runID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.seen[runID]
	return ok
}

// Close closes the ledger file.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
