package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/internal/pki"
)

func TestLoadTestdata(t *testing.T) {
	tests := []struct {
		file string
		want []string // substrings of the error; none for a good file
	}{
		{"minimal.good.yaml", nil},
		{"metrics_textfile.good.yaml", nil},
		{"metrics_not_prom.bad.yaml", []string{`metrics.textfile: "/var/lib/node_exporter/haven.txt": want a file name ending in .prom`}},
		{"unknown_field.bad.yaml", []string{"unknown_field.bad.yaml", "field colour not found"}},
		{"missing_fields.bad.yaml", []string{"site.kind: missing", "tls.cert: missing", "tls.key: missing", "tls.ca: missing",
			"connector.path: missing", "connector.sha256: missing", "governance.bundle: missing", "linkage.secret_file: missing",
			"linkage.key_id: missing", "opt_out.ndop_file: missing", "state_dir: missing", "audit_dir: missing"}},
		{"bad_kind.bad.yaml", []string{`site.kind: "pharmacy" is not a site kind`}},
		{"bad_sha.bad.yaml", []string{"connector.sha256: want 64 lowercase hex digits"}},
		{"bad_duration.bad.yaml", []string{`"soon" is not a duration`}},
		{"bad_address.bad.yaml", []string{"site.ods:", "coordinator.address:", "want host:port", "governance.reload_interval:",
			"linkage.key_id:", "audit_dir: must differ from state_dir", "limits.concurrency:", "limits.max_rows:"}},
		{"bad_reconnect_max.bad.yaml", []string{"coordinator.reconnect_max: 100ms is below the minimum of 1s"}},
		{"two_documents.bad.yaml", []string{"more than one YAML document"}},
		{"empty.bad.yaml", []string{"the file is empty"}},
		{"wrong_type.bad.yaml", []string{"wrong_type.bad.yaml", "cannot unmarshal"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := Load(filepath.Join("testdata", tt.file))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if c == nil {
					t.Fatal("Load returned no config")
				}
				return
			}
			if err == nil {
				t.Fatalf("Load accepted %s", tt.file)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadResolvesPathsAndDefaults(t *testing.T) {
	c, err := Load("testdata/minimal.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Textfile != "" {
		t.Errorf("metrics.textfile %q by default, want empty (off)", c.Metrics.Textfile)
	}
	metrics, err := Load("testdata/metrics_textfile.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	for field, got := range map[string]string{
		"tls.cert":          c.TLS.Cert,
		"connector.path":    c.Connector.Path,
		"governance.bundle": c.Governance.Bundle,
		"state_dir":         c.StateDir,
		"audit_dir":         c.AuditDir,
		"opt_out.ndop_file": c.OptOut.NDOPFile,
		"metrics.textfile":  metrics.Metrics.Textfile,
	} {
		if !filepath.IsAbs(got) || !strings.HasPrefix(got, dir) {
			t.Errorf("%s = %q, want a path under %s", field, got, dir)
		}
	}
	if c.Limits.Concurrency != DefaultConcurrency || c.Limits.MaxRows != DefaultMaxRows ||
		c.Limits.QueryTimeout.Std() != DefaultQueryTimeout || c.Governance.ReloadInterval.Std() != DefaultReloadInterval ||
		c.Coordinator.ReconnectMax.Std() != DefaultReconnectMax {
		t.Errorf("defaults not applied: %+v %+v", c.Limits, c.Governance)
	}
}

// The annotated example shipped for provider IT must stay loadable.
func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../../deploy/examples/node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Site.ODS != "A81001" || c.Limits.QueryTimeout.Std() != 30*time.Minute {
		t.Errorf("example read as %+v", c)
	}
}

func TestStringRedactsConnectorEnv(t *testing.T) {
	const password = "hunter2-very-secret"
	src := bytes.Replace(mustRead(t, "testdata/minimal.good.yaml"),
		[]byte("connector:\n"), []byte("connector:\n  env: {PGPASSWORD: "+password+"}\n"), 1)
	c, err := Parse(filepath.Join(t.TempDir(), "node.yaml"), src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Connector.Env["PGPASSWORD"] != password {
		t.Fatalf("env not read: %v", c.Connector.Env)
	}
	s := c.String()
	if strings.Contains(s, password) {
		t.Errorf("String() prints the connector's credentials:\n%s", s)
	}
	if !strings.Contains(s, "PGPASSWORD") || !strings.Contains(s, "G80001") {
		t.Errorf("String() lost the config:\n%s", s)
	}
	if c.Connector.Env["PGPASSWORD"] != password {
		t.Error("String() changed the config")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// site builds a directory with everything a node.yaml points at.
type site struct {
	dir    string
	config string
	secret []byte
}

func newSite(t *testing.T, certODS string) *site {
	t.Helper()
	dir := t.TempDir()
	ca, caPEM, caKey, err := pki.NewCA("Test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.WriteFiles(filepath.Join(dir, "certs"), "ca", caPEM, caKey); err != nil {
		t.Fatal(err)
	}
	_, certPEM, keyPEM, err := ca.Issue(pki.Request{Kind: pki.KindNode, ODS: certODS})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.WriteFiles(filepath.Join(dir, "certs"), "node", certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	s := &site{dir: dir, secret: bytes.Repeat([]byte("k"), 40)}
	for name, content := range map[string][]byte{
		"plugins/haven-connector-duckdb": []byte("#!/bin/false\n"),
		"board.pub":                      []byte("-----BEGIN PUBLIC KEY-----\n"),
		"ndop.csv":                       []byte("nhs_number\n"),
		"bundle.tar.gz":                  []byte("x"),
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "linkage.key"), s.secret, 0o600); err != nil {
		t.Fatal(err)
	}
	s.config = filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(s.config, mustRead(t, "testdata/minimal.good.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckFiles(t *testing.T) {
	t.Run("good", func(t *testing.T) {
		s := newSite(t, "G80001")
		c, err := Load(s.config)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.CheckFiles(); err != nil {
			t.Fatalf("CheckFiles: %v", err)
		}
	})
	t.Run("certificate names another site", func(t *testing.T) {
		s := newSite(t, "B82005")
		c, err := Load(s.config)
		if err != nil {
			t.Fatal(err)
		}
		err = c.CheckFiles()
		if err == nil || !strings.Contains(err.Error(), "names site B82005, but site.ods is G80001") {
			t.Fatalf("CheckFiles: %v", err)
		}
	})
	t.Run("missing files named", func(t *testing.T) {
		s := newSite(t, "G80001")
		os.Remove(filepath.Join(s.dir, "ndop.csv"))
		os.Remove(filepath.Join(s.dir, "plugins/haven-connector-duckdb"))
		c, err := Load(s.config)
		if err != nil {
			t.Fatal(err)
		}
		err = c.CheckFiles()
		for _, w := range []string{"opt_out.ndop_file:", "connector.path:"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("CheckFiles does not report %s: %v", w, err)
			}
		}
	})
}

func TestReadSecret(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		wantErr string
	}{
		{"good", bytes.Repeat([]byte{0xA5}, 32), 0o600, ""},
		{"trailing newline dropped", append(bytes.Repeat([]byte("s"), 32), '\n'), 0o400, ""},
		{"too short", bytes.Repeat([]byte("s"), 31), 0o600, "need at least 32"},
		{"short once newline dropped", append(bytes.Repeat([]byte("s"), 31), '\n'), 0o600, "need at least 32"},
		{"group readable", bytes.Repeat([]byte("s"), 40), 0o640, "chmod 600"},
		{"world readable", bytes.Repeat([]byte("s"), 40), 0o644, "chmod 600"},
	}
	// The perturbation secret is read under the same rules.
	readers := map[string]func(*Config, string) (fmt.Stringer, error){
		"linkage": func(c *Config, p string) (fmt.Stringer, error) {
			c.Linkage.SecretFile = p
			return c.ReadSecret()
		},
		"perturbation": func(c *Config, p string) (fmt.Stringer, error) {
			c.Linkage.PerturbationSecretFile = p
			return c.ReadPerturbationSecret()
		},
	}
	for _, tt := range tests {
		for which, read := range readers {
			t.Run(which+" "+tt.name, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "linkage.key")
				if err := os.WriteFile(p, tt.content, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, tt.mode); err != nil {
					t.Fatal(err)
				}
				s, err := read(&Config{}, p)
				if tt.wantErr == "" {
					if err != nil {
						t.Fatal(err)
					}
					if strings.Contains(s.String(), string(tt.content[:8])) {
						t.Error("Secret.String prints the secret")
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadSecret: %v, want error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), string(tt.content[:8])) {
					t.Errorf("error quotes the secret: %v", err)
				}
			})
		}
	}
	c := &Config{Linkage: Linkage{SecretFile: filepath.Join(t.TempDir(), "absent"), PerturbationSecretFile: filepath.Join(t.TempDir(), "absent")}}
	if _, err := c.ReadSecret(); err == nil {
		t.Error("a missing secret file was accepted")
	}
	if _, err := c.ReadPerturbationSecret(); err == nil {
		t.Error("a missing perturbation secret file was accepted")
	}
	if s, err := (&Config{}).ReadPerturbationSecret(); err != nil || s.IsSet() {
		t.Errorf("no perturbation secret configured: %v, set %v", err, s.IsSet())
	}
}
