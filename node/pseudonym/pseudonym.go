// Package pseudonym derives the per-run pseudonyms a node sends in place of
// NHS numbers (DESIGN §7), and remembers which runs it has already served.
//
// Every node in a network holds the same linkage secret, kept by a key
// custodian and never by the coordinator. For run r a node derives
//
//	k_r = HKDF-SHA256(secret, salt = "haven.v1.pseudonym", info = r)
//
// and sends HMAC-SHA256(k_r, nhs_number)[:16]. The same patient therefore
// links across sites within one run, and cannot be linked across runs
// without the secret. A coordinator could defeat that by sending two queries
// under one run id, so a node refuses any run id it has seen before; the
// Ledger keeps that memory across restarts.
package pseudonym

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// Size is the length in bytes of a pseudonym.
const Size = 16

// MinSecretSize is the shortest linkage secret accepted. 32 bytes matches
// the HMAC-SHA256 block security level; anything shorter is a mistake in
// key provisioning, not a choice.
const MinSecretSize = 32

// salt separates Haven's use of the secret from any other use of it.
const salt = "haven.v1.pseudonym"

// Pseudonym is the 16-byte per-run pseudonym of one patient.
type Pseudonym [Size]byte

// Secret is the network linkage secret. Its String and GoString methods
// never print the key, so it is safe to pass to a logger by accident.
type Secret struct{ b []byte }

// NewSecret copies b into a Secret. It refuses secrets shorter than
// MinSecretSize bytes.
func NewSecret(b []byte) (Secret, error) {
	if len(b) < MinSecretSize {
		return Secret{}, fmt.Errorf("linkage secret is %d bytes; need at least %d", len(b), MinSecretSize)
	}
	return Secret{b: append([]byte(nil), b...)}, nil
}

func (Secret) String() string   { return "[linkage secret redacted]" }
func (Secret) GoString() string { return "pseudonym.Secret{[redacted]}" }

// Deriver makes the pseudonyms of one run. It is not safe for concurrent
// use; make one per goroutine with Clone.
type Deriver struct {
	runID string
	key   []byte
	mac   hash.Hash
	sum   [sha256.Size]byte
}

// ErrEmptyRunID is returned for a run id of zero length.
var ErrEmptyRunID = errors.New("pseudonym: empty run id")

// NewDeriver derives k_r for runID from secret.
func NewDeriver(secret Secret, runID string) (*Deriver, error) {
	if runID == "" {
		return nil, ErrEmptyRunID
	}
	if len(secret.b) < MinSecretSize {
		return nil, errors.New("pseudonym: linkage secret not set")
	}
	key, err := hkdf.Key(sha256.New, secret.b, []byte(salt), runID, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive run key: %w", err)
	}
	return &Deriver{runID: runID, key: key, mac: hmac.New(sha256.New, key)}, nil
}

// RunID returns the run this deriver makes pseudonyms for.
func (d *Deriver) RunID() string { return d.runID }

// Clone returns an independent Deriver for the same run, for use on
// another goroutine.
func (d *Deriver) Clone() *Deriver {
	return &Deriver{runID: d.runID, key: d.key, mac: hmac.New(sha256.New, d.key)}
}

// Of returns the pseudonym of nhsNumber in this run. The caller validates
// the number first; Of does not, so that a run's pseudonyms are a pure
// function of the bytes given.
func (d *Deriver) Of(nhsNumber string) Pseudonym {
	d.mac.Reset()
	d.mac.Write([]byte(nhsNumber))
	var p Pseudonym
	copy(p[:], d.mac.Sum(d.sum[:0]))
	return p
}
