package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/pki"
)

// haven query names why its certificate would be refused: another CA,
// expired, or a node's certificate.
func TestQueryCertificateRefusals(t *testing.T) {
	n := coordinatortest.New(t, coordinatortest.Options{})
	dir := t.TempDir()
	rogue, _, _, err := pki.NewCA("Rogue CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, c, k, err := rogue.Issue(pki.Request{Kind: pki.KindUser, ID: "demo-commissioner", Org: "QHM", Roles: []string{"analyst"}})
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey, err := pki.WriteFiles(filepath.Join(dir, "rogue"), "user", c, k)
	if err != nil {
		t.Fatal(err)
	}
	_, c, k, err = n.CA.Issue(pki.Request{Kind: pki.KindUser, ID: "old", Org: "QHM", Roles: []string{"analyst"}, Validity: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	expiredCert, expiredKey, err := pki.WriteFiles(filepath.Join(dir, "expired"), "user", c, k)
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, nodeKey := n.NodeCert("A81001")
	for _, tc := range []struct{ name, cert, key, want string }{
		{"another CA", foreignCert, foreignKey, `was issued by "CN=Rogue CA,O=Haven network", not by the network CA`},
		{"expired", expiredCert, expiredKey, "expired at"},
		{"a node certificate", nodeCert, nodeKey, "is a node certificate (node A81001); haven query needs a user certificate"},
	} {
		_, errOut, code := runHaven(t, "query", "list", "--coordinator", n.Addr, "--ca", n.CAFile, "--cert", tc.cert, "--key", tc.key)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want it to say %q", tc.name, code, errOut, tc.want)
		}
	}
}
