package pki

import (
	"crypto/tls"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type testNet struct {
	dir    string
	ca     *CA
	caFile string
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	dir := t.TempDir()
	ca, certPEM, keyPEM, err := NewCA("Test Haven CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, err := WriteFiles(dir, "ca", certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &testNet{dir: dir, ca: ca, caFile: caFile}
}

func (n *testNet) issue(t *testing.T, name string, req Request) (certFile, keyFile string) {
	t.Helper()
	_, c, k, err := n.ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = WriteFiles(n.dir, name, c, k)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestIssueAndIdentity(t *testing.T) {
	n := newTestNet(t)
	tests := []struct {
		req  Request
		want Identity
	}{
		{Request{Kind: KindNode, ODS: "A81001"}, Identity{Kind: KindNode, ODS: "A81001"}},
		{Request{Kind: KindUser, ID: "ana.analyst", Org: "QHM", Roles: []string{"commissioner", "analyst"}},
			Identity{Kind: KindUser, ID: "ana.analyst", Org: "QHM", Roles: []string{"analyst", "commissioner"}}},
	}
	for _, tt := range tests {
		cert, _, _, err := n.ca.Issue(tt.req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := IdentityOf(cert)
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != tt.want.Kind || got.ODS != tt.want.ODS || got.ID != tt.want.ID || got.Org != tt.want.Org || !slices.Equal(got.Roles, tt.want.Roles) {
			t.Errorf("IdentityOf = %+v, want %+v", got, tt.want)
		}
		if d := time.Until(cert.NotAfter); d > DefaultValidity(tt.req.Kind) || d < DefaultValidity(tt.req.Kind)-time.Hour {
			t.Errorf("%s certificate valid for %v, want about %v", tt.req.Kind, d, DefaultValidity(tt.req.Kind))
		}
	}
	srv, _, _, err := n.ca.Issue(Request{Kind: KindServer, Hosts: []string{"localhost", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := IdentityOf(srv); err == nil {
		t.Error("a server certificate was accepted as a client identity")
	}
}

func TestIssueBadRequests(t *testing.T) {
	n := newTestNet(t)
	tests := []struct {
		req     Request
		wantErr string
	}{
		{Request{Kind: KindNode, ODS: "a81001"}, "ODS code"},
		{Request{Kind: KindNode, ODS: "A8"}, "ODS code"},
		{Request{Kind: KindNode, ODS: "A81001/../X"}, "ODS code"},
		{Request{Kind: KindUser, ID: "ana", Org: "QHM"}, "at least one role"},
		{Request{Kind: KindUser, ID: "ana smith", Org: "QHM", Roles: []string{"r"}}, "user id"},
		{Request{Kind: KindUser, ID: "ana", Org: "", Roles: []string{"r"}}, "organisation"},
		{Request{Kind: KindServer}, "at least one host"},
		{Request{Kind: KindServer, Hosts: []string{"bad host"}}, "neither an IP"},
		{Request{Kind: "robot"}, "unknown certificate kind"},
		{Request{Kind: KindNode, ODS: "A81001", Validity: 20 * 365 * 24 * time.Hour}, "outlive the CA"},
	}
	for _, tt := range tests {
		_, _, _, err := n.ca.Issue(tt.req)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Issue(%+v) = %v, want error containing %q", tt.req, err, tt.wantErr)
		}
	}
}

func TestWriteFilesModesAndNoOverwrite(t *testing.T) {
	n := newTestNet(t)
	_, keyFile := n.issue(t, "node-A81001", Request{Kind: KindNode, ODS: "A81001"})
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	_, c, k, _ := n.ca.Issue(Request{Kind: KindNode, ODS: "A81001"})
	if _, _, err := WriteFiles(n.dir, "node-A81001", c, k); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("overwriting a key: %v", err)
	}
}

func TestLoadCA(t *testing.T) {
	n := newTestNet(t)
	ca, err := LoadCA(n.caFile, filepath.Join(n.dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ca.Issue(Request{Kind: KindNode, ODS: "RXX"}); err != nil {
		t.Fatal(err)
	}
	nodeCert, nodeKey := n.issue(t, "node", Request{Kind: KindNode, ODS: "RXX"})
	if _, err := LoadCA(nodeCert, nodeKey); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("LoadCA of a node certificate: %v", err)
	}
	other := newTestNet(t)
	if _, err := LoadCA(n.caFile, filepath.Join(other.dir, "ca.key")); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("LoadCA with the wrong key: %v", err)
	}
}

// TestMutualTLS runs a real TLS handshake over loopback and checks what
// the server learns about each kind of client.
func TestMutualTLS(t *testing.T) {
	n := newTestNet(t)
	srvCert, srvKey := n.issue(t, "server", Request{Kind: KindServer, Hosts: []string{"127.0.0.1"}})
	srvTLS, err := ServerTLS(srvCert, srvKey, n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		id  Identity
		err error
	}
	results := make(chan result)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			err = tc.Handshake()
			var id Identity
			if err == nil {
				id, err = PeerIdentity(tc.ConnectionState())
			}
			c.Close() // before reporting: the client reads until EOF
			results <- result{id, err}
		}
	}()
	dial := func(cfg *tls.Config) (result, error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			<-results
			return result{}, err
		}
		defer c.Close()
		io.ReadAll(c)
		return <-results, nil
	}

	nodeCert, nodeKey := n.issue(t, "node", Request{Kind: KindNode, ODS: "A81001"})
	cfg, err := ClientTLS(nodeCert, nodeKey, n.caFile, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := dial(cfg)
	if err != nil || r.err != nil || r.id.ODS != "A81001" {
		t.Fatalf("node handshake: %+v, %v", r, err)
	}

	// A certificate from another network's CA is refused in the handshake.
	rogue := newTestNet(t)
	rc, rk := rogue.issue(t, "node", Request{Kind: KindNode, ODS: "A81001"})
	cfg, _ = ClientTLS(rc, rk, n.caFile, "")
	if r, err := dial(cfg); err == nil && r.err == nil {
		t.Fatalf("rogue node accepted as %v", r.id)
	}

	// Without a client certificate the handshake succeeds (bearer tokens),
	// but there is no identity.
	pool, _ := CertPool(n.caFile)
	r, err = dial(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
	if err != nil || r.err == nil {
		t.Fatalf("anonymous client: identity %+v, err %v", r.id, err)
	}
}
