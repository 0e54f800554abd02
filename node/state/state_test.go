package state

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func TestPause(t *testing.T) {
	dir := t.TempDir()
	p, err := ReadPause(dir)
	if err != nil || p.Paused {
		t.Fatalf("no file: %+v, %v; want not paused", p, err)
	}
	since := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	if err := WritePause(dir, Pause{Paused: true, Reason: "server maintenance", Since: since}); err != nil {
		t.Fatal(err)
	}
	p, err = ReadPause(dir)
	if err != nil || !p.Paused || p.Reason != "server maintenance" || !p.Since.Equal(since) {
		t.Fatalf("after pause: %+v, %v", p, err)
	}
	os.WriteFile(filepath.Join(dir, PauseFile), []byte("{paused: yes"), 0o600)
	if _, err := ReadPause(dir); err == nil {
		t.Error("a damaged pause file read without error")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != PauseFile {
			t.Errorf("stray file %s left in the state directory", e.Name())
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadStatus(dir); err == nil {
		t.Error("missing status read without error")
	}
	s := Status{PID: 42, Site: "G80001", Connected: true, BundleRevision: "2026.1",
		LastTasks: []TaskSummary{{TaskID: "t1", Outcome: "done", Rows: 3}}}
	if err := WriteStatus(dir, s); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStatus(dir)
	if err != nil || got.PID != 42 || !got.Connected || len(got.LastTasks) != 1 || got.LastTasks[0].Rows != 3 {
		t.Fatalf("ReadStatus = %+v, %v", got, err)
	}
}

func done(id string, rows int64) *havenv1.TaskOutcome {
	return &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Done{Done: &havenv1.TaskDone{TaskId: id, Rows: rows}}}
}

func TestJournalLifecycle(t *testing.T) {
	dir := t.TempDir()
	j, abandoned, err := OpenJournal(dir)
	if err != nil || len(abandoned) != 0 {
		t.Fatalf("fresh journal: %v %v", abandoned, err)
	}
	j.Started("t1", "r1")
	j.Started("t2", "r2")
	j.Started("t3", "r3")
	if err := j.Finished(done("t1", 7)); err != nil {
		t.Fatal(err)
	}
	refused := &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Refused{Refused: &havenv1.TaskRefused{TaskId: "t4",
		Reasons: []*havenv1.PolicyReason{{Code: "site_paused", Message: "paused"}}}}}
	j.Finished(refused)
	if got := j.Running(); !slices.Equal(got, []string{"t2", "t3"}) {
		t.Errorf("Running = %v", got)
	}
	if got := j.Unreported(); len(got) != 2 || OutcomeTaskID(got[0]) != "t1" || OutcomeTaskID(got[1]) != "t4" {
		t.Errorf("Unreported = %v", got)
	}
	if running, o, _ := j.Lookup("t1"); running || o.GetDone().GetRows() != 7 {
		t.Errorf("Lookup(t1) = %v %v", running, o)
	}
	if err := j.Confirmed("t4", "unknown"); err != nil {
		t.Fatal(err)
	}
	if _, o, confirmed := j.Lookup("t4"); o != nil || !confirmed {
		t.Errorf("t4 after confirm: %v %v", o, confirmed)
	}
	j.Finished(done("t3", 1))

	// The process dies with t2 running: on reopen it is abandoned, and the
	// unconfirmed outcomes are still there.
	j2, abandoned, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(abandoned, []string{"t2"}) {
		t.Errorf("abandoned = %v, want [t2]", abandoned)
	}
	if len(j2.Running()) != 0 {
		t.Errorf("running after reopen: %v", j2.Running())
	}
	got := j2.Unreported()
	if len(got) != 3 {
		t.Fatalf("unreported after reopen: %v", got)
	}
	if !proto.Equal(got[0], done("t1", 7)) || got[1].GetFailed().GetCode() != havenv1.TaskErrorCode_TASK_ERROR_CODE_ABANDONED || !proto.Equal(got[2], done("t3", 1)) {
		t.Errorf("unreported after reopen = %v", got)
	}
	if err := j2.Finished(&havenv1.TaskOutcome{}); err == nil {
		t.Error("an outcome naming no task was accepted")
	}
}

func TestJournalDamaged(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, JournalFile), []byte(`{"running": [`), 0o600)
	if _, _, err := OpenJournal(dir); err == nil {
		t.Error("damaged journal opened")
	}
	os.WriteFile(filepath.Join(dir, JournalFile), []byte(`{"unreported": [{"done": {"taskId": "t1", "colour": 1}}]}`), 0o600)
	if _, _, err := OpenJournal(dir); err == nil {
		t.Error("journal with an unknown outcome field opened")
	}
}
