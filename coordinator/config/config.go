// Package config reads and checks the coordinator's configuration file
// (deploy/examples/coordinator.yaml is the annotated example).
//
// Loading is layered: Default, then the YAML file (strictly: an unknown
// field is an error), then whatever flags the caller applies, and finally
// Validate, which reports every problem at once. Relative paths in the file
// are resolved against the file's directory, so a configuration and the
// files it names can move together.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/release"
)

// Config is the coordinator's configuration.
type Config struct {
	// Listen is the address the one gRPC port (NodeLink, Coordinator and
	// Arrow Flight) listens on, host:port.
	Listen string `yaml:"listen"`
	// TLS is the coordinator's certificate and the network CA.
	TLS TLS `yaml:"tls"`
	// Register is the public transparency register (HTTPS, no login).
	Register Register `yaml:"register"`
	// Metrics is the Prometheus endpoint.
	Metrics Metrics `yaml:"metrics"`
	// Portal is the commissioners' web portal (HTTPS, OpenID Connect
	// login).
	Portal Portal `yaml:"portal"`
	// HTTPAPI is the commissioner API over HTTP and JSON (HTTPS, the
	// gRPC port's client certificates and tokens).
	HTTPAPI HTTPAPI `yaml:"http_api"`
	// Governance is the signed governance bundle.
	Governance Governance `yaml:"governance"`
	// Releases says how released tables are signed.
	Releases Releases `yaml:"releases"`
	// DataDir holds the job store (coordinator.db) and the audit log
	// (audit.jsonl).
	DataDir string `yaml:"data_dir"`
	// Runs holds run and link timing.
	Runs Runs `yaml:"runs"`
	// Uploads caps each task's Flight upload.
	Uploads Uploads `yaml:"uploads"`
	// OperatorRoles are the user roles that may see, cancel and fetch
	// every run, not only their own.
	OperatorRoles []string `yaml:"operator_roles"`
	// Users are the people and services that authenticate with a bearer
	// token instead of a client certificate.
	Users []User `yaml:"users"`
	// Network describes the member sites; optional.
	Network Network `yaml:"network"`
	// Linkage bounds the memory of linkage runs.
	Linkage Linkage `yaml:"linkage"`
	// MemoryLimit is the memory the coordinator process may use, given
	// to Go's garbage collector as its soft limit, so that the process's
	// memory follows linkage.memory_budget instead of growing to twice
	// what is live before a collection: for a national network, the
	// budget of the linkage runs that may run at once plus about 2GiB for
	// links and uploads (docs/national-scale.md). 0, the default, leaves
	// it to the GOMEMLIMIT environment variable, which overrides it
	// anyway, or else to 90% of the cgroup's memory.max where there is
	// one.
	MemoryLimit ByteSize `yaml:"memory_limit"`

	// file is the path the configuration was loaded from, for messages.
	file string
}

// TLS names the coordinator's certificate and key and the network CA
// certificate that client certificates are checked against.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// Releases names the key the coordinator signs every released table with
// (ed25519, PKCS #8 PEM, as `haven pki signing-key` writes it). Without
// one, tables are released unsigned and `haven query verify` refuses them.
type Releases struct {
	SigningKey string `yaml:"signing_key"`
}

// Governance names the signed governance bundle and the board's key.
type Governance struct {
	// Bundle is a bundle directory or .tar.gz file.
	Bundle string `yaml:"bundle"`
	// PublicKey is the board's public key (PEM).
	PublicKey string `yaml:"public_key"`
	// ReloadInterval is how often the bundle is checked for a new
	// version; zero turns reloading off.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// Runs holds timing of runs and node links.
type Runs struct {
	// Deadline is how long sites have to answer a run.
	Deadline time.Duration `yaml:"deadline"`
	// HeartbeatInterval is how often nodes send Heartbeat; a link silent
	// for six intervals is dropped (nodelink.SilentIntervals).
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// OptOutInterval is how often, at most, a node link is sent the
	// network type 1 opt-out list's changes; changes accepted meanwhile
	// go together, and a task always goes after every change accepted
	// before it. Longer spares a starting network (every practice
	// publishes) from relaying each change to every node.
	OptOutInterval time.Duration `yaml:"opt_out_interval"`
	// MaxRunning is how many runs are dispatched at once; admitted runs
	// beyond it wait in a queue that serves organisations in turn, and
	// their deadline starts when they leave it.
	MaxRunning int `yaml:"max_running"`
}

// Uploads caps what one task may upload (havenv1.UploadLimits). Byte
// figures count Arrow IPC body bytes and accept a unit: 512MiB, 1GiB.
type Uploads struct {
	MaxRows       int64    `yaml:"max_rows"`
	MaxBytes      ByteSize `yaml:"max_bytes"`
	MaxBatchBytes ByteSize `yaml:"max_batch_bytes"`
}

// User is a bearer-token user. The token itself is never stored: only its
// SHA-256, which `haven coordinator token` prints.
type User struct {
	ID          string   `yaml:"id"`
	Org         string   `yaml:"org"`
	Roles       []string `yaml:"roles"`
	TokenSHA256 string   `yaml:"token_sha256"`
}

// Linkage bounds the memory each linkage run's patient table may hold
// (coordinator/linkage; docs/linkage-memory.md). Past the budget, partitions of
// the table move to spill files, which hold run pseudonyms and field
// values only and are removed when the run ends.
type Linkage struct {
	// MemoryBudget is the bytes one run's patient table may hold in
	// memory, with a unit (4GiB); 0 turns the budget off and holds every
	// run wholly in memory. Each of runs.max_running runs has its own.
	MemoryBudget ByteSize `yaml:"memory_budget"`
	// SpillDir is where spill files go; default data_dir/spill. It should
	// be on local disk, not a RAM-backed tmpfs.
	SpillDir string `yaml:"spill_dir"`
}

// MinMemoryBudget is the smallest linkage.memory_budget but 0: below it a
// run would spill nearly everything, which is surely a mistyped unit.
const MinMemoryBudget = 64 << 20

// MinMemoryLimit is the smallest memory_limit but 0: a coordinator with
// links to a network needs more, and less is surely a mistyped unit.
const MinMemoryLimit = 256 << 20

// Network describes the network's member sites.
type Network struct {
	// LinkageKeyID is the identifier of the network linkage secret; when
	// set, linkage runs use only nodes that hold it.
	LinkageKeyID string `yaml:"linkage_key_id"`
	// Sites, when listed, are the only sites allowed to connect, and every
	// one is expected in the runs of its kind whether connected or not.
	// Unlisted, any node with a network certificate may connect and runs
	// expect the sites that have connected since start-up.
	Sites []Site `yaml:"sites"`
}

// Site is one member site.
type Site struct {
	ODS  string       `yaml:"ods"`
	Kind cdm.SiteKind `yaml:"kind"`
	// Population is the site's registered population, used for coverage
	// while the site has not connected; the node's own figure wins.
	Population int64 `yaml:"population"`
}

// Default returns the defaults a file overrides.
func Default() Config {
	return Config{
		Listen: ":7443",
		Governance: Governance{
			ReloadInterval: 30 * time.Second,
		},
		Runs: Runs{
			Deadline:          15 * time.Minute,
			HeartbeatInterval: 15 * time.Second,
			OptOutInterval:    2 * time.Second,
			MaxRunning:        16,
		},
		Uploads: Uploads{
			MaxRows:       20_000_000,
			MaxBytes:      2 << 30,
			MaxBatchBytes: 64 << 20,
		},
		OperatorRoles: []string{"operator"},
		Portal:        DefaultPortal(),
		Linkage:       Linkage{MemoryBudget: 4 << 30},
	}
}

// Load reads the file at path over Default and resolves its relative paths.
// It does not validate; call Validate.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.file = path
	cfg.resolve(filepath.Dir(path))
	return cfg, nil
}

// Parse reads YAML over Default. Unknown fields are errors. Paths are left
// as written.
func Parse(b []byte) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document; want one")
	}
	return &cfg, nil
}

func (c *Config) resolve(dir string) {
	for _, p := range []*string{&c.TLS.Cert, &c.TLS.Key, &c.TLS.CA, &c.Governance.Bundle, &c.Governance.PublicKey, &c.Releases.SigningKey, &c.DataDir,
		&c.Portal.OIDC.ClientSecretFile, &c.Portal.Session.KeyFile, &c.Linkage.SpillDir} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// File is the path the configuration was loaded from, if any.
func (c *Config) File() string { return c.file }

// StorePath is the job store's file.
func (c *Config) StorePath() string { return filepath.Join(c.DataDir, "coordinator.db") }

// SpillPath is the directory of linkage spill files: linkage.spill_dir,
// or data_dir/spill.
func (c *Config) SpillPath() string {
	if c.Linkage.SpillDir != "" {
		return c.Linkage.SpillDir
	}
	return filepath.Join(c.DataDir, "spill")
}

// AuditPath is the audit log's file.
func (c *Config) AuditPath() string { return filepath.Join(c.DataDir, "audit.jsonl") }

var (
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	tokenish  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)
)

// Register is the public transparency register: every run and what it
// released, and the audit log's head, served over HTTPS with the
// coordinator's certificate to anyone, without a client certificate.
type Register struct {
	// Listen is its address, host:port; empty serves no register.
	Listen string `yaml:"listen"`
}

// Metrics is the Prometheus endpoint, /metrics over plain HTTP as
// Prometheus scrapes by default. It shows no patient data and no
// identities, but it is for the operator: bind it to loopback or an
// operations network, not to the internet.
type Metrics struct {
	// Listen is its address, host:port; empty serves no metrics.
	Listen string `yaml:"listen"`
}

// HTTPAPI is the commissioner API over HTTP and JSON (coordinator/httpapi),
// on its own port with the gRPC port's TLS configuration: callers present
// the same user certificates or bearer tokens.
type HTTPAPI struct {
	// Listen is its address, host:port; empty serves no HTTP API.
	Listen string `yaml:"listen"`
}

// Validate reports every problem with c, each naming its field, or nil.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port", c.Listen)
	}
	ports := map[string]string{c.Listen: "listen"}
	for _, p := range []struct{ field, addr string }{{"register.listen", c.Register.Listen}, {"metrics.listen", c.Metrics.Listen},
		{"portal.listen", c.Portal.Listen}, {"http_api.listen", c.HTTPAPI.Listen}} {
		if p.addr == "" {
			continue
		}
		_, port, err := net.SplitHostPort(p.addr)
		switch {
		case err != nil:
			bad(p.field, "%q is not host:port", p.addr)
		case port != "0" && ports[p.addr] != "":
			bad(p.field, "%q is also %s", p.addr, ports[p.addr])
		default:
			ports[p.addr] = p.field
		}
	}
	required := func(field, v string) {
		if v == "" {
			bad(field, "required")
		}
	}
	required("tls.cert", c.TLS.Cert)
	required("tls.key", c.TLS.Key)
	required("tls.ca", c.TLS.CA)
	required("governance.bundle", c.Governance.Bundle)
	required("governance.public_key", c.Governance.PublicKey)
	required("data_dir", c.DataDir)
	if c.Releases.SigningKey != "" {
		// Checked here, not first at the first release, so that a
		// coordinator never starts unable to sign.
		if _, err := release.LoadPrivateKey(c.Releases.SigningKey); err != nil {
			bad("releases.signing_key", "%v", err)
		}
	}
	if c.Governance.ReloadInterval < 0 {
		bad("governance.reload_interval", "%v is negative", c.Governance.ReloadInterval)
	} else if c.Governance.ReloadInterval > 0 && c.Governance.ReloadInterval < time.Second {
		bad("governance.reload_interval", "%v is under a second; use 0 to turn reloading off", c.Governance.ReloadInterval)
	}
	if c.Runs.Deadline < time.Second || c.Runs.Deadline > 7*24*time.Hour {
		bad("runs.deadline", "%v: want from 1s to 168h", c.Runs.Deadline)
	}
	if c.Runs.HeartbeatInterval < 100*time.Millisecond || c.Runs.HeartbeatInterval > 10*time.Minute {
		bad("runs.heartbeat_interval", "%v: want from 100ms to 10m", c.Runs.HeartbeatInterval)
	}
	if c.Runs.OptOutInterval < 10*time.Millisecond || c.Runs.OptOutInterval > 24*time.Hour {
		bad("runs.opt_out_interval", "%v: want from 10ms to 24h", c.Runs.OptOutInterval)
	}
	if c.Runs.MaxRunning < 1 || c.Runs.MaxRunning > 1000 {
		bad("runs.max_running", "%d: want from 1 to 1000", c.Runs.MaxRunning)
	}
	if c.Uploads.MaxRows < 1 {
		bad("uploads.max_rows", "%d: want at least 1", c.Uploads.MaxRows)
	}
	if c.Uploads.MaxBytes < 1 {
		bad("uploads.max_bytes", "%d: want at least 1", c.Uploads.MaxBytes)
	}
	if c.Uploads.MaxBatchBytes < 1 {
		bad("uploads.max_batch_bytes", "%d: want at least 1", c.Uploads.MaxBatchBytes)
	} else if c.Uploads.MaxBatchBytes > 1<<30 {
		bad("uploads.max_batch_bytes", "%s: want at most 1GiB (one gRPC message carries one batch)", c.Uploads.MaxBatchBytes)
	} else if c.Uploads.MaxBatchBytes > c.Uploads.MaxBytes {
		bad("uploads.max_batch_bytes", "%s is more than uploads.max_bytes %s", c.Uploads.MaxBatchBytes, c.Uploads.MaxBytes)
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		bad("memory_limit", "%s: want 0 (none) or at least %s", c.MemoryLimit, ByteSize(MinMemoryLimit))
	}
	if c.Linkage.MemoryBudget != 0 && c.Linkage.MemoryBudget < MinMemoryBudget {
		bad("linkage.memory_budget", "%s: want 0 (no budget) or at least %s", c.Linkage.MemoryBudget, ByteSize(MinMemoryBudget))
	}
	for i, r := range c.OperatorRoles {
		if !tokenish.MatchString(r) {
			bad(fmt.Sprintf("operator_roles[%d]", i), "%q is not a role name", r)
		}
	}
	ids := map[string]bool{}
	hashes := map[string]bool{}
	for i, u := range c.Users {
		f := fmt.Sprintf("users[%d]", i)
		if !tokenish.MatchString(u.ID) {
			bad(f+".id", "%q: want letters, digits and . _ @ -", u.ID)
		} else if ids[u.ID] {
			bad(f+".id", "%q appears twice", u.ID)
		}
		ids[u.ID] = true
		if !tokenish.MatchString(u.Org) {
			bad(f+".org", "%q: want an organisation code", u.Org)
		}
		if len(u.Roles) == 0 {
			bad(f+".roles", "at least one role is required")
		}
		for j, r := range u.Roles {
			if !tokenish.MatchString(r) {
				bad(fmt.Sprintf("%s.roles[%d]", f, j), "%q is not a role name", r)
			}
		}
		switch {
		case !hexSHA256.MatchString(u.TokenSHA256):
			bad(f+".token_sha256", "want 64 lower-case hex digits (the SHA-256 of the token, never the token)")
		case hashes[u.TokenSHA256]:
			bad(f+".token_sha256", "the same token is configured for two users")
		}
		hashes[u.TokenSHA256] = true
	}
	c.Portal.validate(bad)
	if c.Network.LinkageKeyID != "" && !tokenish.MatchString(c.Network.LinkageKeyID) {
		bad("network.linkage_key_id", "%q: want letters, digits and . _ @ -", c.Network.LinkageKeyID)
	}
	sites := map[string]bool{}
	for i, s := range c.Network.Sites {
		f := fmt.Sprintf("network.sites[%d]", i)
		if err := pki.CheckODS(s.ODS); err != nil {
			bad(f+".ods", "%v", err)
		} else if sites[s.ODS] {
			bad(f+".ods", "%s appears twice", s.ODS)
		}
		sites[s.ODS] = true
		if !slices.Contains(cdm.SiteKinds(), s.Kind) {
			bad(f+".kind", "%q: want gp or trust", s.Kind)
		}
		if s.Population < 0 {
			bad(f+".population", "%d is negative", s.Population)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	err := errors.Join(errs...)
	if c.file != "" {
		return fmt.Errorf("config %s:\n%w", c.file, err)
	}
	return fmt.Errorf("config:\n%w", err)
}

// String summarises the configuration for logs. It names users by id and
// never prints token hashes.
func (c *Config) String() string {
	users := make([]string, len(c.Users))
	for i, u := range c.Users {
		users[i] = fmt.Sprintf("%s(%s;%s)", u.ID, u.Org, strings.Join(u.Roles, ","))
	}
	return fmt.Sprintf("listen=%s data_dir=%s bundle=%s deadline=%v uploads=%d rows/%s users=[%s] sites=%d",
		c.Listen, c.DataDir, c.Governance.Bundle, c.Runs.Deadline, c.Uploads.MaxRows, c.Uploads.MaxBytes,
		strings.Join(users, " "), len(c.Network.Sites))
}

// HashToken returns the hex SHA-256 of a bearer token, the form Users hold.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ByteSize is a number of bytes, written in YAML as an integer or with a
// unit: B, KiB, MiB, GiB (powers of 1024) or kB, MB, GB (powers of 1000).
type ByteSize int64

var byteUnits = map[string]int64{
	"": 1, "B": 1,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
	"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9,
}

var byteSizePattern = regexp.MustCompile(`^\s*([0-9]+)\s*([A-Za-z]*)\s*$`)

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a byte size such as 64MiB", n.Line)
	}
	m := byteSizePattern.FindStringSubmatch(n.Value)
	unit, ok := int64(0), false
	if m != nil {
		unit, ok = byteUnits[m[2]]
	}
	if !ok {
		return fmt.Errorf("line %d: %q is not a byte size; write e.g. 1048576, 512MiB or 1GiB", n.Line, n.Value)
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || v > (1<<62)/unit {
		return fmt.Errorf("line %d: %q is too large", n.Line, n.Value)
	}
	*b = ByteSize(v * unit)
	return nil
}

// String writes b with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.n == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.n, u.name)
		}
	}
	return fmt.Sprintf("%dB", int64(b))
}
