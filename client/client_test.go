package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/internal/pki"
)

// Dial names what is wrong with the credentials it is given before it
// connects: a certificate without its key, a node's certificate (naming
// the program that needs a user's), a token file that is missing or
// empty. Good credentials of either kind dial.
func TestDialCredentials(t *testing.T) {
	dir := t.TempDir()
	ca, caCert, caKey, err := pki.NewCA("Haven test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, err := pki.WriteFiles(filepath.Join(dir, "ca"), "ca", caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(req pki.Request) (string, string) {
		_, c, k, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := pki.WriteFiles(filepath.Join(dir, string(req.Kind)), "cert", c, k)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	userCert, userKey := issue(pki.Request{Kind: pki.KindUser, ID: "ana", Org: "QHM", Roles: []string{"analyst"}})
	nodeCert, nodeKey := issue(pki.Request{Kind: pki.KindNode, ODS: "A81001"})
	token := filepath.Join(dir, "token")
	empty := filepath.Join(dir, "empty")
	for path, body := range map[string]string{token: "s3cret\n", empty: " \n"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := Config{Addr: "127.0.0.1:1", CAFile: caFile, Program: "the portal"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" dials
	}{
		{"user certificate", func(c *Config) { c.CertFile, c.KeyFile = userCert, userKey }, ""},
		{"token", func(c *Config) { c.TokenFile = token }, ""},
		{"certificate without key", func(c *Config) { c.CertFile = userCert }, "a certificate and its key go together"},
		{"node certificate", func(c *Config) { c.CertFile, c.KeyFile = nodeCert, nodeKey }, "is a node certificate (node A81001); the portal needs a user certificate"},
		{"missing token file", func(c *Config) { c.TokenFile = filepath.Join(dir, "nope") }, "read token: "},
		{"empty token file", func(c *Config) { c.TokenFile = empty }, "token file " + empty + " is empty"},
		{"nothing", func(*Config) {}, "no credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			c, err := Dial(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Dial = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
