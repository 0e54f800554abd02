package optout

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/node/pseudonym"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func testHasher(t testing.TB) *pseudonym.OptOutHasher {
	t.Helper()
	s, err := pseudonym.NewSecret(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	h, err := pseudonym.NewOptOutHasher(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// publisherSet is one practice's list as the coordinator relays it.
func publisherSet(h *pseudonym.OptOutHasher, ods string, seq uint64, nums ...string) *havenv1.PublisherOptOuts {
	p := Publish(h, Of(nums...))
	return &havenv1.PublisherOptOuts{PublisherOds: ods, Hashes: HashList(p.Hashes), Digest: p.Digest, Seq: seq,
		UpdatedAt: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
}

func ver(epoch string, seq uint64) *havenv1.NetworkOptOutVersion {
	return &havenv1.NetworkOptOutVersion{Epoch: epoch, Seq: seq}
}

func TestReceiverAppliesAndKeeps(t *testing.T) {
	h := testHasher(t)
	nums := validNumbers(t, 6, 7)
	dir := t.TempDir()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r, err := OpenReceiver(dir, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if r.Current() != nil {
		t.Fatal("a fresh node holds a network list")
	}
	// The whole list, in two messages: nothing takes effect until the last.
	if err := r.Apply(&havenv1.NetworkOptOuts{Version: ver("e1", 2), More: true,
		Sets: []*havenv1.PublisherOptOuts{publisherSet(h, "A1", 1, nums[0], nums[1])}}); err != nil {
		t.Fatal(err)
	}
	if r.Current() != nil {
		t.Fatal("part of an update took effect")
	}
	if err := r.Apply(&havenv1.NetworkOptOuts{Version: ver("e1", 2),
		Sets: []*havenv1.PublisherOptOuts{publisherSet(h, "B2", 2, nums[1], nums[2])}}); err != nil {
		t.Fatal(err)
	}
	n := r.Current()
	if n.Len() != 3 || n.Publishers() != 2 || n.Version() != (Version{"e1", 2}) || !n.Received().Equal(now) {
		t.Fatalf("after sync: len %d, publishers %d, version %v, received %v", n.Len(), n.Publishers(), n.Version(), n.Received())
	}
	site := Of(nums[0], nums[2], nums[3])
	if got := n.Match(h, site); got.Len() != 2 || !got.Contains(nums[0]) || !got.Contains(nums[2]) {
		t.Errorf("match = %v, want the two objectors the site holds", got.Strings())
	}
	if !n.ContainsNumber(h, nums[1]) || n.ContainsNumber(h, nums[3]) || n.ContainsNumber(h, "123") {
		t.Error("ContainsNumber disagrees with the lists")
	}

	// A change: B2's patient withdraws the objection, C3 publishes.
	if err := r.Apply(&havenv1.NetworkOptOuts{Base: ver("e1", 2), Version: ver("e1", 4),
		Sets: []*havenv1.PublisherOptOuts{publisherSet(h, "B2", 3, nums[1]), publisherSet(h, "C3", 4, nums[4])}}); err != nil {
		t.Fatal(err)
	}
	if n := r.Current(); n.Len() != 3 || n.ContainsNumber(h, nums[2]) || !n.ContainsNumber(h, nums[4]) {
		t.Errorf("after change: len %d", n.Len())
	}
	// A stale change the sync already held is ignored; a gap is refused.
	if err := r.Apply(&havenv1.NetworkOptOuts{Base: ver("e1", 2), Version: ver("e1", 3),
		Sets: []*havenv1.PublisherOptOuts{publisherSet(h, "B2", 3)}}); err != nil {
		t.Errorf("stale update: %v", err)
	}
	if err := r.Apply(&havenv1.NetworkOptOuts{Base: ver("e1", 5), Version: ver("e1", 6)}); !errors.Is(err, ErrNetworkGap) {
		t.Errorf("gap: err = %v, want ErrNetworkGap", err)
	}
	if err := r.Apply(&havenv1.NetworkOptOuts{Base: ver("e0", 4), Version: ver("e0", 5)}); !errors.Is(err, ErrNetworkGap) {
		t.Errorf("other epoch: err = %v, want ErrNetworkGap", err)
	}
	// An empty list removes the practice.
	if err := r.Apply(&havenv1.NetworkOptOuts{Base: ver("e1", 4), Version: ver("e1", 5),
		Sets: []*havenv1.PublisherOptOuts{publisherSet(h, "C3", 5)}}); err != nil {
		t.Fatal(err)
	}
	want := r.Current()
	if want.Publishers() != 2 || want.Len() != 2 {
		t.Fatalf("after removal: %d publishers, %d hashes", want.Publishers(), want.Len())
	}

	// A restarted node finds the list it held.
	again, err := OpenReceiver(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := again.Current()
	if got.Version() != want.Version() || got.Len() != want.Len() || !got.Received().Equal(now) || !got.ContainsNumber(h, nums[0]) {
		t.Errorf("reopened: version %v len %d received %v; want %v %d", got.Version(), got.Len(), got.Received(), want.Version(), want.Len())
	}
	// And the file holds no NHS number.
	b, _ := os.ReadFile(filepath.Join(dir, NetworkFile))
	for _, num := range nums {
		if bytes.Contains(b, []byte(num)) {
			t.Fatal("the kept list holds an NHS number")
		}
	}
}

func TestReceiverRefusesBadUpdates(t *testing.T) {
	h := testHasher(t)
	nums := validNumbers(t, 3, 8)
	good := publisherSet(h, "A1", 1, nums...)
	unsorted := publisherSet(h, "A1", 1, nums...)
	unsorted.Hashes = append(append([]byte{}, unsorted.Hashes[16:32]...), unsorted.Hashes[:16]...)
	unsorted.Digest = Digest(unsorted.Hashes)
	short := publisherSet(h, "A1", 1, nums...)
	short.Hashes = short.Hashes[:20]
	short.Digest = Digest(short.Hashes)
	badDigest := publisherSet(h, "A1", 1, nums...)
	badDigest.Digest = Digest(nil)
	noODS := publisherSet(h, "", 1, nums...)
	cases := []struct {
		name string
		m    *havenv1.NetworkOptOuts
		want string
	}{
		{"no version", &havenv1.NetworkOptOuts{Sets: []*havenv1.PublisherOptOuts{good}}, "names no version"},
		{"nil", nil, "names no version"},
		{"unsorted", &havenv1.NetworkOptOuts{Version: ver("e", 1), Sets: []*havenv1.PublisherOptOuts{unsorted}}, "not sorted"},
		{"ragged", &havenv1.NetworkOptOuts{Version: ver("e", 1), Sets: []*havenv1.PublisherOptOuts{short}}, "not a multiple of 16"},
		{"digest", &havenv1.NetworkOptOuts{Version: ver("e", 1), Sets: []*havenv1.PublisherOptOuts{badDigest}}, "does not match its digest"},
		{"publisher", &havenv1.NetworkOptOuts{Version: ver("e", 1), Sets: []*havenv1.PublisherOptOuts{noODS}}, "no publisher"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := OpenReceiver(t.TempDir(), nil)
			err := r.Apply(tc.m)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if r.Current() != nil {
				t.Error("a refused update took effect")
			}
			for _, num := range nums {
				if strings.Contains(err.Error(), num) {
					t.Error("the error shows an NHS number")
				}
			}
		})
	}
	// Over the bound.
	big := make([]byte, (MaxPublisherHashes+1)*16)
	if _, err := ParseHashList(big, Digest(big)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("oversized list: err = %v", err)
	}
	// An interrupted multi-part update leaves the old list.
	r, _ := OpenReceiver(t.TempDir(), nil)
	_ = r.Apply(&havenv1.NetworkOptOuts{Version: ver("e", 1), More: true, Sets: []*havenv1.PublisherOptOuts{good}})
	if err := r.Apply(&havenv1.NetworkOptOuts{Version: ver("e", 2)}); !errors.Is(err, ErrNetworkGap) {
		t.Errorf("interrupted update: err = %v", err)
	}
	if r.Current() != nil {
		t.Error("an interrupted update took effect")
	}
}

func TestReadNetworkFileRefusesDamage(t *testing.T) {
	h := testHasher(t)
	dir := t.TempDir()
	r, _ := OpenReceiver(dir, nil)
	if err := r.Apply(&havenv1.NetworkOptOuts{Version: ver("e", 1),
		Sets: []*havenv1.PublisherOptOuts{publisherSet(h, "A1", 1, validNumbers(t, 4, 9)...)}}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, NetworkFile)
	b, _ := os.ReadFile(p)
	// Change one base64 character of the hashes.
	i := bytes.Index(b, []byte(`"hashes":"`)) + len(`"hashes":"`)
	b[i] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadNetworkFile(dir); err == nil {
		t.Error("a damaged list was read")
	}
	if n, err := ReadNetworkFile(t.TempDir()); n != nil || err != nil {
		t.Errorf("no file: %v, %v", n, err)
	}
}

func TestPublishIsSortedAndStable(t *testing.T) {
	h := testHasher(t)
	nums := validNumbers(t, 50, 10)
	a, b := Publish(h, Of(nums...)), Publish(h, Of(append(nums, nums[:5]...)...))
	if a.Digest != b.Digest || len(a.Hashes) != 50 {
		t.Fatalf("publication depends on duplicates: %d hashes", len(a.Hashes))
	}
	if _, err := ParseHashList(HashList(a.Hashes), a.Digest); err != nil {
		t.Fatal(err)
	}
	if e := Publish(h, nil); len(e.Hashes) != 0 || e.Digest != Digest(nil) {
		t.Error("empty publication")
	}
}
