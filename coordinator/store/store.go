// Package store keeps the coordinator's durable state: runs, their state
// and coverage, and the tables released for them.
//
// It holds nothing about patients, by construction: a run is stored as its
// havenv1.Run snapshot (definition, parameters, requester, state, coverage
// by site, release summary) and a released table as the Arrow IPC stream of
// the disclosure-controlled aggregate. Linked rows and partial results live
// in the coordinator's memory for one run and never reach a Store.
//
// It also keeps the network type 1 opt-out list the coordinator relays
// between practices (DESIGN §7): each practice's list as keyed hashes of
// NHS numbers under a key the coordinator never holds, so it cannot tell
// whom they name. Keeping it here means a restarted coordinator relays the
// same list, under the same version, without waiting for every practice
// to publish again.
//
// Store is an interface so that a PostgreSQL implementation can replace the
// embedded SQLite one for a standby coordinator (DESIGN §12).
package store

import (
	"context"
	"errors"
	"time"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// Errors a Store returns; test with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
)

// Store is the coordinator's job store.
type Store interface {
	// CreateRun stores a new run. It fails with ErrAlreadyExists if a
	// run with that id, or with that requester's (organisation, user,
	// client request id), exists.
	CreateRun(ctx context.Context, run *havenv1.Run) error
	// UpdateRun replaces the stored snapshot of an existing run.
	UpdateRun(ctx context.Context, run *havenv1.Run) error
	// GetRun returns the run with id, or ErrNotFound.
	GetRun(ctx context.Context, id string) (*havenv1.Run, error)
	// FindRunByClientRequestID returns the run a requester (organisation
	// and user id) submitted with clientRequestID, or ErrNotFound; it makes
	// SubmitRun idempotent.
	FindRunByClientRequestID(ctx context.Context, requesterOrg, requesterID, clientRequestID string) (*havenv1.Run, error)
	// ListRuns returns runs newest first, a page at a time.
	ListRuns(ctx context.Context, q ListQuery) (runs []*havenv1.Run, nextPageToken string, err error)
	// InterruptActive marks every run that is still pending, running or
	// linking as interrupted, with reason, and returns how many it marked.
	// A coordinator calls it at start-up and on shutdown: the in-memory
	// part of those runs is gone.
	InterruptActive(ctx context.Context, reason string, at time.Time) (int, error)

	// CountSubmissions counts the runs a requester (organisation and
	// user id) submitted at or after since (those refused by policy, and
	// the rest), and the runs still in progress of the requester and of
	// their whole organisation.
	CountSubmissions(ctx context.Context, org, id string, since time.Time) (SubmissionCounts, error)

	// PutRelease stores the released table of a run, once; a second
	// release of the same run fails with ErrAlreadyExists.
	PutRelease(ctx context.Context, rel Release) error
	// GetRelease returns the released table of a run, or ErrNotFound.
	GetRelease(ctx context.Context, runID string) (Release, error)

	// Ledger keeps the release ledger; PutRelease records each release
	// in it, in the same transaction, and fails wrapping ErrLedger if it
	// cannot.
	Ledger

	// NetworkOptOuts returns the network type 1 opt-out list as stored.
	NetworkOptOuts(ctx context.Context) (NetworkOptOuts, error)
	// PutOptOutSet replaces one practice's list and advances the list's
	// seq to set.Seq, in one transaction; it fails unless the store is at
	// an earlier seq of epoch.
	PutOptOutSet(ctx context.Context, epoch string, set OptOutSet) error

	// Close releases the store's resources.
	Close() error
}

// NetworkOptOuts is the stored network type 1 opt-out list.
type NetworkOptOuts struct {
	// Epoch is a random id chosen when the store was created.
	Epoch string
	// Seq counts the changes accepted so far.
	Seq  uint64
	Sets []OptOutSet
}

// OptOutSet is one practice's type 1 list: sorted, distinct 16-byte keyed
// hashes, concatenated, and their SHA-256.
type OptOutSet struct {
	Publisher string
	Digest    string
	Seq       uint64
	Updated   time.Time
	Hashes    []byte
}

// ListQuery selects runs for ListRuns.
type ListQuery struct {
	States       []havenv1.RunState // any of these; empty for all
	DefinitionID string             // empty for all
	RequesterOrg string             // empty for all
	PageSize     int                // 0 for the default (50); at most 500
	PageToken    string             // from the previous page
}

// SubmissionCounts are a requester's recent submissions.
type SubmissionCounts struct {
	// Started are runs that were not refused by policy, whatever became
	// of them.
	Started int
	// Refused are runs haven/submit refused.
	Refused int
	// Active are the requester's runs still pending, running or linking,
	// whenever submitted; OrgActive are their organisation's.
	Active    int
	OrgActive int
}

// Release is a disclosure-controlled table released for a run.
type Release struct {
	RunID     string
	CreatedAt time.Time
	// Table is the released table as an Arrow IPC stream. Withheld cells
	// are null, with their reasons in a companion column (see
	// coordinator/disclosure).
	Table []byte
	// SHA256 is the hex digest of Table; the audit log's release entry
	// names it, so a stored table can be matched to its audit.
	SHA256 string
}
