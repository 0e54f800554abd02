package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// Journal records the tasks a node is running and the outcomes the
// coordinator may not have yet, on disk, so that both survive a dropped
// link and a restart (proto/haven/v1: "Heartbeat and reconnect").
//
// A task is Started when the node takes it on and Finished with its
// outcome; the outcome stays in the journal, and goes into every Register,
// until the coordinator has certainly seen it (Confirmed). On Open, tasks
// a previous process left running become abandoned outcomes: the node can
// no longer finish them, and says so.
//
// A Journal is safe for concurrent use.
type Journal struct {
	mu         sync.Mutex
	path       string
	running    map[string]runningTask
	unreported map[string]*havenv1.TaskOutcome
	// confirmed remembers task ids whose outcome the coordinator holds, so
	// a task sent again is recognised. Memory only, bounded.
	confirmed []string
	now       func() time.Time
}

type runningTask struct {
	TaskID  string    `json:"task_id"`
	RunID   string    `json:"run_id"`
	Started time.Time `json:"started"`
}

// journalFile is the JSON form of a journal.
type journalFile struct {
	Running    []runningTask     `json:"running"`
	Unreported []json.RawMessage `json:"unreported"` // protojson TaskOutcome
}

// maxConfirmed bounds the memory of confirmed task ids.
const maxConfirmed = 4096

// OpenJournal reads the journal in dir, creating it if absent, and turns
// any task a previous process left running into an abandoned outcome.
// abandoned lists those tasks' ids.
func OpenJournal(dir string) (j *Journal, abandoned []string, err error) {
	j = &Journal{
		path:       filepath.Join(dir, JournalFile),
		running:    map[string]runningTask{},
		unreported: map[string]*havenv1.TaskOutcome{},
		now:        time.Now,
	}
	b, err := os.ReadFile(j.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return j, nil, j.save()
	case err != nil:
		return nil, nil, fmt.Errorf("open task journal: %w", err)
	}
	var jf journalFile
	if err := json.Unmarshal(b, &jf); err != nil {
		return nil, nil, fmt.Errorf("open task journal %s: %w", j.path, err)
	}
	for i, raw := range jf.Unreported {
		o := &havenv1.TaskOutcome{}
		if err := protojson.Unmarshal(raw, o); err != nil {
			return nil, nil, fmt.Errorf("open task journal %s: outcome %d: %w", j.path, i, err)
		}
		id := OutcomeTaskID(o)
		if id == "" {
			return nil, nil, fmt.Errorf("open task journal %s: outcome %d names no task", j.path, i)
		}
		j.unreported[id] = o
	}
	for _, rt := range jf.Running {
		if _, done := j.unreported[rt.TaskID]; done {
			continue
		}
		j.unreported[rt.TaskID] = Abandoned(rt.TaskID, "the node stopped while the task was running")
		abandoned = append(abandoned, rt.TaskID)
	}
	slices.Sort(abandoned)
	return j, abandoned, j.save()
}

// Abandoned is the outcome of a task the node gave up.
func Abandoned(taskID, why string) *havenv1.TaskOutcome {
	return &havenv1.TaskOutcome{Outcome: &havenv1.TaskOutcome_Failed{Failed: &havenv1.TaskFailed{
		TaskId: taskID, Code: havenv1.TaskErrorCode_TASK_ERROR_CODE_ABANDONED, Message: why,
	}}}
}

// OutcomeTaskID is the task an outcome is for, or "" if it names none.
func OutcomeTaskID(o *havenv1.TaskOutcome) string {
	switch x := o.GetOutcome().(type) {
	case *havenv1.TaskOutcome_Done:
		return x.Done.GetTaskId()
	case *havenv1.TaskOutcome_Failed:
		return x.Failed.GetTaskId()
	case *havenv1.TaskOutcome_Refused:
		return x.Refused.GetTaskId()
	}
	return ""
}

// Started records that the node took on a task.
func (j *Journal) Started(taskID, runID string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.running[taskID] = runningTask{TaskID: taskID, RunID: runID, Started: j.now().UTC()}
	return j.save()
}

// Finished records a task's outcome, which stays unreported until
// Confirmed. A task need not have been Started (a refusal is an outcome).
func (j *Journal) Finished(o *havenv1.TaskOutcome) error {
	id := OutcomeTaskID(o)
	if id == "" {
		return errors.New("task journal: outcome names no task")
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.running, id)
	j.unreported[id] = proto.Clone(o).(*havenv1.TaskOutcome)
	return j.save()
}

// Confirmed records that the coordinator holds the outcomes of these tasks.
func (j *Journal) Confirmed(taskIDs ...string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	changed := false
	for _, id := range taskIDs {
		if _, ok := j.unreported[id]; !ok {
			continue
		}
		delete(j.unreported, id)
		j.confirmed = append(j.confirmed, id)
		changed = true
	}
	if len(j.confirmed) > maxConfirmed {
		j.confirmed = slices.Clone(j.confirmed[len(j.confirmed)-maxConfirmed:])
	}
	if !changed {
		return nil
	}
	return j.save()
}

// Running returns the ids of tasks started and not finished, sorted.
func (j *Journal) Running() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Sorted(maps.Keys(j.running))
}

// Unreported returns copies of the outcomes not yet confirmed, by task id.
func (j *Journal) Unreported() []*havenv1.TaskOutcome {
	j.mu.Lock()
	defer j.mu.Unlock()
	ids := slices.Sorted(maps.Keys(j.unreported))
	out := make([]*havenv1.TaskOutcome, len(ids))
	for i, id := range ids {
		out[i] = proto.Clone(j.unreported[id]).(*havenv1.TaskOutcome)
	}
	return out
}

// Lookup says what the journal knows of a task: running, finished with an
// outcome the coordinator may not hold (returned), or finished and
// confirmed. A task the journal does not know gives all false and nil.
func (j *Journal) Lookup(taskID string) (running bool, outcome *havenv1.TaskOutcome, confirmed bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.running[taskID]; ok {
		return true, nil, false
	}
	if o, ok := j.unreported[taskID]; ok {
		return false, proto.Clone(o).(*havenv1.TaskOutcome), false
	}
	return false, nil, slices.Contains(j.confirmed, taskID)
}

// save writes the journal. The caller holds mu.
func (j *Journal) save() error {
	jf := journalFile{Running: make([]runningTask, 0, len(j.running)), Unreported: make([]json.RawMessage, 0, len(j.unreported))}
	for _, rt := range j.running {
		jf.Running = append(jf.Running, rt)
	}
	slices.SortFunc(jf.Running, func(a, b runningTask) int { return strings.Compare(a.TaskID, b.TaskID) })
	ids := slices.Sorted(maps.Keys(j.unreported))
	for _, id := range ids {
		b, err := protojson.Marshal(j.unreported[id])
		if err != nil {
			return fmt.Errorf("task journal: encode outcome of %s: %w", id, err)
		}
		jf.Unreported = append(jf.Unreported, b)
	}
	if err := writeJSON(filepath.Dir(j.path), filepath.Base(j.path), jf); err != nil {
		return fmt.Errorf("task journal: %w", err)
	}
	return nil
}
