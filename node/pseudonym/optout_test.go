package pseudonym

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
)

func TestOptOutHasherMatchesSpec(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	s, _ := NewSecret(secret)
	h, err := NewOptOutHasher(s)
	if err != nil {
		t.Fatal(err)
	}
	knet := hkdfByHand(secret, []byte("haven.v1.network-optout"), "type1")
	m := hmac.New(sha256.New, knet)
	m.Write([]byte("9434765919"))
	want := m.Sum(nil)[:OptOutHashSize]
	got := h.Of("9434765919")
	if !bytes.Equal(got[:], want) {
		t.Fatalf("opt-out hash = %x, want %x", got, want)
	}
	if c := h.Clone().Of("9434765919"); c != got {
		t.Errorf("clone hashes %x, want %x", c, got)
	}
}

func TestOptOutHashIsNoRunPseudonym(t *testing.T) {
	s := testSecret(t, 3)
	h, _ := NewOptOutHasher(s)
	nhs := "4010232137"
	// A coordinator picks run ids; none may make a run's pseudonyms the
	// static opt-out hashes, or it could link a run to the opt-out list.
	for _, run := range []string{"type1", "haven.v1.network-optout", "run-a", ""} {
		d, err := NewDeriver(s, run)
		if err != nil {
			continue
		}
		if p, o := d.Of(nhs), h.Of(nhs); bytes.Equal(p[:], o[:]) {
			t.Errorf("run %q: pseudonym equals the network opt-out hash", run)
		}
	}
	other, _ := NewOptOutHasher(testSecret(t, 4))
	if h.Of(nhs) == other.Of(nhs) {
		t.Error("two secrets gave the same opt-out hash")
	}
	if h.Of(nhs) == h.Of("9434765919") {
		t.Error("two numbers gave the same opt-out hash")
	}
}

func TestOptOutHasherNeverPrinted(t *testing.T) {
	h, _ := NewOptOutHasher(testSecret(t, 5))
	for _, s := range []string{fmt.Sprint(h), fmt.Sprintf("%v %+v %#v %s", h, h, h, h)} {
		if !strings.Contains(s, "redacted") || strings.Contains(s, "key:") {
			t.Errorf("printed %q", s)
		}
	}
	if _, err := NewOptOutHasher(Secret{}); err == nil {
		t.Error("a zero secret gave a hasher")
	}
}
