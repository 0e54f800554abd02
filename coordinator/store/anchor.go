package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The audit anchor is the (sequence number, hash) of the last entry of the
// coordinator's audit log, written after every append. A hash chain shows
// an edited or reordered entry but not one cut from the end, nor a log
// emptied or replaced by another chain; the anchor does.

// LoadAuditHead returns the anchored head of the audit log. anchored is
// false for a store that has never anchored a log (created before
// anchoring, or new).
func (s *SQLite) LoadAuditHead(ctx context.Context) (seq uint64, hash string, anchored bool, err error) {
	return loadAuditHead(ctx, s.db)
}

func loadAuditHead(ctx context.Context, db *sql.DB) (uint64, string, bool, error) {
	var seq int64
	var hash string
	err := db.QueryRowContext(ctx, `SELECT seq, hash FROM audit_anchor WHERE id = 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		// The migration inserts the row; a store without it was edited.
		return 0, "", false, errors.New("the job store has no audit anchor row (the store was edited)")
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("read audit anchor: %w", err)
	}
	if seq < 0 {
		return 0, "", false, nil
	}
	return uint64(seq), hash, true, nil
}

// StoreAuditHead records the audit log's head. It is called after every
// audit append, so it must cost next to nothing: it commits on a connection
// of its own that does not wait for the disk (synchronous=NORMAL). The row is in
// the WAL, in the operating system's hands, when this returns, so a process
// that is killed loses nothing; the next run-state commit (synchronous=FULL)
// syncs it. Only a power cut can leave the anchor behind the log, which the
// coordinator accepts (audit.CheckAgainst); never ahead of it.
func (s *SQLite) StoreAuditHead(ctx context.Context, seq uint64, hash string) error {
	res, err := s.anchor.ExecContext(ctx, int64(seq), hash, time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("anchor audit entry %d: %w", seq, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("anchor audit entry %d: the job store has no audit anchor row (the store was edited)", seq)
	}
	return nil
}

// ReadAuditHead reads the anchored head from the store at path without
// changing anything in it (no migration), so that `haven audit verify`
// can run beside a live coordinator.
func ReadAuditHead(ctx context.Context, path string) (seq uint64, hash string, anchored bool, err error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return 0, "", false, fmt.Errorf("open job store %s: %w", path, err)
	}
	defer db.Close()
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_anchor'`).Scan(&tables); err != nil {
		return 0, "", false, fmt.Errorf("open job store %s: %w", path, err)
	}
	if tables == 0 {
		return 0, "", false, fmt.Errorf("job store %s has no audit anchor (written by a coordinator from before anchoring; start the coordinator once to anchor it)", path)
	}
	seq, hash, anchored, err = loadAuditHead(ctx, db)
	if err != nil {
		return 0, "", false, fmt.Errorf("job store %s: %w", path, err)
	}
	return seq, hash, anchored, nil
}
