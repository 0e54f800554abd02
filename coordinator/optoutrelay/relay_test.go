package optoutrelay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// hashes makes a sorted, distinct list of k hashes, different per seed.
func hashes(seed string, k int) []byte {
	var hs [][]byte
	for i := range k {
		s := sha256.Sum256([]byte(seed + string(rune(i))))
		hs = append(hs, s[:HashSize])
	}
	slices.SortFunc(hs, bytes.Compare)
	return bytes.Join(hs, nil)
}

func publication(h []byte) *havenv1.OptOutPublish {
	return &havenv1.OptOutPublish{Hashes: h, Digest: Digest(h)}
}

func openStore(t *testing.T, path string) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// holds returns the lists a node that applied msgs to held would hold.
func apply(held map[string][]byte, msgs []*havenv1.CoordinatorMessage) map[string][]byte {
	out := map[string][]byte{}
	if msgs[0].GetNetworkOptOuts().GetBase().GetEpoch() != "" {
		for k, v := range held {
			out[k] = v
		}
	}
	for _, m := range msgs {
		for _, s := range m.GetNetworkOptOuts().GetSets() {
			if len(s.GetHashes()) == 0 {
				delete(out, s.GetPublisherOds())
			} else {
				out[s.GetPublisherOds()] = s.GetHashes()
			}
		}
	}
	return out
}

func TestPublishSyncAndRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	st := openStore(t, path)
	now := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	r, err := Open(ctx, st, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	v0 := r.Version()
	if v0.GetEpoch() == "" || v0.GetSeq() != 0 {
		t.Fatalf("new list at %v", v0)
	}
	var steps []*havenv1.NetworkOptOuts // what a node current before each change is sent after it
	a, c := hashes("a", 3), hashes("c", 5)
	for _, step := range []struct {
		ods     string
		h       []byte
		changed bool
	}{
		{"A1", a, true},
		{"A1", a, false},       // the same list again: no change
		{"B2", nil, false},     // an empty list from a practice with none
		{"C3", c, true},        // another practice
		{"A1", a[:16], true},   // A1's list shrinks
		{"C3", []byte{}, true}, // C3's patients all withdrew
	} {
		before := r.Version()
		changed, err := r.Publish(ctx, step.ods, publication(step.h))
		if err != nil || changed != step.changed {
			t.Fatalf("publish %s: changed %v, %v; want %v", step.ods, changed, err, step.changed)
		}
		if changed {
			msgs := r.Sync(before)
			if len(msgs) != 1 {
				t.Fatalf("publish %s: a node current before it is sent %d messages", step.ods, len(msgs))
			}
			steps = append(steps, msgs[0].GetNetworkOptOuts())
		}
	}
	if len(steps) != 4 || r.Version().GetSeq() != 4 {
		t.Fatalf("%d changes, seq %d; want 4, 4", len(steps), r.Version().GetSeq())
	}
	for i, m := range steps {
		if m.GetBase().GetSeq() != uint64(i) || m.GetVersion().GetSeq() != uint64(i+1) || len(m.GetSets()) != 1 {
			t.Errorf("change %d: %v→%v with %d lists", i, m.GetBase(), m.GetVersion(), len(m.GetSets()))
		}
	}
	want := map[string][]byte{"A1": a[:16]}

	// A node with nothing gets the whole list; one at seq 2 gets what
	// changed since; one of another epoch or from the future starts over.
	for _, known := range []*havenv1.NetworkOptOutVersion{nil, {Epoch: v0.GetEpoch(), Seq: 2}, {Epoch: "other", Seq: 1},
		{Epoch: v0.GetEpoch(), Seq: 99}, {Epoch: v0.GetEpoch(), Seq: 4}} {
		held := map[string][]byte{"A1": a, "C3": c} // as at seq 2 (C3 came at 2)
		if known.GetSeq() == 4 {
			held = want
		}
		msgs := r.Sync(known)
		last := msgs[len(msgs)-1].GetNetworkOptOuts()
		if last.GetMore() || last.GetVersion().GetSeq() != 4 {
			t.Errorf("known %v: last message %v", known, last)
		}
		if got := apply(held, msgs); len(got) != len(want) || !bytes.Equal(got["A1"], want["A1"]) {
			t.Errorf("known %v: node holds %v after sync", known, got)
		}
		if known.GetSeq() == 4 && len(last.GetSets()) != 0 {
			t.Errorf("a node that is current was sent %d lists", len(last.GetSets()))
		}
	}

	// A restarted coordinator has the same list under the same version.
	st.Close()
	r2, err := Open(ctx, openStore(t, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Version().GetEpoch() != v0.GetEpoch() || r2.Version().GetSeq() != 4 {
		t.Fatalf("after restart: %v", r2.Version())
	}
	if got := apply(nil, r2.Sync(nil)); len(got) != 1 || !bytes.Equal(got["A1"], a[:16]) {
		t.Errorf("after restart the list is %v", got)
	}
	if p, h := r2.Size(); p != 1 || h != 1 {
		t.Errorf("size %d practices, %d hashes", p, h)
	}
}

func TestSyncChunks(t *testing.T) {
	ctx := context.Background()
	r, err := Open(ctx, openStore(t, filepath.Join(t.TempDir(), "s.db")), nil)
	if err != nil {
		t.Fatal(err)
	}
	// 30 practices of 5,000 hashes: 2.4 MB, more than two chunks.
	for i := range 30 {
		ods := "P" + string(rune('A'+i))
		if _, err := r.Publish(ctx, ods, publication(hashes(ods, 5000))); err != nil {
			t.Fatal(err)
		}
	}
	msgs := r.Sync(nil)
	if len(msgs) < 3 {
		t.Fatalf("%d messages, want the list in chunks", len(msgs))
	}
	total := 0
	for i, m := range msgs {
		n := m.GetNetworkOptOuts()
		if n.GetMore() != (i < len(msgs)-1) {
			t.Errorf("message %d: more = %v", i, n.GetMore())
		}
		size := 0
		for _, s := range n.GetSets() {
			size += len(s.GetHashes())
		}
		if size > chunkBytes+5000*HashSize {
			t.Errorf("message %d carries %d bytes", i, size)
		}
		total += len(n.GetSets())
	}
	if total != 30 {
		t.Errorf("%d lists sent, want 30", total)
	}
}

func TestPublishRefusesBadLists(t *testing.T) {
	ctx := context.Background()
	r, err := Open(ctx, openStore(t, filepath.Join(t.TempDir(), "s.db")), nil)
	if err != nil {
		t.Fatal(err)
	}
	good := hashes("g", 4)
	unsorted := append(slices.Clone(good[16:32]), good[:16]...)
	dup := append(slices.Clone(good[:16]), good[:16]...)
	big := hashes("b", MaxHashes+1)
	for _, tc := range []struct {
		name string
		ods  string
		p    *havenv1.OptOutPublish
		want string
	}{
		{"ragged", "A1", publication(good[:20]), "not a multiple of 16"},
		{"digest", "A1", &havenv1.OptOutPublish{Hashes: good, Digest: Digest(nil)}, "does not match its digest"},
		{"unsorted", "A1", publication(unsorted), "not sorted"},
		{"duplicate", "A1", publication(dup), "not sorted and distinct"},
		{"too many", "A1", publication(big), "more than"},
		{"no practice", "", publication(good), "no practice"},
	} {
		changed, err := r.Publish(ctx, tc.ods, tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || changed {
			t.Errorf("%s: changed %v, %v; want refused with %q", tc.name, changed, err, tc.want)
		}
	}
	if r.Version().GetSeq() != 0 {
		t.Errorf("refused lists moved the version to %v", r.Version())
	}
}
