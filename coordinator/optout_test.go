package coordinator_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// optOutList makes a practice's list of k sorted, distinct hashes.
func optOutList(ods string, k int) []byte {
	var hs [][]byte
	for i := range k {
		h := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		h = sha256.Sum256(append([]byte(ods), h[:]...))
		hs = append(hs, h[:16])
	}
	slices.SortFunc(hs, bytes.Compare)
	return bytes.Join(hs, nil)
}

// listsAccepted counts the changed opt-out lists in n's audit log.
func listsAccepted(t *testing.T, n *coordinatortest.Network) int {
	t.Helper()
	f, err := os.Open(n.Config.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	count := 0
	_, _ = audit.Scan(f, func(e audit.Entry) {
		var ev struct {
			Event   string `json:"event"`
			Changed bool   `json:"changed"`
		}
		if e.Kind == audit.KindNode && json.Unmarshal(e.Data, &ev) == nil && ev.Event == "opt_out_list_received" && ev.Changed {
			count++
		}
	})
	return count
}

// When every practice publishes its type 1 list at once, as when a
// network starts, a node is not sent one message per change: the changes
// wait for the link's interval and go together. However long the
// interval, a task never reaches a node ahead of a change the coordinator
// had accepted when the task was queued.
func TestOptOutListsCoalesceAheadOfTasks(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// An interval far longer than the test: only the task can flush the
	// changes out.
	n := coordinatortest.New(t, coordinatortest.Options{OptOutInterval: time.Hour})
	nodes, _ := statinsSites(t, ctx, n, 7, 6, 40)
	for _, nd := range nodes {
		if err := nd.Publish(optOutList(nd.ODS, 25)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); listsAccepted(t, n) < len(nodes); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the coordinator accepted %d of %d lists", listsAccepted(t, n), len(nodes))
		}
	}
	run := releaseStatins(t, ctx, n, "ana")
	if run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("run ended %s", run.GetState())
	}
	for _, nd := range nodes {
		seq := nd.Sequence()
		// The list as it stood at registration (empty), then the changes
		// in one message, then the task.
		if len(seq) != 3 || seq[0].GetNetworkOptOuts().GetVersion().GetSeq() != 0 || seq[1].GetNetworkOptOuts() == nil || seq[2].GetTask() == nil {
			kinds := make([]string, len(seq))
			for i, m := range seq {
				kinds[i] = string(m.ProtoReflect().WhichOneof(m.ProtoReflect().Descriptor().Oneofs().Get(0)).Name())
			}
			t.Errorf("%s was sent %v; want the list at registration, its changes in one message, then its task", nd.ODS, kinds)
			continue
		}
		l := seq[1].GetNetworkOptOuts()
		got := map[string]int{}
		for _, s := range l.GetSets() {
			got[s.GetPublisherOds()] = len(s.GetHashes()) / 16
		}
		if len(got) != len(nodes) || l.GetVersion().GetSeq() != uint64(len(nodes)) || l.GetMore() {
			t.Errorf("%s was sent lists %v at version %v; want all %d practices' 25 hashes", nd.ODS, got, l.GetVersion(), len(nodes))
		}
	}
}
