package pseudonym

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
)

func testSecret(t testing.TB, fill byte) Secret {
	t.Helper()
	s, err := NewSecret(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hkdfByHand computes RFC 5869 HKDF-SHA256 for a 32-byte output directly
// from HMAC, independently of crypto/hkdf, so the derivation is checked
// against the RFC and not against itself.
func hkdfByHand(secret, salt []byte, info string) []byte {
	ext := hmac.New(sha256.New, salt)
	ext.Write(secret)
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

func TestDeriverMatchesSpec(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	s, _ := NewSecret(secret)
	d, err := NewDeriver(s, "run-0001")
	if err != nil {
		t.Fatal(err)
	}
	kr := hkdfByHand(secret, []byte("haven.v1.pseudonym"), "run-0001")
	m := hmac.New(sha256.New, kr)
	m.Write([]byte("9434765919"))
	want := m.Sum(nil)[:Size]
	got := d.Of("9434765919")
	if !bytes.Equal(got[:], want) {
		t.Fatalf("pseudonym = %x, want %x", got, want)
	}
}

func TestPseudonymProperties(t *testing.T) {
	s := testSecret(t, 1)
	d1, _ := NewDeriver(s, "run-a")
	d1b, _ := NewDeriver(s, "run-a")
	d2, _ := NewDeriver(s, "run-b")
	other, _ := NewDeriver(testSecret(t, 2), "run-a")
	nhs := "4010232137"
	if d1.Of(nhs) != d1b.Of(nhs) {
		t.Error("same run and secret gave different pseudonyms: sites would not link")
	}
	if d1.Of(nhs) == d2.Of(nhs) {
		t.Error("two runs gave the same pseudonym: runs would link")
	}
	if d1.Of(nhs) == other.Of(nhs) {
		t.Error("two secrets gave the same pseudonym")
	}
	if d1.Of(nhs) == d1.Of("9434765919") {
		t.Error("two patients share a pseudonym")
	}
	if d1.Clone().Of(nhs) != d1.Of(nhs) {
		t.Error("Clone derives differently")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	raw := bytes.Repeat([]byte("k"), 40)
	s, err := NewSecret(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)} {
		if strings.Contains(out, string(raw[:8])) {
			t.Fatalf("secret printed: %q", out)
		}
	}
	if _, err := NewSecret(raw[:31]); err == nil {
		t.Fatal("31-byte secret accepted")
	}
	if _, err := NewDeriver(Secret{}, "r"); err == nil {
		t.Fatal("zero Secret accepted")
	}
	if _, err := NewDeriver(s, ""); err == nil {
		t.Fatal("empty run id accepted")
	}
}

func BenchmarkOf(b *testing.B) {
	d, _ := NewDeriver(testSecret(b, 3), "bench")
	for b.Loop() {
		d.Of("9434765919")
	}
}
