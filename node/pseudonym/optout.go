package pseudonym

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// optOutSalt separates the network opt-out key from the run keys: a run
// key is derived with salt "haven.v1.pseudonym", so no run id a
// coordinator picks can make a run's pseudonyms equal the opt-out hashes.
const optOutSalt = "haven.v1.network-optout"

// optOutInfo names the one static key derived under optOutSalt.
const optOutInfo = "type1"

// OptOutHashSize is the length in bytes of a network opt-out hash.
const OptOutHashSize = 16

// OptOutHash is the keyed hash under which a type 1 objection travels
// across the network.
type OptOutHash [OptOutHashSize]byte

// OptOutHasher hashes NHS numbers under the static network opt-out key
//
//	k_net = HKDF-SHA256(secret, salt = "haven.v1.network-optout", info = "type1")
//
// as HMAC-SHA256(k_net, nhs_number)[:16]. Every node of a network derives
// the same key from the linkage secret, so a practice's published
// objections match the same patients' records at every other site; the
// coordinator, which never holds the secret, sees only opaque hashes.
// Unlike a run key, k_net never changes: the hashes are the same in every
// run, which is what lets an objection hold everywhere, and why they are
// only ever compared with, never sent with, a run's rows.
//
// An OptOutHasher is not safe for concurrent use; make one per goroutine
// with Clone.
type OptOutHasher struct {
	key []byte
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewOptOutHasher derives k_net from secret.
func NewOptOutHasher(secret Secret) (*OptOutHasher, error) {
	if len(secret.b) < MinSecretSize {
		return nil, errors.New("pseudonym: linkage secret not set")
	}
	key, err := hkdf.Key(sha256.New, secret.b, []byte(optOutSalt), optOutInfo, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive network opt-out key: %w", err)
	}
	return &OptOutHasher{key: key, mac: hmac.New(sha256.New, key)}, nil
}

// Clone returns an independent hasher with the same key.
func (h *OptOutHasher) Clone() *OptOutHasher {
	return &OptOutHasher{key: h.key, mac: hmac.New(sha256.New, h.key)}
}

// Of returns the network opt-out hash of nhsNumber. Like Deriver.Of it
// does not validate the number.
func (h *OptOutHasher) Of(nhsNumber string) OptOutHash {
	h.mac.Reset()
	h.mac.Write([]byte(nhsNumber))
	var o OptOutHash
	copy(o[:], h.mac.Sum(h.sum[:0]))
	return o
}

func (*OptOutHasher) String() string   { return "[network opt-out key redacted]" }
func (*OptOutHasher) GoString() string { return "pseudonym.OptOutHasher{[redacted]}" }
