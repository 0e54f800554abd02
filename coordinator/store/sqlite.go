package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite is the embedded Store, a single file through modernc.org/sqlite
// (pure Go, so the coordinator needs no cgo).
type SQLite struct {
	db       *sql.DB
	anchorDB *sql.DB   // a connection of its own for the audit anchor (anchor.go)
	anchor   *sql.Stmt // its one statement, prepared
}

var _ Store = (*SQLite)(nil)

// migrations are applied in order, each once, in its own transaction; the
// schema_migrations table records which have run. Never edit one that has
// shipped: add another.
var migrations = []string{
	// 1: runs and releases.
	`CREATE TABLE runs (
		id                TEXT PRIMARY KEY,
		state             INTEGER NOT NULL,
		definition_id     TEXT NOT NULL,
		requester_id      TEXT NOT NULL,
		requester_org     TEXT NOT NULL,
		client_request_id TEXT,
		submitted_at      INTEGER NOT NULL, -- unix nanoseconds
		snapshot          BLOB NOT NULL     -- havenv1.Run, binary protobuf
	);
	CREATE INDEX runs_submitted ON runs (submitted_at DESC, id DESC);
	CREATE INDEX runs_state ON runs (state);
	CREATE UNIQUE INDEX runs_client_request ON runs (requester_id, client_request_id)
		WHERE client_request_id IS NOT NULL;
	CREATE TABLE releases (
		run_id     TEXT PRIMARY KEY REFERENCES runs (id),
		created_at INTEGER NOT NULL,
		sha256     TEXT NOT NULL,
		arrow_ipc  BLOB NOT NULL
	);`,
	// 2: a requester is an (organisation, user) pair, so a client request
	// id is unique per pair; the same user id in another organisation is
	// another person.
	`DROP INDEX runs_client_request;
	CREATE UNIQUE INDEX runs_client_request ON runs (requester_org, requester_id, client_request_id)
		WHERE client_request_id IS NOT NULL;
	CREATE INDEX runs_requester ON runs (requester_org, requester_id, submitted_at);`,
	// 3: the audit log's head, kept beside the runs it describes so that a
	// log cut short, emptied or forked no longer matches (see anchor.go).
	// seq -1 marks a store that has never anchored a log.
	`CREATE TABLE audit_anchor (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		seq        INTEGER NOT NULL,
		hash       TEXT NOT NULL,
		updated_at INTEGER NOT NULL -- unix nanoseconds
	);
	INSERT INTO audit_anchor (id, seq, hash, updated_at) VALUES (1, -1, '', 0);`,
	// 4: the release ledger (ledger.go). Runs admitted before it have no
	// entry until they release, when PutRelease adds one.
	`CREATE TABLE ledger (
		run_id          TEXT PRIMARY KEY REFERENCES runs (id),
		definition_id   TEXT NOT NULL,
		definition_hash TEXT NOT NULL,
		parameters      TEXT NOT NULL,    -- JSON object, as haven/submit compares them
		requester_id    TEXT NOT NULL,
		requester_org   TEXT NOT NULL,
		purpose         TEXT NOT NULL,
		submitted_at    INTEGER NOT NULL, -- unix nanoseconds
		released_at     INTEGER,          -- NULL until a table is released
		release_sha256  TEXT              -- the releases row of the table
	);
	CREATE INDEX ledger_definition ON ledger (definition_id, submitted_at DESC);`,
	// 5: the network type 1 opt-out list the coordinator relays.
	`CREATE TABLE network_optout_meta (
		id    INTEGER PRIMARY KEY CHECK (id = 1),
		epoch TEXT NOT NULL,
		seq   INTEGER NOT NULL
	);
	CREATE TABLE network_optouts (
		publisher  TEXT PRIMARY KEY,
		digest     TEXT NOT NULL,
		seq        INTEGER NOT NULL,
		updated_at INTEGER NOT NULL, -- unix nanoseconds
		hashes     BLOB NOT NULL     -- keyed hashes the coordinator cannot read
	);`,
}

// OpenSQLite opens (creating if need be) the store at path and brings its
// schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	// WAL lets readers (GetRun, DoGet) proceed while a run is updated;
	// synchronous=FULL because a released table must survive power loss.
	// Transactions begin IMMEDIATE: one that reads and then writes (the
	// ledger's admission) would otherwise fail with SQLITE_BUSY when another
	// writer commits between its read and its write; busy_timeout queues it.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(ON)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open job store %s: %w", path, err)
	}
	// One writer at a time is what SQLite does anyway; saying so avoids
	// SQLITE_BUSY between our own connections.
	db.SetMaxOpenConns(1)
	s := &SQLite{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open job store %s: %w", path, err)
	}
	// The audit anchor is written after every audit append and need not
	// wait for the disk (see StoreAuditHead); a second connection with
	// synchronous=NORMAL keeps that from weakening the runs' commits.
	anchorDSN := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)"
	if s.anchorDB, err = sql.Open("sqlite", anchorDSN); err != nil {
		db.Close()
		return nil, fmt.Errorf("open job store %s: %w", path, err)
	}
	s.anchorDB.SetMaxOpenConns(1)
	if s.anchor, err = s.anchorDB.PrepareContext(ctx, `UPDATE audit_anchor SET seq = ?, hash = ?, updated_at = ? WHERE id = 1`); err != nil {
		s.anchorDB.Close()
		db.Close()
		return nil, fmt.Errorf("open job store %s: %w", path, err)
	}
	return s, nil
}

// SchemaVersion returns the number of migrations applied.
func (s *SQLite) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func (s *SQLite) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	have, err := s.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this coordinator knows (%d); refusing to run an older binary against it", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, time.Now().UnixNano()); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", v, err)
		}
	}
	return nil
}

func checkRun(run *havenv1.Run) error {
	switch {
	case run == nil:
		return errors.New("nil run")
	case run.GetId() == "":
		return errors.New("run has no id")
	case run.GetRequester().GetId() == "":
		return fmt.Errorf("run %s has no requester", run.GetId())
	case run.GetSubmittedAt() == nil:
		return fmt.Errorf("run %s has no submission time", run.GetId())
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func isConstraint(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
	}
	return false
}

// CreateRun implements Store.
func (s *SQLite) CreateRun(ctx context.Context, run *havenv1.Run) error {
	return insertRun(ctx, s.db, run)
}

// insertRun stores a new run, on the database or in a transaction.
func insertRun(ctx context.Context, x execer, run *havenv1.Run) error {
	if err := checkRun(run); err != nil {
		return fmt.Errorf("create run: %w", err)
	}
	b, err := proto.Marshal(run)
	if err != nil {
		return fmt.Errorf("create run %s: %w", run.GetId(), err)
	}
	_, err = x.ExecContext(ctx, `INSERT INTO runs
		(id, state, definition_id, requester_id, requester_org, client_request_id, submitted_at, snapshot)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		run.GetId(), int32(run.GetState()), run.GetDefinitionId(), run.GetRequester().GetId(),
		run.GetRequester().GetOrg(), nullable(run.GetClientRequestId()), run.GetSubmittedAt().AsTime().UnixNano(), b)
	if isConstraint(err) {
		return fmt.Errorf("create run %s: %w", run.GetId(), ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("create run %s: %w", run.GetId(), err)
	}
	return nil
}

// UpdateRun implements Store.
func (s *SQLite) UpdateRun(ctx context.Context, run *havenv1.Run) error {
	if err := checkRun(run); err != nil {
		return fmt.Errorf("update run: %w", err)
	}
	b, err := proto.Marshal(run)
	if err != nil {
		return fmt.Errorf("update run %s: %w", run.GetId(), err)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE runs SET state = ?, snapshot = ? WHERE id = ?`,
		int32(run.GetState()), b, run.GetId())
	if err != nil {
		return fmt.Errorf("update run %s: %w", run.GetId(), err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update run %s: %w", run.GetId(), ErrNotFound)
	}
	return nil
}

func decodeRun(id string, b []byte) (*havenv1.Run, error) {
	run := new(havenv1.Run)
	if err := proto.Unmarshal(b, run); err != nil {
		return nil, fmt.Errorf("decode stored run %s: %w", id, err)
	}
	return run, nil
}

// GetRun implements Store.
func (s *SQLite) GetRun(ctx context.Context, id string) (*havenv1.Run, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, `SELECT snapshot FROM runs WHERE id = ?`, id).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("run %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	return decodeRun(id, b)
}

// FindRunByClientRequestID implements Store.
func (s *SQLite) FindRunByClientRequestID(ctx context.Context, requesterOrg, requesterID, clientRequestID string) (*havenv1.Run, error) {
	var id string
	var b []byte
	err := s.db.QueryRowContext(ctx, `SELECT id, snapshot FROM runs WHERE requester_org = ? AND requester_id = ? AND client_request_id = ?`,
		requesterOrg, requesterID, clientRequestID).Scan(&id, &b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("client request %s: %w", clientRequestID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("find client request %s: %w", clientRequestID, err)
	}
	return decodeRun(id, b)
}

// Page tokens are opaque to clients: base64 of "<submitted_at>/<id>" of the
// last run on the previous page (keyset pagination, stable under inserts).
func encodePageToken(submitted int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(submitted, 10) + "/" + id))
}

func decodePageToken(tok string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, "", errors.New("malformed page token")
	}
	ts, id, ok := strings.Cut(string(b), "/")
	n, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", errors.New("malformed page token")
	}
	return n, id, nil
}

// ListRuns implements Store.
func (s *SQLite) ListRuns(ctx context.Context, q ListQuery) ([]*havenv1.Run, string, error) {
	size := q.PageSize
	switch {
	case size < 0:
		return nil, "", fmt.Errorf("list runs: page size %d is negative", size)
	case size == 0:
		size = 50
	case size > 500:
		size = 500
	}
	// The query text is fixed; only placeholders vary with the filter.
	var where []string
	var args []any
	if len(q.States) > 0 {
		ph := make([]string, len(q.States))
		for i, st := range q.States {
			ph[i] = "?"
			args = append(args, int32(st))
		}
		where = append(where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	if q.DefinitionID != "" {
		where = append(where, "definition_id = ?")
		args = append(args, q.DefinitionID)
	}
	if q.RequesterOrg != "" {
		where = append(where, "requester_org = ?")
		args = append(args, q.RequesterOrg)
	}
	if q.PageToken != "" {
		ts, id, err := decodePageToken(q.PageToken)
		if err != nil {
			return nil, "", fmt.Errorf("list runs: %w", err)
		}
		where = append(where, "(submitted_at < ? OR (submitted_at = ? AND id < ?))")
		args = append(args, ts, ts, id)
	}
	query := `SELECT id, submitted_at, snapshot FROM runs`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY submitted_at DESC, id DESC LIMIT ?"
	args = append(args, size+1)

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var (
		runs     []*havenv1.Run
		lastTS   int64
		lastID   string
		overflow bool
	)
	for rows.Next() {
		if len(runs) == size {
			overflow = true
			break
		}
		var id string
		var ts int64
		var b []byte
		if err := rows.Scan(&id, &ts, &b); err != nil {
			return nil, "", fmt.Errorf("list runs: %w", err)
		}
		run, err := decodeRun(id, b)
		if err != nil {
			return nil, "", err
		}
		runs = append(runs, run)
		lastTS, lastID = ts, id
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list runs: %w", err)
	}
	next := ""
	if overflow {
		next = encodePageToken(lastTS, lastID)
	}
	return runs, next, nil
}

// CountSubmissions implements Store.
func (s *SQLite) CountSubmissions(ctx context.Context, org, id string, since time.Time) (SubmissionCounts, error) {
	var c SubmissionCounts
	refused := int32(havenv1.RunState_RUN_STATE_REFUSED)
	p, r, l := int32(havenv1.RunState_RUN_STATE_PENDING), int32(havenv1.RunState_RUN_STATE_RUNNING), int32(havenv1.RunState_RUN_STATE_LINKING)
	err := s.db.QueryRowContext(ctx, `SELECT
		COALESCE(SUM(CASE WHEN requester_id = ? AND submitted_at >= ? AND state <> ? THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN requester_id = ? AND submitted_at >= ? AND state = ? THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN requester_id = ? AND state IN (?, ?, ?) THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN state IN (?, ?, ?) THEN 1 ELSE 0 END), 0)
		FROM runs WHERE requester_org = ?`,
		id, since.UnixNano(), refused, id, since.UnixNano(), refused, id, p, r, l, p, r, l, org).
		Scan(&c.Started, &c.Refused, &c.Active, &c.OrgActive)
	if err != nil {
		return SubmissionCounts{}, fmt.Errorf("count submissions of %s of %s: %w", id, org, err)
	}
	return c, nil
}

// InterruptActive implements Store.
func (s *SQLite) InterruptActive(ctx context.Context, reason string, at time.Time) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("interrupt runs: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, snapshot FROM runs WHERE state IN (?, ?, ?)`,
		int32(havenv1.RunState_RUN_STATE_PENDING), int32(havenv1.RunState_RUN_STATE_RUNNING), int32(havenv1.RunState_RUN_STATE_LINKING))
	if err != nil {
		return 0, fmt.Errorf("interrupt runs: %w", err)
	}
	var active []*havenv1.Run
	for rows.Next() {
		var id string
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			rows.Close()
			return 0, fmt.Errorf("interrupt runs: %w", err)
		}
		run, err := decodeRun(id, b)
		if err != nil {
			rows.Close()
			return 0, err
		}
		active = append(active, run)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("interrupt runs: %w", err)
	}
	ts := timestamppb.New(at)
	for _, run := range active {
		run.State = havenv1.RunState_RUN_STATE_INTERRUPTED
		run.Error = reason
		run.UpdatedAt, run.FinishedAt = ts, ts
		b, err := proto.Marshal(run)
		if err != nil {
			return 0, fmt.Errorf("interrupt run %s: %w", run.GetId(), err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE runs SET state = ?, snapshot = ? WHERE id = ?`,
			int32(run.State), b, run.GetId()); err != nil {
			return 0, fmt.Errorf("interrupt run %s: %w", run.GetId(), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("interrupt runs: %w", err)
	}
	return len(active), nil
}

// PutRelease implements Store.
func (s *SQLite) PutRelease(ctx context.Context, rel Release) error {
	if rel.RunID == "" || len(rel.Table) == 0 {
		return errors.New("put release: run id and table are required")
	}
	sum := sha256.Sum256(rel.Table)
	digest := hex.EncodeToString(sum[:])
	if rel.SHA256 != "" && rel.SHA256 != digest {
		return fmt.Errorf("put release %s: table digest %s does not match the %s given", rel.RunID, digest, rel.SHA256)
	}
	// The table and its ledger entry are written together or not at all:
	// a table the ledger does not count is never released.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put release %s: %w", rel.RunID, err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `INSERT INTO releases (run_id, created_at, sha256, arrow_ipc) VALUES (?, ?, ?, ?)`,
		rel.RunID, rel.CreatedAt.UnixNano(), digest, rel.Table)
	if isConstraint(err) {
		// Either released already, or no such run (foreign key).
		var one int
		if gerr := tx.QueryRowContext(ctx, `SELECT 1 FROM runs WHERE id = ?`, rel.RunID).Scan(&one); errors.Is(gerr, sql.ErrNoRows) {
			return fmt.Errorf("put release: run %s: %w", rel.RunID, ErrNotFound)
		}
		return fmt.Errorf("put release %s: %w", rel.RunID, ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("put release %s: %w", rel.RunID, err)
	}
	if err := recordRelease(ctx, tx, rel.RunID, rel.CreatedAt, digest); err != nil {
		return fmt.Errorf("put release %s: write %w: %w", rel.RunID, ErrLedger, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put release %s: %w", rel.RunID, err)
	}
	return nil
}

// GetRelease implements Store. It re-checks the table's digest, so a
// damaged file is reported rather than served.
func (s *SQLite) GetRelease(ctx context.Context, runID string) (Release, error) {
	var rel Release
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT run_id, created_at, sha256, arrow_ipc FROM releases WHERE run_id = ?`, runID).
		Scan(&rel.RunID, &created, &rel.SHA256, &rel.Table)
	if errors.Is(err, sql.ErrNoRows) {
		return Release{}, fmt.Errorf("release of run %s: %w", runID, ErrNotFound)
	}
	if err != nil {
		return Release{}, fmt.Errorf("get release %s: %w", runID, err)
	}
	rel.CreatedAt = time.Unix(0, created).UTC()
	if sum := sha256.Sum256(rel.Table); hex.EncodeToString(sum[:]) != rel.SHA256 {
		return Release{}, fmt.Errorf("release of run %s: stored table does not match its digest", runID)
	}
	return rel, nil
}

// NetworkOptOuts implements Store. The first call on a new store picks
// its epoch.
func (s *SQLite) NetworkOptOuts(ctx context.Context) (NetworkOptOuts, error) {
	var out NetworkOptOuts
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return out, fmt.Errorf("network opt-outs: %w", err)
	}
	defer tx.Rollback()
	err = tx.QueryRowContext(ctx, `SELECT epoch, seq FROM network_optout_meta WHERE id = 1`).Scan(&out.Epoch, &out.Seq)
	if errors.Is(err, sql.ErrNoRows) {
		out.Epoch, out.Seq = rand.Text()[:16], 0
		_, err = tx.ExecContext(ctx, `INSERT INTO network_optout_meta (id, epoch, seq) VALUES (1, ?, 0)`, out.Epoch)
	}
	if err != nil {
		return out, fmt.Errorf("network opt-outs: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT publisher, digest, seq, updated_at, hashes FROM network_optouts ORDER BY publisher`)
	if err != nil {
		return out, fmt.Errorf("network opt-outs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var set OptOutSet
		var updated int64
		if err := rows.Scan(&set.Publisher, &set.Digest, &set.Seq, &updated, &set.Hashes); err != nil {
			return out, fmt.Errorf("network opt-outs: %w", err)
		}
		set.Updated = time.Unix(0, updated).UTC()
		out.Sets = append(out.Sets, set)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("network opt-outs: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return out, fmt.Errorf("network opt-outs: %w", err)
	}
	return out, nil
}

// PutOptOutSet implements Store.
func (s *SQLite) PutOptOutSet(ctx context.Context, epoch string, set OptOutSet) error {
	if set.Publisher == "" || set.Seq == 0 {
		return errors.New("put opt-out set: publisher and seq are required")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put opt-out set of %s: %w", set.Publisher, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE network_optout_meta SET seq = ? WHERE id = 1 AND epoch = ? AND seq < ?`, set.Seq, epoch, set.Seq)
	if err != nil {
		return fmt.Errorf("put opt-out set of %s: %w", set.Publisher, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("put opt-out set of %s: the store is not at an earlier seq of epoch %s", set.Publisher, epoch)
	}
	hashes := set.Hashes
	if hashes == nil {
		hashes = []byte{} // NOT NULL
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO network_optouts (publisher, digest, seq, updated_at, hashes) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (publisher) DO UPDATE SET digest = excluded.digest, seq = excluded.seq, updated_at = excluded.updated_at, hashes = excluded.hashes`,
		set.Publisher, set.Digest, set.Seq, set.Updated.UnixNano(), hashes)
	if err != nil {
		return fmt.Errorf("put opt-out set of %s: %w", set.Publisher, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put opt-out set of %s: %w", set.Publisher, err)
	}
	return nil
}

// Close implements Store.
func (s *SQLite) Close() error {
	return errors.Join(s.anchor.Close(), s.anchorDB.Close(), s.db.Close())
}
