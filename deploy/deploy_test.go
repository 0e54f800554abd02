package deploy

import (
	"bufio"
	"encoding/json"
	"maps"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/coordinator/metrics"
	nodemetrics "github.com/havenhealth/haven/node/metrics"
)

// roles maps each long-running haven command a deployment may start to the
// example configuration it reads.
var roles = map[string]string{
	"coordinator run": "examples/coordinator.yaml",
	"node run":        "examples/node.yaml",
}

// pathField is a path setting of an example configuration that a deployment
// must provide: on a mount (Compose) or a writable path (systemd).
type pathField struct {
	key      string // dotted YAML key
	writable bool   // the process writes there
}

var examplePaths = map[string][]pathField{
	"examples/coordinator.yaml": {
		{key: "tls.cert"}, {key: "tls.key"}, {key: "tls.ca"},
		{key: "governance.bundle"}, {key: "governance.public_key"},
		{key: "data_dir", writable: true},
	},
	"examples/node.yaml": {
		{key: "tls.cert"}, {key: "tls.key"}, {key: "tls.ca"},
		{key: "governance.bundle"}, {key: "governance.public_key"},
		{key: "linkage.secret_file"}, {key: "opt_out.ndop_file"},
		{key: "state_dir", writable: true}, {key: "audit_dir", writable: true},
	},
}

const containerfile = "container/Containerfile.haven"

// loadExample reads an example configuration as a generic map.
func loadExample(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return m
}

// lookup returns the string at a dotted key of m, or "" if there is none.
func lookup(m map[string]any, key string) string {
	var v any = m
	for _, k := range strings.Split(key, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[k]
	}
	s, _ := v.(string)
	return s
}

// resolve makes p absolute the way Haven does: relative to the directory
// of the configuration file.
func resolve(configPath, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(path.Dir(configPath), p)
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// configFlag returns the value of --config in args.
func configFlag(args []string) (string, bool) {
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v, true
		}
	}
	return "", false
}

// isRoot reports whether a user spec ("name", "uid:gid", "${VAR:-uid}:gid")
// runs as root, taking a variable's default as its value.
func isRoot(user string) bool {
	user = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}`).ReplaceAllString(user, "$1")
	name, _, _ := strings.Cut(user, ":")
	return name == "" || name == "root" || name == "0"
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Command []string `yaml:"command"`
	Ports   []string `yaml:"ports"`
	Volumes []string `yaml:"volumes"`
	User    string   `yaml:"user"`
	Build   struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
}

type mount struct {
	source, target string
	readOnly       bool
}

func parseMount(s string) (mount, bool) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return mount{}, false
	}
	m := mount{source: parts[0], target: parts[1]}
	if len(parts) == 3 {
		m.readOnly = slices.Contains(strings.Split(parts[2], ","), "ro")
	}
	return m, path.IsAbs(m.target)
}

// covering returns the innermost mount that holds p.
func covering(mounts []mount, p string) (mount, bool) {
	var best mount
	found := false
	for _, m := range mounts {
		if under(p, m.target) && (!found || len(m.target) > len(best.target)) {
			best, found = m, true
		}
	}
	return best, found
}

func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	count := map[string]int{}
	for name, svc := range cf.Services {
		t.Run(name, func(t *testing.T) {
			if len(svc.Command) < 2 {
				t.Fatalf("command %q: want a haven subcommand as a list", svc.Command)
			}
			role := strings.Join(svc.Command[:2], " ")
			example, ok := roles[role]
			if !ok {
				t.Fatalf("command %q: %q is not one of the haven commands %v", svc.Command, role, slices.Sorted(maps.Keys(roles)))
			}
			count[role]++
			if isRoot(svc.User) {
				t.Errorf("user %q: must be set and not root", svc.User)
			}
			df := filepath.Join("compose", filepath.FromSlash(svc.Build.Context), filepath.FromSlash(svc.Build.Dockerfile))
			if svc.Build.Dockerfile == "" {
				t.Errorf("no build.dockerfile")
			} else if _, err := os.Stat(df); err != nil {
				t.Errorf("build: %v", err)
			}

			var mounts []mount
			for _, v := range svc.Volumes {
				m, ok := parseMount(v)
				if !ok {
					t.Errorf("volume %q: want SOURCE:/ABSOLUTE/TARGET[:ro]", v)
					continue
				}
				mounts = append(mounts, m)
			}
			cfgPath, ok := configFlag(svc.Command)
			if !ok {
				t.Fatalf("command %q: no --config", svc.Command)
			}
			if path.Base(cfgPath) != path.Base(example) {
				t.Errorf("--config %s: want a file named %s, as in deploy/%s", cfgPath, path.Base(example), example)
			}
			if _, ok := covering(mounts, cfgPath); !ok {
				t.Errorf("--config %s: on no mount", cfgPath)
			}
			ex := loadExample(t, example)
			for _, f := range examplePaths[example] {
				p := resolve(cfgPath, lookup(ex, f.key))
				m, ok := covering(mounts, p)
				switch {
				case !ok:
					t.Errorf("%s %s (from deploy/%s): on no mount", f.key, p, example)
				case f.writable && m.readOnly:
					t.Errorf("%s %s: the process writes there, but its mount %s is read-only", f.key, p, m.target)
				}
			}

			switch role {
			case "node run":
				if len(svc.Ports) > 0 {
					t.Errorf("ports %q: a node dials out and must publish none", svc.Ports)
				}
			case "coordinator run":
				_, port, _ := strings.Cut(lookup(ex, "listen"), ":")
				if len(svc.Ports) != 1 {
					t.Fatalf("ports %q: want the coordinator's one port", svc.Ports)
				}
				published := svc.Ports[0]
				container := strings.TrimSuffix(published[strings.LastIndex(published, ":")+1:], "/tcp")
				if container != port {
					t.Errorf("port %q: container port %s, but the coordinator listens on %s", published, container, port)
				}
			}
		})
	}
	if count["coordinator run"] != 1 || count["node run"] < 2 {
		t.Errorf("services: %d coordinators and %d nodes, want 1 and at least 2", count["coordinator run"], count["node run"])
	}
}

// unit is a systemd unit file: section, then key, then every value given.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, file string) unit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "", line[0] == '#', line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is not KEY=VALUE in a section", file, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the single value of key in [Service].
func (u unit) one(t *testing.T, key string) string {
	t.Helper()
	v := u["Service"][key]
	if len(v) != 1 {
		t.Errorf("[Service] %s: given %d times, want once", key, len(v))
		return ""
	}
	return v[0]
}

func TestSystemdUnits(t *testing.T) {
	tests := []struct {
		file string
		role string
	}{
		{"systemd/haven-node.service", "node run"},
		{"systemd/haven-coordinator.service", "coordinator run"},
	}
	hardening := map[string]string{
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"PrivateTmp":              "yes",
		"ProtectHome":             "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"CapabilityBoundingSet":   "",
		"SystemCallFilter":        "@system-service",
		"Restart":                 "on-failure",
	}
	entry := entrypoint(t)
	for _, tt := range tests {
		t.Run(path.Base(tt.file), func(t *testing.T) {
			u := parseUnit(t, tt.file)
			exec := strings.Fields(u.one(t, "ExecStart"))
			if len(exec) < 3 {
				t.Fatalf("ExecStart %q: want %s %s --config FILE", exec, entry, tt.role)
			}
			if exec[0] != entry {
				t.Errorf("ExecStart runs %s, but the image installs haven as %s", exec[0], entry)
			}
			if got := strings.Join(exec[1:3], " "); got != tt.role {
				t.Errorf("ExecStart runs haven %s, want haven %s", got, tt.role)
			}
			example := roles[tt.role]
			cfgPath, ok := configFlag(exec)
			if want := "/etc/haven/" + path.Base(example); !ok || cfgPath != want {
				t.Errorf("ExecStart --config %q, want %s", cfgPath, want)
			}
			if user := u.one(t, "User"); isRoot(user) {
				t.Errorf("User=%q: must be set and not root", user)
			}
			for k, want := range hardening {
				if got := u.one(t, k); got != want {
					t.Errorf("%s=%q, want %q", k, got, want)
				}
			}

			var writable []string
			for _, v := range u["Service"]["ReadWritePaths"] {
				for _, p := range strings.Fields(v) {
					writable = append(writable, strings.TrimPrefix(p, "-"))
				}
			}
			if !slices.Contains(writable, "/var/lib/haven") {
				t.Errorf("ReadWritePaths %q: want /var/lib/haven", writable)
			}
			ex := loadExample(t, example)
			for _, f := range examplePaths[example] {
				if !f.writable {
					continue
				}
				p := resolve(cfgPath, lookup(ex, f.key))
				if !slices.ContainsFunc(writable, func(dir string) bool { return under(p, dir) }) {
					t.Errorf("%s %s (from deploy/%s): not under ReadWritePaths %q", f.key, p, example, writable)
				}
			}
			// A credential must be loaded from where the example keeps the secret.
			for _, v := range u["Service"]["LoadCredential"] {
				_, src, _ := strings.Cut(v, ":")
				if want := lookup(ex, "linkage.secret_file"); src != want {
					t.Errorf("LoadCredential=%s: loads %q, but deploy/%s keeps the linkage secret at %q", v, src, example, want)
				}
			}
		})
	}
}

// instruction is one Containerfile instruction, continuation lines joined.
type instruction struct{ op, args string }

func parseContainerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(containerfile)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		op, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{op: strings.ToUpper(op), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// entrypoint returns the program the image's ENTRYPOINT runs.
func entrypoint(t *testing.T) string {
	t.Helper()
	var entry []string
	for _, in := range parseContainerfile(t) {
		if in.op == "ENTRYPOINT" {
			if err := yaml.Unmarshal([]byte(in.args), &entry); err != nil {
				t.Fatalf("ENTRYPOINT %s: want the exec form: %v", in.args, err)
			}
		}
	}
	if len(entry) == 0 {
		t.Fatalf("%s: no ENTRYPOINT", containerfile)
	}
	return entry[0]
}

func TestContainerfile(t *testing.T) {
	ins := parseContainerfile(t)
	final := -1
	for i, in := range ins {
		if in.op == "FROM" {
			final = i
		}
	}
	if final < 0 {
		t.Fatalf("%s: no FROM", containerfile)
	}

	user := ""
	var copied []string
	for _, in := range ins[final:] {
		switch in.op {
		case "USER":
			user = in.args
		case "COPY":
			f := strings.Fields(in.args)
			copied = append(copied, f[len(f)-1])
		}
	}
	if isRoot(user) {
		t.Errorf("final stage runs as %q: want a non-root USER", user)
	}
	if got := entrypoint(t); got != "/usr/local/bin/haven" {
		t.Errorf("ENTRYPOINT runs %s, want /usr/local/bin/haven", got)
	}

	built := map[string]bool{}
	buildRE := regexp.MustCompile(`go build [^;&|]*`)
	for _, in := range ins[:final] {
		if in.op != "RUN" {
			continue
		}
		cmds := buildRE.FindAllString(in.args, -1)
		if len(cmds) > 0 && !strings.Contains(in.args, "-X github.com/havenhealth/haven/internal/buildinfo.Version=") {
			t.Errorf("RUN %s: does not set buildinfo.Version with -ldflags -X", in.args)
		}
		for _, cmd := range cmds {
			for _, flag := range []string{"-tags=duckdb_arrow", "-trimpath", "-ldflags"} {
				if !strings.Contains(cmd, flag) {
					t.Errorf("%q: missing %s", cmd, flag)
				}
			}
			f := strings.Fields(cmd)
			pkg := f[len(f)-1]
			if _, err := os.Stat(filepath.Join("..", filepath.FromSlash(pkg))); err != nil {
				t.Errorf("%q builds %s: %v", cmd, pkg, err)
			}
			built[path.Base(pkg)] = true
		}
	}
	for _, bin := range []string{"haven", "haven-connector-duckdb", "haven-connector-postgres"} {
		if !built[bin] {
			t.Errorf("build stage does not build %s", bin)
		}
	}

	// The node runs its connector from connector.path; the image must put
	// the plugins where the example expects them.
	dir := path.Dir(lookup(loadExample(t, "examples/node.yaml"), "connector.path"))
	if !slices.ContainsFunc(copied, func(dst string) bool { return path.Clean(dst) == dir }) {
		t.Errorf("final stage copies to %q, none of them %s (connector.path in deploy/examples/node.yaml)", copied, dir)
	}
}

// The Grafana dashboard is valid JSON and charts only metrics the
// coordinator exposes or a node writes to its textfile: a renamed metric
// fails here, not on a screen.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/haven-coordinator.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	m := metrics.New(metrics.Sources{
		ActiveRuns: func() map[string]int { return nil }, Links: func() map[string]int { return nil },
		AuditHead: func() uint64 { return 0 }, StoreBytes: func() int64 { return 0 },
	})
	// Labelled series appear once observed.
	m.RunFinished("released", time.Second)
	m.Upload(true, 1, 1)
	m.Decision("haven/submit", time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	prom := filepath.Join(t.TempDir(), "haven.prom")
	if err := nodemetrics.Write(prom, nodemetrics.Snapshot{Site: "G80001"}); err != nil {
		t.Fatal(err)
	}
	nodeFile, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	exposed := rec.Body.String() + string(nodeFile)
	name := regexp.MustCompile(`haven_[a-z_]+`)
	charted := 0
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				m = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if !strings.Contains(exposed, "# TYPE "+m+" ") {
					t.Errorf("panel %q charts %s, which the coordinator does not expose", p.Title, m)
				}
				charted++
			}
		}
	}
	if charted < 8 {
		t.Errorf("the dashboard charts %d metrics", charted)
	}
}
