package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// CheckClientCert names why a certificate would be refused, for each
// cause; a good one gives its identity.
func TestCheckClientCert(t *testing.T) {
	n := newTestNet(t)
	good, _ := n.issue(t, "ana", Request{Kind: KindUser, ID: "ana", Org: "QHM", Roles: []string{"analyst"}})
	rogue := newTestNet(t)
	foreign, _ := rogue.issue(t, "ana", Request{Kind: KindUser, ID: "ana", Org: "QHM", Roles: []string{"analyst"}})
	server, _ := n.issue(t, "server", Request{Kind: KindServer, Hosts: []string{"127.0.0.1"}})
	now := time.Now()

	id, err := CheckClientCert(good, n.caFile, now)
	if err != nil || id.Kind != KindUser || id.ID != "ana" || id.Org != "QHM" {
		t.Errorf("good certificate: %v, %v", id, err)
	}
	for _, tc := range []struct {
		name, file string
		at         time.Time
		want       string
	}{
		{"another CA", foreign, now, `was issued by "CN=Test Haven CA`},
		{"expired", good, now.Add(DefaultValidity(KindUser) + time.Hour), "expired at"},
		{"not yet valid", good, now.Add(-time.Hour), "is not valid until"},
		{"a server certificate", server, now, "certificate"},
	} {
		_, err := CheckClientCert(tc.file, n.caFile, tc.at)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := CheckClientCert(foreign, n.caFile, now); !strings.Contains(err.Error(), "not by the network CA in "+n.caFile) {
		t.Errorf("another CA: %v", err)
	}
}

func TestHandshakeCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("connection reset"), ""},
		{fmt.Errorf("tls: failed to verify certificate: %w", x509.UnknownAuthorityError{}), "not issued by this network's CA"},
		{fmt.Errorf("wrapped: %w", x509.CertificateInvalidError{Reason: x509.Expired}), "expired"},
		{errors.New("transport: authentication handshake failed: remote error: tls: unknown certificate authority"), "not issued by this network's CA"},
		{errors.New("remote error: tls: expired certificate"), "expired"},
		{errors.New("remote error: tls: bad certificate"), "refused"},
	} {
		if got := HandshakeCause(tc.err); !strings.Contains(got, tc.want) || (tc.want == "" && got != "") {
			t.Errorf("HandshakeCause(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
