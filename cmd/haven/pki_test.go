package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/havenhealth/haven/internal/pki"
)

func runHaven(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestPKICommands(t *testing.T) {
	dir := t.TempDir()
	steps := []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"pki", "init", "--dir", dir}, 0, "created network CA"},
		{[]string{"pki", "init", "--dir", dir}, 1, "already exists"},
		{[]string{"pki", "issue", "node", "--dir", dir, "--ods", "A81001"}, 0, "issued node A81001 certificate"},
		{[]string{"pki", "issue", "node", "--dir", dir, "--ods", "a81001"}, 1, "ODS code"},
		{[]string{"pki", "issue", "node", "--dir", dir}, 1, `"ods" not set`},
		{[]string{"pki", "issue", "user", "--dir", dir, "--id", "ana", "--org", "QHM", "--role", "commissioner"}, 0, "issued user ana (QHM; commissioner)"},
		{[]string{"pki", "issue", "user", "--dir", dir, "--id", "bob", "--org", "QHM"}, 1, "at least one role"},
		{[]string{"pki", "issue", "server", "--dir", dir, "--host", "127.0.0.1"}, 0, "issued server certificate"},
		{[]string{"pki", "issue", "node", "--dir", t.TempDir(), "--ods", "A81002"}, 1, "read certificate"},
	}
	for _, s := range steps {
		out, errOut, code := runHaven(t, s.args...)
		if code != s.wantCode || !strings.Contains(out+errOut, s.wantOut) {
			t.Errorf("haven %s: exit %d, output %q %q; want exit %d and %q",
				strings.Join(s.args, " "), code, out, errOut, s.wantCode, s.wantOut)
		}
	}
	cert, err := pki.ReadCert(filepath.Join(dir, "node-A81001.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := pki.IdentityOf(cert); err != nil || id.ODS != "A81001" {
		t.Fatalf("issued node certificate identity %+v, %v", id, err)
	}
}
