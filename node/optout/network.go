package optout

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/node/pseudonym"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// The network type 1 list (DESIGN §7). Each GP node publishes its own
// type 1 objections as keyed hashes (pseudonym.OptOutHasher) and the
// coordinator relays every practice's list to every node, so an objection
// recorded at a patient's current practice also holds at her former ones.
// A node keeps the lists it was sent in a Network, persisted in its state
// directory, and leaves out every patient whose hash is on it.

// NetworkFile is the file in the node's state directory that holds the
// network list between restarts.
const NetworkFile = "network-optouts.json"

// MaxPublisherHashes bounds one practice's list. The largest practices
// hold under 100,000 patients; a list longer than that is a mistake or an
// attack on the other practices' counts, and is refused whole.
const MaxPublisherHashes = 100_000

// Version names a state of the network list, as the coordinator numbers
// it: the epoch of its job store and the changes accepted so far.
type Version struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// String is how audit records and status name a version.
func (v Version) String() string {
	if v.Epoch == "" {
		return "none"
	}
	return fmt.Sprintf("%s/%d", v.Epoch, v.Seq)
}

func versionOf(v *havenv1.NetworkOptOutVersion) Version {
	return Version{Epoch: v.GetEpoch(), Seq: v.GetSeq()}
}

// Wire is v on the wire; nil for no version.
func (v Version) Wire() *havenv1.NetworkOptOutVersion {
	if v.Epoch == "" {
		return nil
	}
	return &havenv1.NetworkOptOutVersion{Epoch: v.Epoch, Seq: v.Seq}
}

// Publisher is one practice's list as the network holds it.
type Publisher struct {
	ODS     string
	Digest  string
	Seq     uint64
	Updated time.Time
	Hashes  []pseudonym.OptOutHash // sorted, distinct
}

// Network is one immutable state of the network list. The nil Network is
// one the node never received.
type Network struct {
	version    Version
	received   time.Time
	publishers map[string]Publisher
	all        []pseudonym.OptOutHash // union, sorted, distinct
}

// Version is the coordinator's version of this state.
func (n *Network) Version() Version {
	if n == nil {
		return Version{}
	}
	return n.version
}

// Received is when the node last heard from the coordinator that this
// state is current: the age of the list is the time since.
func (n *Network) Received() time.Time {
	if n == nil {
		return time.Time{}
	}
	return n.received
}

// Len is the number of distinct hashes on the list.
func (n *Network) Len() int {
	if n == nil {
		return 0
	}
	return len(n.all)
}

// Publishers is the number of practices with a non-empty list.
func (n *Network) Publishers() int {
	if n == nil {
		return 0
	}
	return len(n.publishers)
}

// Contains reports whether h is on the list.
func (n *Network) Contains(h pseudonym.OptOutHash) bool {
	if n == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(n.all, h, compareHash)
	return found
}

// ContainsNumber reports whether the patient with nhsNumber is on the list,
// hashing the number with h. An invalid number is on no list.
func (n *Network) ContainsNumber(h *pseudonym.OptOutHasher, nhsNumber string) bool {
	if n.Len() == 0 || !cdm.ValidNHSNumber(nhsNumber) {
		return false
	}
	return n.Contains(h.Of(nhsNumber))
}

// Match returns the numbers in s whose hashes are on the list: the site's
// own patients who objected somewhere in the network.
func (n *Network) Match(h *pseudonym.OptOutHasher, s *Set) *Set {
	if n.Len() == 0 || s.Len() == 0 {
		return &Set{}
	}
	var out []uint64
	for i, num := range s.Strings() {
		if n.Contains(h.Of(num)) {
			out = append(out, s.nums[i])
		}
	}
	return &Set{nums: out}
}

// Newest is when the coordinator accepted the most recent change among
// the practices' lists; zero if there is none.
func (n *Network) Newest() time.Time {
	var t time.Time
	if n == nil {
		return t
	}
	for _, p := range n.publishers {
		if p.Updated.After(t) {
			t = p.Updated
		}
	}
	return t
}

func compareHash(a, b pseudonym.OptOutHash) int { return bytes.Compare(a[:], b[:]) }

// HashList is the wire and file form of a list of hashes: sorted,
// distinct, concatenated.
func HashList(hs []pseudonym.OptOutHash) []byte {
	b := make([]byte, 0, len(hs)*pseudonym.OptOutHashSize)
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

// Digest is the lowercase hex SHA-256 of a HashList.
func Digest(list []byte) string {
	d := sha256.Sum256(list)
	return hex.EncodeToString(d[:])
}

// ParseHashList reads a HashList, checking its length, order and digest.
// Errors say what is wrong and never show a hash.
func ParseHashList(list []byte, digest string) ([]pseudonym.OptOutHash, error) {
	const size = pseudonym.OptOutHashSize
	if len(list)%size != 0 {
		return nil, fmt.Errorf("the hash list is %d bytes, not a multiple of %d", len(list), size)
	}
	if k := len(list) / size; k > MaxPublisherHashes {
		return nil, fmt.Errorf("the hash list holds %d hashes, more than the %d one practice may publish", k, MaxPublisherHashes)
	}
	if got := Digest(list); got != digest {
		return nil, errors.New("the hash list does not match its digest")
	}
	hs := make([]pseudonym.OptOutHash, len(list)/size)
	for i := range hs {
		copy(hs[i][:], list[i*size:])
		if i > 0 && compareHash(hs[i-1], hs[i]) >= 0 {
			return nil, fmt.Errorf("the hash list is not sorted and distinct at hash %d", i)
		}
	}
	return hs, nil
}

// Publication is a practice's own type 1 list as it publishes it.
type Publication struct {
	Hashes []pseudonym.OptOutHash
	Digest string
}

// Publish hashes a practice's type 1 objections for the network.
func Publish(h *pseudonym.OptOutHasher, type1 *Set) Publication {
	hs := make([]pseudonym.OptOutHash, 0, type1.Len())
	for _, num := range type1.Strings() {
		hs = append(hs, h.Of(num))
	}
	slices.SortFunc(hs, compareHash)
	hs = slices.Compact(hs)
	return Publication{Hashes: hs, Digest: Digest(HashList(hs))}
}

// Message is the publication on the wire.
func (p Publication) Message() *havenv1.OptOutPublish {
	return &havenv1.OptOutPublish{Hashes: HashList(p.Hashes), Digest: p.Digest}
}

// ErrNetworkGap is returned by Receiver.Apply for an update to a version
// the node does not hold: one was lost, and the node must resynchronise
// by registering again.
var ErrNetworkGap = errors.New("network opt-out update does not follow the list held")

// ErrNotKept is returned by Receiver.Apply when an update took effect but
// could not be written to the state directory.
var ErrNotKept = errors.New("network opt-out list not kept on disk")

// Receiver holds the node's network list: it applies what the coordinator
// sends, keeps the list in the state directory, and hands the current
// state to every task. It is safe for concurrent use.
type Receiver struct {
	dir string
	now func() time.Time

	mu      sync.Mutex
	cur     *Network
	staging *Network // an update that travels in several messages
}

// OpenReceiver loads the list kept in dir, if any. now is the clock; nil
// means time.Now.
func OpenReceiver(dir string, now func() time.Time) (*Receiver, error) {
	if now == nil {
		now = time.Now
	}
	r := &Receiver{dir: dir, now: now}
	n, err := ReadNetworkFile(dir)
	if err != nil {
		return nil, err
	}
	r.cur = n
	return r, nil
}

// Current is the list in force; nil until the node first received one.
func (r *Receiver) Current() *Network {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// Apply applies one NetworkOptOuts message. A message that does not follow
// the list held returns ErrNetworkGap and changes nothing; a malformed one
// returns an error naming what is wrong and changes nothing. An update
// that travels in several messages takes effect with the last.
func (r *Receiver) Apply(m *havenv1.NetworkOptOuts) error {
	if m == nil || m.GetVersion().GetEpoch() == "" {
		return errors.New("network opt-out update names no version")
	}
	base, next := versionOf(m.GetBase()), versionOf(m.GetVersion())
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.staging
	if st == nil {
		switch {
		case base.Epoch == "":
			st = &Network{publishers: map[string]Publisher{}}
		case base == r.cur.Version():
			st = r.cur.clone()
		case base.Epoch == r.cur.Version().Epoch && next.Seq <= r.cur.Version().Seq:
			// Already held: the sync on registering overtook this change.
			return nil
		default:
			return fmt.Errorf("%w: update %s→%s, held %s", ErrNetworkGap, base, next, r.cur.Version())
		}
		st.version = next
	} else if st.version != next {
		r.staging = nil
		return fmt.Errorf("%w: a multi-part update to %s was interrupted by one to %s", ErrNetworkGap, st.version, next)
	}
	for _, p := range m.GetSets() {
		hs, err := ParseHashList(p.GetHashes(), p.GetDigest())
		if err != nil {
			r.staging = nil
			return fmt.Errorf("network opt-out list of %s: %w", p.GetPublisherOds(), err)
		}
		if p.GetPublisherOds() == "" {
			r.staging = nil
			return errors.New("network opt-out update has a list with no publisher")
		}
		if len(hs) == 0 {
			delete(st.publishers, p.GetPublisherOds())
			continue
		}
		st.publishers[p.GetPublisherOds()] = Publisher{ODS: p.GetPublisherOds(), Digest: p.GetDigest(), Seq: p.GetSeq(),
			Updated: p.GetUpdatedAt().AsTime(), Hashes: hs}
	}
	if m.GetMore() {
		r.staging = st
		return nil
	}
	r.staging = nil
	st.received = r.now()
	st.union()
	if err := writeNetworkFile(r.dir, st); err != nil {
		// Fail closed: a list the node could not keep is still the
		// newest it knows, so it takes effect; the error is reported.
		r.cur = st
		return fmt.Errorf("%w: %w", ErrNotKept, err)
	}
	r.cur = st
	return nil
}

func (n *Network) clone() *Network {
	c := &Network{version: n.version, received: n.received, publishers: make(map[string]Publisher, len(n.publishers))}
	for k, p := range n.publishers {
		c.publishers[k] = p
	}
	return c
}

// union rebuilds all from the publishers' lists.
func (n *Network) union() {
	total := 0
	for _, p := range n.publishers {
		total += len(p.Hashes)
	}
	all := make([]pseudonym.OptOutHash, 0, total)
	for _, p := range n.publishers {
		all = append(all, p.Hashes...)
	}
	slices.SortFunc(all, compareHash)
	n.all = slices.Compact(all)
}

// networkFile is the JSON form of a Network in the state directory.
type networkFile struct {
	Version    Version         `json:"version"`
	Received   time.Time       `json:"received"`
	Publishers []publisherFile `json:"publishers"`
}

type publisherFile struct {
	ODS     string    `json:"ods"`
	Digest  string    `json:"digest"`
	Seq     uint64    `json:"seq"`
	Updated time.Time `json:"updated"`
	Hashes  []byte    `json:"hashes"` // HashList, base64 in JSON
}

func writeNetworkFile(dir string, n *Network) error {
	f := networkFile{Version: n.version, Received: n.received}
	for _, p := range n.publishers {
		f.Publishers = append(f.Publishers, publisherFile{ODS: p.ODS, Digest: p.Digest, Seq: p.Seq, Updated: p.Updated, Hashes: HashList(p.Hashes)})
	}
	slices.SortFunc(f.Publishers, func(a, b publisherFile) int { return bytes.Compare([]byte(a.ODS), []byte(b.ODS)) })
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("keep the network opt-out list: %w", err)
	}
	tmp, err := os.CreateTemp(dir, NetworkFile+".*")
	if err != nil {
		return fmt.Errorf("keep the network opt-out list: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("keep the network opt-out list: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keep the network opt-out list: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keep the network opt-out list: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, NetworkFile)); err != nil {
		return fmt.Errorf("keep the network opt-out list: %w", err)
	}
	return nil
}

// ReadNetworkFile reads the network list kept in the state directory dir:
// nil, and no error, if there is none yet. Every practice's list is
// checked against its digest, so a damaged file is an error, not a
// shorter list.
func ReadNetworkFile(dir string) (*Network, error) {
	p := filepath.Join(dir, NetworkFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("network opt-out list: %w", err)
	}
	var f networkFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("network opt-out list %s: %w", p, err)
	}
	if f.Version.Epoch == "" {
		return nil, fmt.Errorf("network opt-out list %s: no version", p)
	}
	n := &Network{version: f.Version, received: f.Received, publishers: map[string]Publisher{}}
	for _, pf := range f.Publishers {
		hs, err := ParseHashList(pf.Hashes, pf.Digest)
		if err != nil {
			return nil, fmt.Errorf("network opt-out list %s, practice %s: %w", p, pf.ODS, err)
		}
		n.publishers[pf.ODS] = Publisher{ODS: pf.ODS, Digest: pf.Digest, Seq: pf.Seq, Updated: pf.Updated, Hashes: hs}
	}
	n.union()
	return n, nil
}

// PublisherMessage is p on the wire.
func PublisherMessage(p Publisher) *havenv1.PublisherOptOuts {
	return &havenv1.PublisherOptOuts{PublisherOds: p.ODS, Hashes: HashList(p.Hashes), Digest: p.Digest, Seq: p.Seq,
		UpdatedAt: timestamppb.New(p.Updated)}
}
