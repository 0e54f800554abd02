package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		file string
		// want are substrings of the error, one per problem; none for a
		// good file.
		want []string
	}{
		{file: "minimal.good.yaml"},
		{file: "signing_key.good.yaml"},
		{file: "register.good.yaml"},
		{file: "register_listen.bad.yaml", want: []string{`register.listen: ":7443" is also listen`, `metrics.listen: ":7443" is also listen`}},
		{file: "portal.good.yaml"},
		{file: "portal_cis2.good.yaml"},
		{file: "http_api.good.yaml"},
		{file: "http_api_listen.bad.yaml", want: []string{`http_api.listen: "127.0.0.1:8443" is also register.listen`}},
		{file: "http_api_address.bad.yaml", want: []string{`http_api.listen: "7444" is not host:port`}},
		{file: "http_api_unknown.bad.yaml", want: []string{"field port not found"}},
		{file: "portal_missing.bad.yaml", want: []string{"portal.oidc.issuer: required", `portal.oidc.client_id: ""`,
			"portal.oidc.client_secret_file: required", "portal.session.key_file: required"}},
		{file: "portal_values.bad.yaml", want: []string{
			`portal.listen: "127.0.0.1:8444" is also register.listen`,
			`portal.url: "http://portal.example/app": want https://host[:port] with no path`,
			`portal.oidc.issuer: "http://idp.example": plain http is allowed only on a loopback address`,
			`portal.oidc.client_id: "haven portal"`,
			"portal.oidc.client_secret_file: open", "no-such.secret",
			"portal.oidc.scopes: [profile]: openid is required",
			`portal.oidc.claims.organisation: "org code" is not a claim name`,
			`portal.oidc.role_map: "R 8000"`,
			"portal.session.key_file:", "holds 5 bytes; want at least 32",
			"portal.session.max_age: 1m0s: want from 5m to 24h",
		}},
		{file: "portal_unknown.bad.yaml", want: []string{"field client_secret not found"}},
		{file: "register_address.bad.yaml", want: []string{`register.listen: "8443" is not host:port`}},
		{file: "signing_key_missing.bad.yaml", want: []string{"releases.signing_key: release signing key: open", "no-such-release.key"}},
		{file: "signing_key_public.bad.yaml", want: []string{`releases.signing_key: release signing key`, `no PEM "PRIVATE KEY" block`}},
		{file: "unknown_field.bad.yaml", want: []string{"field heartbeat not found"}},
		{file: "missing_paths.bad.yaml", want: []string{"tls.cert: required", "tls.key: required", "tls.ca: required",
			"governance.bundle: required", "governance.public_key: required", "data_dir: required"}},
		{file: "bad_values.bad.yaml", want: []string{
			`listen: "nonsense" is not host:port`,
			"governance.reload_interval: 10ms is under a second",
			"runs.deadline: 0s",
			"runs.heartbeat_interval: 1h0m0s",
			"runs.opt_out_interval: 1ms: want from 10ms to 24h",
			"uploads.max_rows: 0",
			"uploads.max_batch_bytes: 2MiB is more than uploads.max_bytes 1MiB",
			"users[0].token_sha256: want 64 lower-case hex digits",
			`users[1].id: "ana" appears twice`,
			"users[1].roles: at least one role is required",
			`network.sites[0].ods: ODS code "a81001"`,
			`network.sites[1].kind: "hospital": want gp or trust`,
			"network.sites[1].population: -1 is negative",
		}},
		{file: "token_in_clear.bad.yaml", want: []string{"field token not found"}},
		{file: "bad_size.bad.yaml", want: []string{`"12 parsecs" is not a byte size`}},
		{file: "linkage.good.yaml"},
		{file: "memory_limit_small.bad.yaml", want: []string{"memory_limit: 100MiB: want 0 (none) or at least 256MiB"}},
		{file: "linkage_budget_unit.bad.yaml", want: []string{`"4 gigs" is not a byte size`}},
		{file: "linkage_budget_small.bad.yaml", want: []string{"linkage.memory_budget: 4KiB: want 0 (no budget) or at least 64MiB"}},
		{file: "linkage_unknown.bad.yaml", want: []string{"field memory not found"}},
		{file: "two_documents.bad.yaml", want: []string{"more than one YAML document"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			cfg, err := Load(path)
			if err == nil {
				err = cfg.Validate()
			}
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.file) {
				t.Errorf("error does not name the file: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDefaultsAndRelativePaths(t *testing.T) {
	cfg, err := Load(filepath.Join("testdata", "minimal.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.Abs("testdata")
	if !strings.HasPrefix(cfg.TLS.Cert, "testdata") && !strings.HasPrefix(cfg.TLS.Cert, dir) {
		t.Errorf("tls.cert %q is not resolved against the file's directory", cfg.TLS.Cert)
	}
	if got, want := cfg.StorePath(), filepath.Join("testdata", "data", "coordinator.db"); got != want {
		t.Errorf("store path %q, want %q", got, want)
	}
	def := Default()
	if cfg.Runs != def.Runs || cfg.Uploads != def.Uploads || cfg.Listen != def.Listen || cfg.Linkage != def.Linkage {
		t.Errorf("defaults not kept: %+v", cfg)
	}
	if cfg.Linkage.MemoryBudget != 4<<30 {
		t.Errorf("default linkage.memory_budget %s; want 4GiB", cfg.Linkage.MemoryBudget)
	}
	if got, want := cfg.SpillPath(), filepath.Join("testdata", "data", "spill"); got != want {
		t.Errorf("default spill path %q, want %q", got, want)
	}
	cfg, err = Load(filepath.Join("testdata", "linkage.good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Linkage.MemoryBudget != 512<<20 || cfg.SpillPath() != "/var/tmp/haven-spill" {
		t.Errorf("linkage section parsed as %+v", cfg.Linkage)
	}
	if cfg.MemoryLimit != 6<<30 {
		t.Errorf("memory_limit parsed as %s, want 6GiB", cfg.MemoryLimit)
	}
	abs := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(abs, []byte("tls: {cert: /abs/c.crt, key: k, ca: ca}\ngovernance: {bundle: b, public_key: k}\ndata_dir: d\n"), 0o600)
	cfg, err = Load(abs)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.Cert != "/abs/c.crt" || cfg.DataDir != filepath.Join(filepath.Dir(abs), "d") {
		t.Errorf("paths %q and %q", cfg.TLS.Cert, cfg.DataDir)
	}
}

// The annotated example in deploy/ must stay a valid configuration.
func TestExampleConfig(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "deploy", "examples", "coordinator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Runs.Deadline != 15*time.Minute || cfg.Uploads.MaxBytes != 2<<30 || len(cfg.Network.Sites) != 3 || len(cfg.Users) != 1 {
		t.Errorf("example parsed as %+v", cfg)
	}
}

func TestStringHidesTokens(t *testing.T) {
	cfg := Default()
	cfg.Users = []User{{ID: "svc", Org: "QHM", Roles: []string{"analyst"}, TokenSHA256: HashToken("hunter2")}}
	s := cfg.String()
	if strings.Contains(s, cfg.Users[0].TokenSHA256) || strings.Contains(s, "hunter2") || !strings.Contains(s, "svc") {
		t.Errorf("String() = %s", s)
	}
}

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		err  bool
	}{
		{in: "1024", want: 1024},
		{in: "64MiB", want: 64 << 20},
		{in: "2 GiB", want: 2 << 30},
		{in: "5MB", want: 5_000_000},
		{in: "-1", err: true},
		{in: "1.5GiB", err: true},
		{in: "99999999999999999999GiB", err: true},
	} {
		cfg, err := Parse([]byte("uploads: {max_bytes: " + tc.in + "}\n"))
		if tc.err {
			if err == nil {
				t.Errorf("%q: no error", tc.in)
			}
			continue
		}
		if err != nil || cfg.Uploads.MaxBytes != tc.want {
			t.Errorf("%q: %v %v, want %v", tc.in, cfg.Uploads.MaxBytes, err, tc.want)
		}
	}
	if s := ByteSize(64 << 20).String(); s != "64MiB" {
		t.Errorf("String() = %s", s)
	}
}
