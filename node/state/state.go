// Package state is what a node keeps in its state directory besides the
// run ledger (node/pseudonym): the pause switch provider IT flips, the
// status file the daemon writes for `haven node status`, and the task
// journal that carries task outcomes across dropped links and restarts.
//
// The node never listens on a port, so these files are how the daemon and
// the `haven node …` commands talk. Each is small JSON, replaced whole by
// an atomic rename, so a reader never sees half of one.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// File names in the state directory.
const (
	PauseFile   = "pause.json"
	StatusFile  = "status.json"
	JournalFile = "journal.json"
)

// Pause is the node's pause switch. A paused node keeps its link up and
// refuses every new task.
type Pause struct {
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

// ReadPause reads the pause switch in dir. No file means not paused. A
// file that cannot be read or parsed is an error, which the node treats as
// paused: a switch provider IT flipped must not be lost to a typo.
func ReadPause(dir string) (Pause, error) {
	var p Pause
	b, err := os.ReadFile(filepath.Join(dir, PauseFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Pause{}, nil
	}
	if err != nil {
		return Pause{}, fmt.Errorf("read pause switch: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return Pause{}, fmt.Errorf("read pause switch %s: %w", filepath.Join(dir, PauseFile), err)
	}
	return p, nil
}

// WritePause sets the pause switch in dir.
func WritePause(dir string, p Pause) error {
	if err := writeJSON(dir, PauseFile, p); err != nil {
		return fmt.Errorf("write pause switch: %w", err)
	}
	return nil
}

// TaskSummary is one recent task in the status file.
type TaskSummary struct {
	TaskID       string    `json:"task_id"`
	RunID        string    `json:"run_id"`
	DefinitionID string    `json:"definition_id"`
	Outcome      string    `json:"outcome"` // done, failed, refused, running
	Detail       string    `json:"detail,omitempty"`
	Rows         int64     `json:"rows,omitempty"`
	Bytes        int64     `json:"bytes,omitempty"`
	At           time.Time `json:"at"`
	// NetworkOptOutVersion is the version of the network type 1 opt-out
	// list the task used; empty if it stopped before reading it.
	NetworkOptOutVersion string `json:"network_opt_out_version,omitempty"`
}

// Status is what the daemon says about itself, for `haven node status`.
type Status struct {
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`

	Site        string `json:"site"`
	Kind        string `json:"kind"`
	Coordinator string `json:"coordinator"`

	// Link is the session state: connecting, connected, backoff, closed.
	Link      string    `json:"link"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	SessionID string    `json:"session_id,omitempty"`
	LastError string    `json:"last_error,omitempty"`

	BundleRevision string `json:"bundle_revision"`
	Paused         bool   `json:"paused"`
	PauseReason    string `json:"pause_reason,omitempty"`

	ConnectorPlugin  string `json:"connector_plugin,omitempty"`
	ConnectorVersion string `json:"connector_version,omitempty"`
	ConnectorDialect string `json:"connector_dialect,omitempty"`

	TasksRunning int           `json:"tasks_running"`
	LastTasks    []TaskSummary `json:"last_tasks,omitempty"`

	// NetworkOptOuts is the network type 1 opt-out list the node holds;
	// nil until it first received one.
	NetworkOptOuts *NetworkOptOuts `json:"network_opt_outs,omitempty"`
}

// NetworkOptOuts describes the network type 1 opt-out list a node holds
// and what it last published to it.
type NetworkOptOuts struct {
	Version    string    `json:"version"`
	Hashes     int       `json:"hashes"`
	Publishers int       `json:"publishers"`
	Received   time.Time `json:"received"`
	// Published is how many of the site's own type 1 objections it last
	// published, and when; zero for a trust.
	Published   int       `json:"published"`
	PublishedAt time.Time `json:"published_at,omitzero"`
}

// WriteStatus replaces the status file in dir.
func WriteStatus(dir string, s Status) error {
	if err := writeJSON(dir, StatusFile, s); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// ReadStatus reads the status file in dir.
func ReadStatus(dir string) (Status, error) {
	var s Status
	b, err := os.ReadFile(filepath.Join(dir, StatusFile))
	if err != nil {
		return s, fmt.Errorf("read status: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("read status %s: %w", filepath.Join(dir, StatusFile), err)
	}
	return s, nil
}

// writeJSON replaces dir/name with v as indented JSON, by writing a
// temporary file, syncing it and renaming it over the old one.
func writeJSON(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return writeFileAtomic(dir, name, b)
}

func writeFileAtomic(dir, name string, b []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}
