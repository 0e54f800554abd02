package linkage

import (
	"slices"
	"strings"
	"sync"
)

// Missing is the group value of patients whose group variable is null, and
// of cells a practice sent with a null group value. Real values are never
// empty.
const Missing = ""

// dictionary encodes the values of one string variable as small integers,
// so the patient table stores 4 bytes per value and groups compare codes.
//
// A fixed dictionary holds a vocabulary known in advance (age bands, sex
// codes), in its natural order, and is read without locks. Any other
// dictionary (ODS codes) grows as accepted batches bring new values.
type dictionary struct {
	fixed bool
	// packed holds a small fixed vocabulary of short values as integers
	// (see pack), in code order, so that a lookup compares a few words
	// instead of hashing a string.
	packed []uint64

	mu     sync.RWMutex // guards index and values unless fixed
	index  map[string]int32
	values []string
}

func newDictionary(vocab []string) *dictionary {
	d := &dictionary{fixed: vocab != nil, index: make(map[string]int32, len(vocab))}
	for _, v := range vocab {
		d.index[v] = int32(len(d.values))
		d.values = append(d.values, v)
	}
	if len(vocab) <= 16 && !slices.ContainsFunc(vocab, func(v string) bool { return len(v) > 7 }) {
		for _, v := range vocab {
			d.packed = append(d.packed, pack([]byte(v)))
		}
	}
	return d
}

// pack turns a value of at most 7 bytes into an integer: its bytes, and
// its length in the top byte.
func pack(b []byte) uint64 {
	x := uint64(len(b)) << 56
	for i, c := range b {
		x |= uint64(c) << (8 * i)
	}
	return x
}

// lookup returns the code of a value of a fixed dictionary.
func (d *dictionary) lookup(b []byte) (int32, bool) {
	if d.packed != nil {
		if len(b) > 7 {
			return 0, false
		}
		x := pack(b)
		for i, p := range d.packed {
			if p == x {
				return int32(i), true
			}
		}
		return 0, false
	}
	c, ok := d.index[string(b)]
	return c, ok
}

// size returns the number of values known.
func (d *dictionary) size() int {
	if d.fixed {
		return len(d.values)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.values)
}

// intern returns the codes of values, adding those not yet known. Only
// values of accepted batches are interned, so a rejected batch leaves the
// dictionary as it was.
func (d *dictionary) intern(values []string) []int32 {
	out := make([]int32, len(values))
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, v := range values {
		c, ok := d.index[v]
		if !ok {
			c = int32(len(d.values))
			d.index[v] = c
			d.values = append(d.values, v)
		}
		out[i] = c
	}
	return out
}

// value returns the string of a code.
func (d *dictionary) value(code int32) string {
	if d.fixed {
		return d.values[code]
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.values[code]
}

// compare orders two codes: a fixed vocabulary in its own order (age bands
// ascending), other values as strings.
func (d *dictionary) compare(a, b int32) int {
	if d.fixed {
		return int(a) - int(b)
	}
	return strings.Compare(d.value(a), d.value(b))
}

// localDict collects the distinct values of a growing dictionary seen in one
// batch, before the batch is accepted.
type localDict struct {
	index  map[string]int32
	values []string
}

// code returns the batch-local code of b, copying b the first time: Arrow
// strings alias the record's buffers, which the caller releases.
func (l *localDict) code(b []byte) int32 {
	if c, ok := l.index[string(b)]; ok {
		return c
	}
	if l.index == nil {
		l.index = map[string]int32{}
	}
	c := int32(len(l.values))
	s := string(b)
	l.index[s] = c
	l.values = append(l.values, s)
	return c
}

// validToken reports whether b looks like a code (an ODS code or similar):
// 1 to 32 printable ASCII characters without spaces.
func validToken(b []byte) bool {
	if len(b) == 0 || len(b) > 32 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

func validTokenString(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
