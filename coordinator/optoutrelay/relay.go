// Package optoutrelay relays the network type 1 opt-out list between
// nodes (DESIGN §7).
//
// A practice's type 1 objections must hold wherever the patient's record
// sits, so each GP node publishes its whole list (OptOutPublish) as keyed
// hashes of NHS numbers under a key derived from the network linkage
// secret, which the coordinator never holds: to the coordinator the list
// is opaque 16-byte values. The relay keeps one list per practice, whole,
// in the job store, and numbers the network list by (epoch, seq): seq
// counts accepted changes, epoch names the job store. A node registers
// with the version it holds and is sent what changed since (the whole list
// if it holds none, or another epoch's); each later change goes to every
// connected node soon after it is accepted.
//
// Why whole lists per practice and incremental versions: a practice's
// list is small (a few hundred objectors, a few KiB), so republishing it
// whole is simpler and safer than diffs, while the network's list at
// national scale (6,500 practices, a few hundred thousand objectors) is
// about 5 MiB of hashes: too much to send every node on every change, but
// fine once on a node's first connection and in chunks of about 1 MiB.
//
// Changes reach connected nodes through Sync too, never one message per
// change: when a network starts, every practice publishes within minutes,
// and relaying each change to each node as it came (practices × nodes
// messages) filled the links' queues and kept nodes applying the list
// hundreds of times. The link server instead asks Sync for what changed
// since the version a link was last sent, at most once per interval and
// always before a task (see coordinator/nodelink).
package optoutrelay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// HashSize is the length of one keyed hash.
const HashSize = 16

// MaxHashes bounds one practice's list; a longer one is refused whole. The
// largest practices hold under 100,000 patients.
const MaxHashes = 100_000

// chunkBytes is about how many bytes of hashes one NetworkOptOuts carries
// when a node is sent much of the list at once; one practice's list is
// never split.
const chunkBytes = 1 << 20

// Store keeps the list (*store.SQLite).
type Store interface {
	NetworkOptOuts(ctx context.Context) (store.NetworkOptOuts, error)
	PutOptOutSet(ctx context.Context, epoch string, set store.OptOutSet) error
}

// Relay holds the network list. It is safe for concurrent use.
type Relay struct {
	st  Store
	now func() time.Time

	mu    sync.Mutex
	epoch string
	seq   uint64
	sets  map[string]store.OptOutSet
}

// Open loads the list from st. now is the clock; nil means time.Now.
func Open(ctx context.Context, st Store, now func() time.Time) (*Relay, error) {
	if now == nil {
		now = time.Now
	}
	l, err := st.NetworkOptOuts(ctx)
	if err != nil {
		return nil, fmt.Errorf("open the network opt-out list: %w", err)
	}
	r := &Relay{st: st, now: now, epoch: l.Epoch, seq: l.Seq, sets: map[string]store.OptOutSet{}}
	for _, s := range l.Sets {
		r.sets[s.Publisher] = s
	}
	return r, nil
}

// Version is the list's version now.
func (r *Relay) Version() *havenv1.NetworkOptOutVersion {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version()
}

func (r *Relay) version() *havenv1.NetworkOptOutVersion {
	return &havenv1.NetworkOptOutVersion{Epoch: r.epoch, Seq: r.seq}
}

// Size is how many practices have a non-empty list, and how many hashes
// they hold together (a patient who objected at two practices counts
// twice).
func (r *Relay) Size() (publishers, hashes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sets {
		if len(s.Hashes) > 0 {
			publishers++
			hashes += len(s.Hashes) / HashSize
		}
	}
	return publishers, hashes
}

// Digest is the lowercase hex SHA-256 of a hash list.
func Digest(hashes []byte) string {
	d := sha256.Sum256(hashes)
	return hex.EncodeToString(d[:])
}

// check returns what is wrong with a published list, or nil. It never
// shows a hash.
func check(p *havenv1.OptOutPublish) error {
	h := p.GetHashes()
	if len(h)%HashSize != 0 {
		return fmt.Errorf("the hash list is %d bytes, not a multiple of %d", len(h), HashSize)
	}
	if k := len(h) / HashSize; k > MaxHashes {
		return fmt.Errorf("the hash list holds %d hashes, more than the %d one practice may publish", k, MaxHashes)
	}
	if Digest(h) != p.GetDigest() {
		return errors.New("the hash list does not match its digest")
	}
	for i := HashSize; i < len(h); i += HashSize {
		if bytes.Compare(h[i-HashSize:i], h[i:i+HashSize]) >= 0 {
			return fmt.Errorf("the hash list is not sorted and distinct at hash %d", i/HashSize)
		}
	}
	return nil
}

// Publish replaces ods's list with p. A list equal to the one held changes
// nothing and returns false. A changed list is stored, under the next seq,
// before it counts; nodes learn of it through Sync. A malformed list is
// refused with an error naming what is wrong, and changes nothing.
func (r *Relay) Publish(ctx context.Context, ods string, p *havenv1.OptOutPublish) (bool, error) {
	if ods == "" {
		return false, errors.New("opt-out list from no practice")
	}
	if err := check(p); err != nil {
		return false, fmt.Errorf("opt-out list from %s refused: %w", ods, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.sets[ods]
	if (had && old.Digest == p.GetDigest()) || (!had && len(p.GetHashes()) == 0) {
		return false, nil
	}
	set := store.OptOutSet{Publisher: ods, Digest: p.GetDigest(), Seq: r.seq + 1, Updated: r.now().UTC(),
		Hashes: slices.Clone(p.GetHashes())}
	if err := r.st.PutOptOutSet(ctx, r.epoch, set); err != nil {
		return false, fmt.Errorf("opt-out list from %s not stored: %w", ods, err)
	}
	r.sets[ods], r.seq = set, set.Seq
	return true, nil
}

func wire(s store.OptOutSet) *havenv1.PublisherOptOuts {
	return &havenv1.PublisherOptOuts{PublisherOds: s.Publisher, Hashes: s.Hashes, Digest: s.Digest, Seq: s.Seq,
		UpdatedAt: timestamppb.New(s.Updated)}
}

// Sync returns what a node that holds version known must be sent to hold
// the list now: the lists changed since known, or, if known is of another
// epoch or ahead of this list, every list with an empty base, so that the
// node replaces what it holds. It is at least one message, the last with
// more unset; the node applies none until the last.
func (r *Relay) Sync(known *havenv1.NetworkOptOutVersion) []*havenv1.CoordinatorMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	var base *havenv1.NetworkOptOutVersion
	since := uint64(0)
	if known.GetEpoch() == r.epoch && known.GetSeq() <= r.seq {
		base, since = r.version(), known.GetSeq()
		base.Seq = since
	}
	var changed []store.OptOutSet
	for _, s := range r.sets {
		// A whole list leaves out the empty ones: the node starts empty.
		if s.Seq > since && (base != nil || len(s.Hashes) > 0) {
			changed = append(changed, s)
		}
	}
	slices.SortFunc(changed, func(a, b store.OptOutSet) int { return bytes.Compare([]byte(a.Publisher), []byte(b.Publisher)) })
	var out []*havenv1.NetworkOptOuts
	cur := &havenv1.NetworkOptOuts{Base: base, Version: r.version()}
	size := 0
	for _, s := range changed {
		if size > 0 && size+len(s.Hashes) > chunkBytes {
			cur.More = true
			out = append(out, cur)
			cur = &havenv1.NetworkOptOuts{Base: base, Version: r.version()}
			size = 0
		}
		cur.Sets = append(cur.Sets, wire(s))
		size += len(s.Hashes)
	}
	out = append(out, cur)
	msgs := make([]*havenv1.CoordinatorMessage, len(out))
	for i, m := range out {
		msgs[i] = &havenv1.CoordinatorMessage{Body: &havenv1.CoordinatorMessage_NetworkOptOuts{NetworkOptOuts: m}}
	}
	return msgs
}
