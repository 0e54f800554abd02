package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Record keys for cell-key perturbation (issue 11; policy/ptable).
//
// Every patient has a record key in [0, R), R from the governance bundle:
//
//	key = HMAC-SHA256(perturbation secret, nhs_number), first 8 bytes
//	      as a big-endian integer, mod R
//
// The perturbation secret is a network secret that the key custodian
// issues beside the linkage secret (file mode 0600 at every node) and that
// the coordinator never holds. Unlike a pseudonym, a record key does not
// depend on the run: the same patients give the same cell key in every
// run, which is what makes a perturbed count repeat exactly. Reducing a
// 64-bit value mod R (at most 2^20) biases no key by more than R/2^64.
//
// What the coordinator learns: in aggregate mode only the sum mod R of the
// keys of each cell's patients; where a linkage-mode row carries a record
// key, at most log2 R bits about that patient (8 bits for R = 256), next to
// a pseudonym that changes every run, so the key alone cannot link the row
// to a later run (256 keys are shared by tens of thousands of patients),
// and without the secret it cannot be computed from an NHS number.

// PerturbationSecret is the network perturbation secret. Its String and
// GoString methods never print the key.
type PerturbationSecret struct{ b []byte }

// NewPerturbationSecret copies b into a PerturbationSecret. It refuses
// secrets shorter than MinSecretSize bytes.
func NewPerturbationSecret(b []byte) (PerturbationSecret, error) {
	if len(b) < MinSecretSize {
		return PerturbationSecret{}, fmt.Errorf("perturbation secret is %d bytes; need at least %d", len(b), MinSecretSize)
	}
	return PerturbationSecret{b: append([]byte(nil), b...)}, nil
}

// IsSet reports whether the secret holds a key: a node without one
// refuses tasks that need record keys.
func (s PerturbationSecret) IsSet() bool { return len(s.b) >= MinSecretSize }

func (PerturbationSecret) String() string { return "[perturbation secret redacted]" }
func (PerturbationSecret) GoString() string {
	return "pseudonym.PerturbationSecret{[redacted]}"
}

// MaxKeyRange bounds R, as policy/ptable does.
const MaxKeyRange = 1 << 20

// ErrNoPerturbationSecret is returned when record keys are asked for
// without a perturbation secret.
var ErrNoPerturbationSecret = errors.New("pseudonym: no perturbation secret configured")

// RecordKeyer derives record keys. It is not safe for concurrent use; make
// one per goroutine with Clone.
type RecordKeyer struct {
	r   uint64
	key []byte
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewRecordKeyer derives record keys in [0, keyRange) under secret.
func NewRecordKeyer(secret PerturbationSecret, keyRange int) (*RecordKeyer, error) {
	if !secret.IsSet() {
		return nil, ErrNoPerturbationSecret
	}
	if keyRange < 1 || keyRange > MaxKeyRange {
		return nil, fmt.Errorf("pseudonym: key range %d must be from 1 to %d", keyRange, MaxKeyRange)
	}
	return &RecordKeyer{r: uint64(keyRange), key: secret.b, mac: hmac.New(sha256.New, secret.b)}, nil
}

// Clone returns an independent RecordKeyer with the same secret and range.
func (k *RecordKeyer) Clone() *RecordKeyer {
	return &RecordKeyer{r: k.r, key: k.key, mac: hmac.New(sha256.New, k.key)}
}

// Of returns the record key of nhsNumber. Like Deriver.Of, it does not
// validate the number.
func (k *RecordKeyer) Of(nhsNumber string) uint32 {
	k.mac.Reset()
	k.mac.Write([]byte(nhsNumber))
	s := k.mac.Sum(k.sum[:0])
	return uint32(binary.BigEndian.Uint64(s[:8]) % k.r)
}
