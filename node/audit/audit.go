// Package audit is a node's own audit log, for the provider's IT staff:
// one JSON line per event, appended to a file in the node's audit
// directory, recording every task the node received, what its policy
// decided and why, which SQL it ran (by hash), and exactly what left the
// site — rows, bytes and field names — and what the coordinator said it
// received (DESIGN §10).
//
// The log holds no patient data: no NHS number, birth date, pseudonym or
// secret. Records are built from typed fields the node fills in itself;
// the one free-text field that can carry someone else's words, an error
// message, passes through Redact first.
package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// FileName is the log's name in the audit directory.
const FileName = "node-audit.jsonl"

// Event is what a record is about.
type Event string

// Events.
const (
	// A task arrived from the coordinator.
	EventReceived Event = "task_received"
	// The node refused a task; nothing was queried.
	EventRefused Event = "task_refused"
	// Policy allowed the task and the node is running it.
	EventAccepted Event = "task_accepted"
	// The task's result left the site and the coordinator confirmed it.
	EventDone Event = "task_done"
	// The task stopped; whatever it had uploaded is void.
	EventFailed Event = "task_failed"
	// Provider IT paused or resumed the node.
	EventPaused  Event = "node_paused"
	EventResumed Event = "node_resumed"
	// The daemon started or stopped.
	EventStarted Event = "node_started"
	EventStopped Event = "node_stopped"
)

// Reason is one reason a decision gave.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Source  string `json:"source,omitempty"`
}

// Receipt is what the coordinator said it received for an upload.
type Receipt struct {
	Rows    int64 `json:"rows"`
	Bytes   int64 `json:"bytes"`
	Batches int64 `json:"batches"`
}

// Record is one line of the log. Fields that do not apply to an event are
// left out of its JSON.
type Record struct {
	Time  time.Time `json:"time"`
	Event Event     `json:"event"`

	TaskID            string `json:"task_id,omitempty"`
	RunID             string `json:"run_id,omitempty"`
	DefinitionID      string `json:"definition_id,omitempty"`
	DefinitionVersion uint32 `json:"definition_version,omitempty"`
	DefinitionHash    string `json:"definition_hash,omitempty"`
	Purpose           string `json:"purpose,omitempty"`
	RequesterOrg      string `json:"requester_org,omitempty"`
	Mode              string `json:"mode,omitempty"`
	// Parameters are the run's parameter values as the task named them:
	// dates, numbers and codelist names chosen by the commissioner.
	Parameters map[string]string `json:"parameters,omitempty"`

	// The participate decision.
	DecisionID     string   `json:"decision_id,omitempty"`
	BundleRevision string   `json:"bundle_revision,omitempty"`
	Allow          *bool    `json:"allow,omitempty"`
	Reasons        []Reason `json:"reasons,omitempty"`

	// SQL is the SHA-256 of each statement run, by statement name.
	SQL map[string]string `json:"sql_sha256,omitempty"`

	// What was sent.
	Rows               int64    `json:"rows,omitempty"`
	Bytes              int64    `json:"bytes,omitempty"`
	Batches            int64    `json:"batches,omitempty"`
	Fields             []string `json:"fields,omitempty"`
	ExcludedInvalidNHS int64    `json:"rows_excluded_invalid_nhs_number,omitempty"`
	ExcludedOptOut     int64    `json:"rows_excluded_opt_out,omitempty"`
	// NetworkOptOutVersion is the version of the network type 1 opt-out
	// list the task left its patients out by (epoch/seq).
	NetworkOptOutVersion string   `json:"network_opt_out_version,omitempty"`
	Receipt              *Receipt `json:"receipt,omitempty"`
	DurationMilliseconds int64    `json:"duration_ms,omitempty"`

	// Why a task failed, or why the node was paused.
	ErrorCode string `json:"error_code,omitempty"`
	Message   string `json:"message,omitempty"`
}

// Log is an append-only audit log. It is safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	path string
	f    *os.File
	now  func() time.Time
}

// Open opens (creating if needed) the log in dir. The directory is created
// with mode 0700 and the file with 0600: the log names runs and
// requesters, which provider IT may read and others need not.
func Open(dir string) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	p := filepath.Join(dir, FileName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return &Log{path: p, f: f, now: time.Now}, nil
}

// Path is the file the log writes.
func (l *Log) Path() string { return l.path }

// Append writes r as one line and syncs it to disk before returning, so
// that what the node reports sending is on record first. A zero Time is
// set to now. Message, which may quote a database or plugin, is passed
// through Redact; reasons come from the board's policy and are kept as
// written.
func (l *Log) Append(r Record) error {
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	r.Time = r.Time.UTC()
	r.Message = Redact(r.Message)
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: encode %s record: %w", r.Event, err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("audit: log is closed")
	}
	if _, err := l.f.Write(b); err != nil {
		return fmt.Errorf("audit: write %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: sync %s: %w", l.path, err)
	}
	return nil
}

// Close closes the log. It is safe to call more than once.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// maxLine bounds one record when reading: a real one is under a kilobyte.
const maxLine = 1 << 20

// Read returns the records in dir's log at or after since (zero: all), in
// the order they were written. A torn last line, left by a crash in the
// middle of a write, is skipped; any other line that does not parse is an
// error naming it.
func Read(dir string, since time.Time) ([]Record, error) {
	p := filepath.Join(dir, FileName)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer f.Close()
	recs, err := Scan(f, since)
	if err != nil {
		return nil, fmt.Errorf("read audit log %s: %w", p, err)
	}
	return recs, nil
}

// Scan reads records from r as Read does.
func Scan(r io.Reader, since time.Time) ([]Record, error) {
	br := bufio.NewReaderSize(r, maxLine)
	var out []Record
	for line := 1; ; line++ {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line, maxLine)
		}
		torn := errors.Is(err, io.EOF)
		if err != nil && !torn {
			return nil, err
		}
		if len(bytes.TrimSpace(b)) > 0 {
			var rec Record
			if jerr := json.Unmarshal(b, &rec); jerr != nil {
				if torn {
					return out, nil
				}
				return nil, fmt.Errorf("line %d: not an audit record: %v", line, jerr)
			}
			if since.IsZero() || !rec.Time.Before(since) {
				out = append(out, rec)
			}
		}
		if torn {
			return out, nil
		}
	}
}

// Patterns that look like patient identifiers: runs of eight or more
// digits, possibly spaced as NHS numbers are written (3-3-4), and
// calendar dates. Error text from a database or plugin can quote a value
// it choked on; such text is redacted before it is logged, audited or
// sent.
var (
	digitRun = regexp.MustCompile(`\d{3}[ -]?\d{3}[ -]?\d{4}|\d{8,}`)
	dateLike = regexp.MustCompile(`\d{4}-\d{2}-\d{2}|\d{2}/\d{2}/\d{4}`)
)

// Redact replaces anything in s that looks like an NHS number or a date
// with "[redacted]".
func Redact(s string) string {
	if s == "" {
		return s
	}
	s = dateLike.ReplaceAllString(s, "[redacted]")
	return digitRun.ReplaceAllString(s, "[redacted]")
}
