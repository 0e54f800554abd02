package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"google.golang.org/protobuf/proto"
)

// The release ledger is the coordinator's record of every run admitted to
// run and of every table it released: definition id and hash, parameters,
// requester (organisation and user), purpose, run id and times. The
// released values themselves are the releases row the entry names (the
// Arrow table after disclosure control; withheld cells are null), so the
// ledger holds released values only. haven/submit reads it to refuse
// near-duplicates and to enforce query budgets (policy.SubmitLedger).

// ErrLedger marks a failure to read or write the release ledger. A caller
// must then refuse the submission or the release: policy that cannot see
// the ledger cannot decide.
var ErrLedger = errors.New("release ledger unavailable")

// LedgerQuery selects the ledger entries a submission is decided on.
type LedgerQuery struct {
	DefinitionID string
	// Since is how far back to read.
	Since time.Time
	// Skip reads nothing: the bundle sets no ledger rules, and preparing
	// the query alone would cost a third of a millisecond a submission.
	Skip bool
	// Limit caps the entries read; 0 means 10000. When more are in the
	// window, LedgerView.Since moves forward so that the view still holds
	// every entry at or after it, and policy sees that it is short.
	Limit int
}

// LedgerView is the ledger as a submission's decision sees it: every run
// of the definition submitted at or after Since that released a table or
// is still pending, running or linking, newest first.
type LedgerView struct {
	Since   time.Time
	Entries []LedgerEntry
}

// LedgerEntry is one admitted run in the ledger.
type LedgerEntry struct {
	RunID          string
	DefinitionHash string
	// Parameters as haven/submit takes them: int64 for ints, strings
	// otherwise.
	Parameters   map[string]any
	RequesterID  string
	RequesterOrg string
	Purpose      string
	SubmittedAt  time.Time
	// ReleasedAt is zero for a run still in progress.
	ReleasedAt    time.Time
	ReleaseSHA256 string
}

// Released reports whether the entry's run released a table.
func (e LedgerEntry) Released() bool { return !e.ReleasedAt.IsZero() }

// Ledger is the part of a Store that keeps the release ledger.
type Ledger interface {
	// AdmitRun reads the ledger view q selects, asks decide for the run to
	// record, and stores that run, with a ledger entry unless it was
	// refused, all in one transaction: no other submission is counted
	// between the read and the write. A read error returns an error
	// wrapping ErrLedger before decide is called, and nothing is stored;
	// an error from decide is returned as it is, and nothing is stored.
	AdmitRun(ctx context.Context, q LedgerQuery, decide func(LedgerView) (*havenv1.Run, error)) (*havenv1.Run, error)
	// LedgerEntries returns the ledger entries of a definition submitted
	// at or after since, newest first, whatever became of their runs.
	LedgerEntries(ctx context.Context, definitionID string, since time.Time) ([]LedgerEntry, error)
}

const defaultLedgerLimit = 10000

// wireParams turns a run's wire parameters into the values haven/submit
// compares (the form of policy.ParametersOf).
func wireParams(in map[string]*havenv1.ParameterValue) map[string]any {
	out := make(map[string]any, len(in))
	for name, v := range in {
		switch x := v.GetValue().(type) {
		case *havenv1.ParameterValue_IntValue:
			out[name] = x.IntValue
		default:
			if s, _, ok := v.Text(); ok {
				out[name] = s
			}
		}
	}
	return out
}

func decodeParams(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	for k, v := range raw {
		if n, ok := v.(json.Number); ok {
			i, err := n.Int64()
			if err != nil {
				return nil, fmt.Errorf("parameter %s: %w", k, err)
			}
			raw[k] = i
		}
	}
	return raw, nil
}

// AdmitRun implements Ledger.
func (s *SQLite) AdmitRun(ctx context.Context, q LedgerQuery, decide func(LedgerView) (*havenv1.Run, error)) (*havenv1.Run, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = defaultLedgerLimit
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("admit run: %w: %w", ErrLedger, err)
	}
	defer tx.Rollback()
	var entries []LedgerEntry
	if !q.Skip {
		entries, err = ledgerRows(ctx, tx, `SELECT l.run_id, l.definition_hash, l.parameters, l.requester_id, l.requester_org, l.purpose,
			l.submitted_at, l.released_at, l.release_sha256
		FROM ledger l JOIN runs r ON r.id = l.run_id
		WHERE l.definition_id = ? AND l.submitted_at >= ?
			AND (l.released_at IS NOT NULL OR r.state IN (?, ?, ?))
		ORDER BY l.submitted_at DESC, l.run_id DESC LIMIT ?`,
			q.DefinitionID, q.Since.UnixNano(),
			int32(havenv1.RunState_RUN_STATE_PENDING), int32(havenv1.RunState_RUN_STATE_RUNNING), int32(havenv1.RunState_RUN_STATE_LINKING),
			limit+1)
	}
	if err != nil {
		return nil, fmt.Errorf("admit run: read %w: %w", ErrLedger, err)
	}
	view := LedgerView{Since: q.Since, Entries: entries}
	if len(entries) > limit {
		// Entries at the cut's own instant may be missing: start after it.
		view.Since = entries[limit].SubmittedAt.Add(time.Nanosecond)
		kept := entries[:0]
		for _, e := range entries[:limit] {
			if !e.SubmittedAt.Before(view.Since) {
				kept = append(kept, e)
			}
		}
		view.Entries = kept
	}
	run, err := decide(view)
	if err != nil {
		return nil, err
	}
	if err := insertRun(ctx, tx, run); err != nil {
		return nil, err
	}
	if run.GetState() != havenv1.RunState_RUN_STATE_REFUSED {
		if err := insertLedger(ctx, tx, run); err != nil {
			return nil, fmt.Errorf("admit run %s: write %w: %w", run.GetId(), ErrLedger, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("admit run %s: %w", run.GetId(), err)
	}
	return run, nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func ledgerRows(ctx context.Context, q queryer, query string, args ...any) ([]LedgerEntry, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []LedgerEntry
	for rows.Next() {
		var (
			e         LedgerEntry
			params    []byte
			submitted int64
			released  sql.NullInt64
			digest    sql.NullString
		)
		if err := rows.Scan(&e.RunID, &e.DefinitionHash, &params, &e.RequesterID, &e.RequesterOrg, &e.Purpose,
			&submitted, &released, &digest); err != nil {
			return nil, err
		}
		if e.Parameters, err = decodeParams(params); err != nil {
			return nil, fmt.Errorf("ledger entry of run %s: %w", e.RunID, err)
		}
		e.SubmittedAt = time.Unix(0, submitted).UTC()
		if released.Valid {
			e.ReleasedAt = time.Unix(0, released.Int64).UTC()
		}
		e.ReleaseSHA256 = digest.String
		out = append(out, e)
	}
	return out, rows.Err()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func insertLedger(ctx context.Context, x execer, run *havenv1.Run) error {
	params, err := json.Marshal(wireParams(run.GetParameters()))
	if err != nil {
		return err
	}
	_, err = x.ExecContext(ctx, `INSERT INTO ledger
		(run_id, definition_id, definition_hash, parameters, requester_id, requester_org, purpose, submitted_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		run.GetId(), run.GetDefinitionId(), run.GetDefinitionHash(), params, run.GetRequester().GetId(),
		run.GetRequester().GetOrg(), run.GetPurpose(), run.GetSubmittedAt().AsTime().UnixNano())
	return err
}

// recordRelease marks a run's ledger entry released, in the transaction
// that stores the table. A run admitted before the ledger existed gets its
// entry from its stored snapshot, so every released table is in the
// ledger.
func recordRelease(ctx context.Context, tx *sql.Tx, runID string, at time.Time, digest string) error {
	res, err := tx.ExecContext(ctx, `UPDATE ledger SET released_at = ?, release_sha256 = ? WHERE run_id = ?`,
		at.UnixNano(), digest, runID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	var b []byte
	if err := tx.QueryRowContext(ctx, `SELECT snapshot FROM runs WHERE id = ?`, runID).Scan(&b); err != nil {
		return err
	}
	run := new(havenv1.Run)
	if err := proto.Unmarshal(b, run); err != nil {
		return fmt.Errorf("decode stored run %s: %w", runID, err)
	}
	if err := insertLedger(ctx, tx, run); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE ledger SET released_at = ?, release_sha256 = ? WHERE run_id = ?`,
		at.UnixNano(), digest, runID)
	return err
}

// LedgerEntries implements Ledger.
func (s *SQLite) LedgerEntries(ctx context.Context, definitionID string, since time.Time) ([]LedgerEntry, error) {
	out, err := ledgerRows(ctx, s.db, `SELECT run_id, definition_hash, parameters, requester_id, requester_org, purpose,
			submitted_at, released_at, release_sha256
		FROM ledger WHERE definition_id = ? AND submitted_at >= ?
		ORDER BY submitted_at DESC, run_id DESC`, definitionID, since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("read %w: %w", ErrLedger, err)
	}
	return out, nil
}
