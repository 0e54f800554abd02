package pseudonym

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func perturbationSecret(t testing.TB, fill byte) PerturbationSecret {
	t.Helper()
	s, err := NewPerturbationSecret([]byte(strings.Repeat(string(fill), MinSecretSize)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRecordKey checks record keys against HMAC-SHA256 computed here with
// the standard library, and that they are stable, spread over the range
// and different under another secret.
func TestRecordKey(t *testing.T) {
	sec := perturbationSecret(t, 'k')
	k, err := NewRecordKeyer(sec, 256)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, 256)
	other, _ := NewRecordKeyer(perturbationSecret(t, 'j'), 256)
	same := 0
	for i := range 25600 {
		nhs := fmt.Sprintf("9%09d", i)
		m := hmac.New(sha256.New, []byte(strings.Repeat("k", MinSecretSize)))
		m.Write([]byte(nhs))
		want := uint32(binary.BigEndian.Uint64(m.Sum(nil)[:8]) % 256)
		got := k.Of(nhs)
		if got != want || k.Clone().Of(nhs) != want {
			t.Fatalf("key of %s: %d, want %d", nhs, got, want)
		}
		counts[got]++
		if other.Of(nhs) == got {
			same++
		}
	}
	for key, n := range counts {
		if n < 50 || n > 170 { // mean 100; far outside binomial spread
			t.Errorf("key %d drawn %d times of 25600", key, n)
		}
	}
	if same > 200 { // about 100 expected by chance
		t.Errorf("%d of 25600 keys equal under another secret", same)
	}
}

func TestRecordKeyRefuses(t *testing.T) {
	if _, err := NewRecordKeyer(PerturbationSecret{}, 256); !errors.Is(err, ErrNoPerturbationSecret) {
		t.Errorf("no secret: %v", err)
	}
	if _, err := NewRecordKeyer(perturbationSecret(t, 'k'), 0); err == nil {
		t.Error("key range 0 accepted")
	}
	if _, err := NewPerturbationSecret([]byte("short")); err == nil {
		t.Error("short secret accepted")
	}
	s := perturbationSecret(t, 'k')
	if out := fmt.Sprintf("%v %+v %#v %s", s, s, s, s); strings.Contains(out, "kkkk") {
		t.Errorf("secret printed: %s", out)
	}
}

// BenchmarkRecordKey is the per-patient cost a node adds when a task
// needs record keys; compare BenchmarkOf.
func BenchmarkRecordKey(b *testing.B) {
	k, _ := NewRecordKeyer(perturbationSecret(b, 'k'), 256)
	for i := 0; b.Loop(); i++ {
		k.Of("9434765919")
	}
}
