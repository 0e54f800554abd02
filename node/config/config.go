// Package config reads a Haven node's configuration file (node.yaml).
//
// The file is read strictly: an unknown key, a value of the wrong type or a
// second document is an error naming the file and line, and Validate then
// names every missing or inconsistent field at once, so provider IT fixes a
// file in one pass rather than one restart per mistake. Relative paths are
// resolved against the directory of the file, not the working directory, so
// a node started by systemd reads the same files as one started by hand.
//
// Load checks only the file itself. CheckFiles checks what the file points
// at: the certificate names this site, the linkage secret is private and
// long enough, the board's key parses. The daemon runs both before it
// starts; `haven node check` reports each.
//
// The linkage secret itself is never held in a Config: only the path of its
// file. ReadSecret reads it into a pseudonym.Secret, whose String never
// prints it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/node/pseudonym"
)

// Defaults for fields a file may leave out.
const (
	DefaultReloadInterval = time.Minute
	DefaultMaxRows        = 5_000_000
	DefaultMaxBytes       = 1 << 30
	DefaultConcurrency    = 2
	DefaultQueryTimeout   = 30 * time.Minute
	DefaultStartTimeout   = 30 * time.Second
	DefaultReconnectMax   = 5 * time.Minute
)

// maxConfigBytes bounds the file: a real one is a few kilobytes.
const maxConfigBytes = 1 << 20

// Config is a node's configuration, as read from node.yaml. Paths in it are
// absolute once Load returns.
type Config struct {
	// Site is who this node speaks for.
	Site Site `yaml:"site"`
	// Coordinator is where the node dials out to.
	Coordinator Coordinator `yaml:"coordinator"`
	// TLS is the node's identity on the network.
	TLS TLS `yaml:"tls"`
	// Connector is the plugin that reads the site's data.
	Connector Connector `yaml:"connector"`
	// Governance is the board's signed bundle and the site's own policy.
	Governance Governance `yaml:"governance"`
	// Linkage is the network linkage secret for run pseudonyms.
	Linkage Linkage `yaml:"linkage"`
	// OptOut is where the national data opt-out list is.
	OptOut OptOut `yaml:"opt_out"`
	// StateDir holds the run ledger, the pause switch, the task journal
	// and the status file. Created with mode 0700 if absent.
	StateDir string `yaml:"state_dir"`
	// AuditDir holds the node's audit log. Created with mode 0700 if
	// absent.
	AuditDir string `yaml:"audit_dir"`
	// Limits bound what a task may cost and send.
	Limits Limits `yaml:"limits"`
	// Metrics is where the node writes its metrics for node_exporter.
	Metrics Metrics `yaml:"metrics"`

	file string
}

// Site is the provider the node serves.
type Site struct {
	// ODS is the site's ODS code; it must be the one the node certificate
	// names.
	ODS string `yaml:"ods"`
	// Kind is gp or trust.
	Kind cdm.SiteKind `yaml:"kind"`
	// RegisteredPopulation is the registered list size (GP) or catchment
	// population (trust) the site answers for. Zero means the row count of
	// the patient table, as the connector reports it.
	RegisteredPopulation int64 `yaml:"registered_population"`
}

// Coordinator is where the node connects.
type Coordinator struct {
	// Address is host:port of the coordinator's one port.
	Address string `yaml:"address"`
	// ServerName overrides the host name checked against the coordinator's
	// certificate; empty means the host of Address.
	ServerName string `yaml:"server_name"`
	// ReconnectMax caps the wait between attempts to reconnect, which
	// doubles from 1s after each failure (with jitter) and starts again
	// once a link has stayed up for a minute; zero means
	// DefaultReconnectMax.
	ReconnectMax Duration `yaml:"reconnect_max"`
}

// TLS names the node's certificate, key and the network CA, all PEM.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// Connector is the connector plugin and its settings.
type Connector struct {
	// Path is the plugin binary.
	Path string `yaml:"path"`
	// SHA256 is the binary's hex SHA-256; a binary that differs is not
	// started.
	SHA256 string `yaml:"sha256"`
	// Args are the plugin's command-line settings, e.g. where its data is.
	Args []string `yaml:"args"`
	// Env is the plugin's whole environment. Put credentials here rather
	// than in Args: values of Env are never printed.
	Env map[string]string `yaml:"env"`
	// StartTimeout bounds starting the plugin; zero means 30s.
	StartTimeout Duration `yaml:"start_timeout"`
}

// Governance is the board's bundle and the site's narrowing of it.
type Governance struct {
	// Bundle is the signed governance bundle, a directory or .tar.gz.
	Bundle string `yaml:"bundle"`
	// PublicKey is the board's PEM public key file.
	PublicKey string `yaml:"public_key"`
	// ReloadInterval is how often the bundle is checked for a new version;
	// zero means one minute.
	ReloadInterval Duration `yaml:"reload_interval"`
	// SiteModules are the site's own Rego files or directories (package
	// haven.site), which can only narrow what the bundle allows.
	SiteModules []string `yaml:"site_modules"`
}

// Linkage is the network linkage secret.
type Linkage struct {
	// SecretFile holds the secret, at least 32 bytes, mode 0600.
	SecretFile string `yaml:"secret_file"`
	// KeyID is the key custodian's name for the secret, sent to the
	// coordinator so that linkage runs use matching nodes. Never the
	// secret or a hash of it.
	KeyID string `yaml:"key_id"`
	// PerturbationSecretFile holds the network perturbation secret, from
	// which the node derives each patient's record key for cell-key
	// perturbation (node/pseudonym): at least 32 bytes, mode 0600, issued
	// by the key custodian beside the linkage secret and never held by the
	// coordinator. Optional: a node without it refuses tasks that need
	// record keys.
	PerturbationSecretFile string `yaml:"perturbation_secret_file"`
}

// OptOut is the national data opt-out list.
type OptOut struct {
	// NDOPFile is a CSV file with a header nhs_number and one NHS number
	// a line.
	NDOPFile string `yaml:"ndop_file"`
}

// Metrics is what the node tells Prometheus. A node listens on no port, so
// it writes a file that node_exporter's textfile collector reads.
type Metrics struct {
	// Textfile is the file the node writes its metrics to, in the text
	// exposition format, after every task and every few seconds; it must
	// end in .prom (node_exporter reads no other) and sit in the directory
	// node_exporter's --collector.textfile.directory names. Empty: no
	// metrics are written.
	Textfile string `yaml:"textfile"`
}

// Limits bound a task.
type Limits struct {
	// MaxRows is the most rows one task may read or send; the task's own
	// UploadLimits may lower it. Zero means 5,000,000.
	MaxRows int64 `yaml:"max_rows"`
	// MaxBytes is the most Arrow bytes one task may read or send. Zero
	// means 1 GiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// Concurrency is how many tasks run at once. Zero means 2.
	Concurrency int `yaml:"concurrency"`
	// QueryTimeout bounds each query. Zero means 30 minutes.
	QueryTimeout Duration `yaml:"query_timeout"`
}

// Duration is a time.Duration written as in Go ("90s", "10m").
type Duration time.Duration

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as 30s or 10m", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 30s or 10m", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Load reads, resolves, defaults and validates the file at path. Every
// problem Validate finds is reported in one error.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("node config %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("node config %s: %w", path, err)
	}
	if len(src) > maxConfigBytes {
		return nil, fmt.Errorf("node config %s: larger than %d bytes", path, maxConfigBytes)
	}
	c, err := Parse(abs, src)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse reads a configuration from src as if from the file at path, which
// relative paths are resolved against.
func Parse(path string, src []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("node config %s: the file is empty", path)
		}
		return nil, fmt.Errorf("node config %s: %w", path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("node config %s: more than one YAML document; want one", path)
	}
	c.file = path
	c.resolve(filepath.Dir(path))
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("node config %s: %w", path, err)
	}
	return &c, nil
}

// File is the path the configuration was read from.
func (c *Config) File() string { return c.file }

func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, p := range []*string{
		&c.TLS.Cert, &c.TLS.Key, &c.TLS.CA,
		&c.Connector.Path,
		&c.Governance.Bundle, &c.Governance.PublicKey,
		&c.Linkage.SecretFile, &c.Linkage.PerturbationSecretFile,
		&c.OptOut.NDOPFile,
		&c.StateDir, &c.AuditDir,
		&c.Metrics.Textfile,
	} {
		abs(p)
	}
	for i := range c.Governance.SiteModules {
		abs(&c.Governance.SiteModules[i])
	}
}

func (c *Config) setDefaults() {
	if c.Governance.ReloadInterval == 0 {
		c.Governance.ReloadInterval = Duration(DefaultReloadInterval)
	}
	if c.Coordinator.ReconnectMax == 0 {
		c.Coordinator.ReconnectMax = Duration(DefaultReconnectMax)
	}
	if c.Limits.MaxRows == 0 {
		c.Limits.MaxRows = DefaultMaxRows
	}
	if c.Limits.MaxBytes == 0 {
		c.Limits.MaxBytes = DefaultMaxBytes
	}
	if c.Limits.Concurrency == 0 {
		c.Limits.Concurrency = DefaultConcurrency
	}
	if c.Limits.QueryTimeout == 0 {
		c.Limits.QueryTimeout = Duration(DefaultQueryTimeout)
	}
	if c.Connector.StartTimeout == 0 {
		c.Connector.StartTimeout = Duration(DefaultStartTimeout)
	}
}

// Validate checks the configuration without reading any file it names and
// returns every problem, one per line, each naming its field.
func (c *Config) Validate() error {
	var errs []string
	bad := func(field, format string, args ...any) {
		errs = append(errs, field+": "+fmt.Sprintf(format, args...))
	}
	required := func(field, v string) bool {
		if strings.TrimSpace(v) == "" {
			bad(field, "missing")
			return false
		}
		return true
	}

	if required("site.ods", c.Site.ODS) {
		if err := pki.CheckODS(c.Site.ODS); err != nil {
			bad("site.ods", "%v", err)
		}
	}
	if required("site.kind", string(c.Site.Kind)) {
		if _, err := cdm.ParseSiteKind(string(c.Site.Kind)); err != nil {
			bad("site.kind", "%q is not a site kind: want gp or trust", c.Site.Kind)
		}
	}
	if c.Site.RegisteredPopulation < 0 {
		bad("site.registered_population", "%d is negative", c.Site.RegisteredPopulation)
	}

	if required("coordinator.address", c.Coordinator.Address) {
		if host, port, ok := strings.Cut(c.Coordinator.Address, ":"); !ok || host == "" || port == "" || strings.Contains(port, ":") {
			bad("coordinator.address", "%q: want host:port", c.Coordinator.Address)
		}
	}
	if c.Coordinator.ReconnectMax.Std() < time.Second {
		bad("coordinator.reconnect_max", "%v is below the minimum of 1s", c.Coordinator.ReconnectMax.Std())
	}

	required("tls.cert", c.TLS.Cert)
	required("tls.key", c.TLS.Key)
	required("tls.ca", c.TLS.CA)

	required("connector.path", c.Connector.Path)
	if required("connector.sha256", c.Connector.SHA256) && !isHexSHA256(c.Connector.SHA256) {
		bad("connector.sha256", "want 64 lowercase hex digits (sha256sum of the plugin binary)")
	}
	for k := range c.Connector.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			bad("connector.env", "%q is not an environment variable name", k)
		}
	}
	if c.Connector.StartTimeout < 0 {
		bad("connector.start_timeout", "negative")
	}

	required("governance.bundle", c.Governance.Bundle)
	required("governance.public_key", c.Governance.PublicKey)
	if c.Governance.ReloadInterval.Std() < time.Second {
		bad("governance.reload_interval", "%v is below the minimum of 1s", c.Governance.ReloadInterval.Std())
	}
	for i, m := range c.Governance.SiteModules {
		if strings.TrimSpace(m) == "" {
			bad(fmt.Sprintf("governance.site_modules[%d]", i), "empty path")
		}
	}

	required("linkage.secret_file", c.Linkage.SecretFile)
	if required("linkage.key_id", c.Linkage.KeyID) && !validToken(c.Linkage.KeyID) {
		bad("linkage.key_id", "%q: want letters, digits and . _ - (at most 64)", c.Linkage.KeyID)
	}
	required("opt_out.ndop_file", c.OptOut.NDOPFile)
	required("state_dir", c.StateDir)
	required("audit_dir", c.AuditDir)
	if c.StateDir != "" && c.StateDir == c.AuditDir {
		bad("audit_dir", "must differ from state_dir, so the audit log can be kept and shipped on its own")
	}

	if c.Metrics.Textfile != "" && (filepath.Ext(c.Metrics.Textfile) != ".prom" || filepath.Base(c.Metrics.Textfile) == ".prom") {
		bad("metrics.textfile", "%q: want a file name ending in .prom, which node_exporter's textfile collector reads", c.Metrics.Textfile)
	}
	if c.Limits.MaxRows < 0 {
		bad("limits.max_rows", "%d is negative", c.Limits.MaxRows)
	}
	if c.Limits.MaxBytes < 0 {
		bad("limits.max_bytes", "%d is negative", c.Limits.MaxBytes)
	}
	if c.Limits.Concurrency < 0 || c.Limits.Concurrency > 64 {
		bad("limits.concurrency", "%d: want 1 to 64", c.Limits.Concurrency)
	}
	if c.Limits.QueryTimeout < 0 {
		bad("limits.query_timeout", "negative")
	}
	return problems(errs)
}

// problems joins a list of problems into one error: the problem itself if
// there is one, else a count and one problem a line.
func problems(errs []string) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errors.New(errs[0])
	}
	return fmt.Errorf("%d problems:\n  %s", len(errs), strings.Join(errs, "\n  "))
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

func validToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// CheckFiles checks what the configuration points at, and returns every
// problem: the certificate and key load and the certificate names this
// site, the CA loads, the plugin binary exists, the bundle and the board's
// key exist, the linkage secret is private and long enough, the opt-out
// list exists. It does not verify the bundle's signature or the plugin's
// checksum; the daemon does that as it loads them.
func (c *Config) CheckFiles() error {
	var errs []string
	bad := func(field string, err error) { errs = append(errs, field+": "+err.Error()) }
	if err := c.CheckCertificate(); err != nil {
		bad("tls.cert", err)
	}
	if _, err := pki.CertPool(c.TLS.CA); err != nil {
		bad("tls.ca", err)
	}
	exists := func(field, p string, dir bool) {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			bad(field, err)
		case !dir && fi.IsDir():
			bad(field, fmt.Errorf("%s is a directory", p))
		}
	}
	exists("connector.path", c.Connector.Path, false)
	exists("governance.bundle", c.Governance.Bundle, true)
	exists("governance.public_key", c.Governance.PublicKey, false)
	for i, m := range c.Governance.SiteModules {
		exists(fmt.Sprintf("governance.site_modules[%d]", i), m, true)
	}
	exists("opt_out.ndop_file", c.OptOut.NDOPFile, false)
	if c.Metrics.Textfile != "" {
		exists("metrics.textfile (its directory)", filepath.Dir(c.Metrics.Textfile), true)
	}
	if _, err := c.ReadSecret(); err != nil {
		bad("linkage.secret_file", err)
	}
	if _, err := c.ReadPerturbationSecret(); err != nil {
		bad("linkage.perturbation_secret_file", err)
	}
	slices.Sort(errs)
	return problems(errs)
}

// CheckCertificate loads the node's certificate and key and checks that
// the certificate is a node certificate naming site.ods and is currently
// valid.
func (c *Config) CheckCertificate() error {
	cert, err := pki.ReadCert(c.TLS.Cert)
	if err != nil {
		return err
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		return fmt.Errorf("%s: %w", c.TLS.Cert, err)
	}
	if id.Kind != pki.KindNode {
		return fmt.Errorf("%s is a %s certificate, not a node certificate", c.TLS.Cert, id.Kind)
	}
	if id.ODS != c.Site.ODS {
		return fmt.Errorf("%s names site %s, but site.ods is %s", c.TLS.Cert, id.ODS, c.Site.ODS)
	}
	now := time.Now()
	if now.After(cert.NotAfter) {
		return fmt.Errorf("%s expired on %s", c.TLS.Cert, cert.NotAfter.Format(time.DateOnly))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("%s is not valid until %s", c.TLS.Cert, cert.NotBefore.Format(time.RFC3339))
	}
	if _, err := pki.ClientTLS(c.TLS.Cert, c.TLS.Key, c.TLS.CA, ""); err != nil {
		return err
	}
	return nil
}

// ReadSecret reads the linkage secret. The file must be a regular file
// that only its owner can read or write (mode 0600 or 0400) and hold at
// least pseudonym.MinSecretSize bytes; one trailing newline is dropped, so
// a secret written with echo works. Errors never quote the file's content.
func (c *Config) ReadSecret() (pseudonym.Secret, error) {
	var s pseudonym.Secret
	err := readSecretFile("linkage secret", c.Linkage.SecretFile, func(b []byte) (err error) {
		s, err = pseudonym.NewSecret(b)
		return err
	})
	return s, err
}

// ReadPerturbationSecret reads the perturbation secret under the same
// rules as ReadSecret. A node with no perturbation_secret_file gets an
// unset secret and no error.
func (c *Config) ReadPerturbationSecret() (pseudonym.PerturbationSecret, error) {
	var s pseudonym.PerturbationSecret
	if c.Linkage.PerturbationSecretFile == "" {
		return s, nil
	}
	err := readSecretFile("perturbation secret", c.Linkage.PerturbationSecretFile, func(b []byte) (err error) {
		s, err = pseudonym.NewPerturbationSecret(b)
		return err
	})
	return s, err
}

// readSecretFile reads the secret file p, which must be a regular file
// only its owner can read or write, and hands its bytes, less one trailing
// newline, to use; they are cleared afterwards. Errors name what but
// never quote the content.
func readSecretFile(what, p string, use func([]byte) error) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s: not a regular file", what, p)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s %s: mode %04o lets others read it; run chmod 600 %s", what, p, perm, p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer clear(b)
	if err := use(bytes.TrimSuffix(b, []byte("\n"))); err != nil {
		return fmt.Errorf("%s %s: %w", what, p, err)
	}
	return nil
}

// String renders the configuration as YAML for logs and `haven node
// check`. Connector environment values are replaced by "[redacted]": they
// are where credentials go. The linkage secret is not in a Config at all.
func (c *Config) String() string {
	cp := *c
	if len(c.Connector.Env) > 0 {
		cp.Connector.Env = make(map[string]string, len(c.Connector.Env))
		for k := range c.Connector.Env {
			cp.Connector.Env[k] = "[redacted]"
		}
	}
	b, err := yaml.Marshal(&cp)
	if err != nil {
		return fmt.Sprintf("node config %s (unprintable: %v)", c.file, err)
	}
	return string(b)
}

// Summary is the few facts a log line about the configuration needs.
func (c *Config) Summary() []any {
	return []any{
		"config", c.file,
		"site", c.Site.ODS,
		"kind", string(c.Site.Kind),
		"coordinator", c.Coordinator.Address,
		"connector", filepath.Base(c.Connector.Path),
		"bundle", c.Governance.Bundle,
	}
}
