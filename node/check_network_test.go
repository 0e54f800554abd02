package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/node/optout"
	"github.com/havenhealth/haven/node/pseudonym"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// `haven node check` reports the network type 1 list's size and age, and
// warns when there is none or it is old.
func TestCheckNetworkList(t *testing.T) {
	received := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	sec, _ := pseudonym.NewSecret(bytes.Repeat([]byte{4}, 32))
	h, _ := pseudonym.NewOptOutHasher(sec)
	p := optout.Publish(h, optout.Of("9434765919", "4010232137"))
	withList := t.TempDir()
	r, err := optout.OpenReceiver(withList, func() time.Time { return received })
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(&havenv1.NetworkOptOuts{Version: &havenv1.NetworkOptOutVersion{Epoch: "E1", Seq: 7},
		Sets: []*havenv1.PublisherOptOuts{{PublisherOds: "A81001", Hashes: optout.HashList(p.Hashes), Digest: p.Digest, Seq: 7,
			UpdatedAt: timestamppb.New(received)}}}); err != nil {
		t.Fatal(err)
	}
	damaged := t.TempDir()
	if err := os.WriteFile(filepath.Join(damaged, optout.NetworkFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		dir      string
		now      time.Time
		ok, warn bool
		detail   string
	}{
		{"none yet", t.TempDir(), received, true, true, "not received yet"},
		{"fresh", withList, received.Add(90 * time.Second), true, false, "2 patients from 1 practices; version E1/7; received 2026-06-01 08:00:00 (1m30s ago)"},
		{"stale", withList, received.Add(30 * time.Hour), true, true, "has not heard from the coordinator"},
		{"damaged", damaged, received, false, false, "network opt-out list"},
	} {
		f := checkNetworkList(tc.dir, tc.now)
		if f.OK != tc.ok || f.Warn != tc.warn || !strings.Contains(f.Detail, tc.detail) {
			t.Errorf("%s: %+v; want ok %v warn %v detail %q", tc.name, f, tc.ok, tc.warn, tc.detail)
		}
	}
}
