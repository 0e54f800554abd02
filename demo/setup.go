package demo

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/internal/oidcdev"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/release"
	"github.com/havenhealth/haven/synth"
)

// modulePath is the module the demo builds its binaries from.
const modulePath = "github.com/havenhealth/haven"

// markerFile marks a directory as the demo's own, so that a later demo
// may clear it; any other non-empty directory is refused.
const markerFile = ".haven-demo"

// Demo identities.
const (
	linkageKeyID   = "demo-linkage-1"
	commissionerID = "demo-commissioner"
	commissionerOU = "QHM" // an ICB's ODS code
	commissionRole = "analyst"
	boardKeyID     = "demo-board"
)

// layout is where everything of one demo lives.
type layout struct {
	dir string
}

func (l layout) path(elem ...string) string {
	return filepath.Join(append([]string{l.dir}, elem...)...)
}
func (l layout) bin(name string) string       { return l.path("bin", name) }
func (l layout) net() string                  { return l.path("net") }
func (l layout) pki() string                  { return l.path("pki") }
func (l layout) bundle() string               { return l.path("bundle") }
func (l layout) coordinatorBundle() string    { return l.path("coordinator", "bundle") }
func (l layout) portalSecret() string         { return l.path("coordinator", "portal-client.secret") }
func (l layout) portalSessionKey() string     { return l.path("coordinator", "portal-session.key") }
func (l layout) oidcConfig() string           { return l.path("oidc", "users.yaml") }
func (l layout) variant(name string) string   { return l.path("bundles", name) }
func (l layout) boardPrivate() string         { return l.path("board", "board.pem") }
func (l layout) boardPublic() string          { return l.path("board", "board.pub.pem") }
func (l layout) secret() string               { return l.path("linkage.key") }
func (l layout) perturbationSecret() string   { return l.path("perturbation.key") }
func (l layout) coordinatorConfig() string    { return l.path("coordinator", "coordinator.yaml") }
func (l layout) coordinatorData() string      { return l.path("coordinator", "data") }
func (l layout) auditLog() string             { return l.path("coordinator", "data", "audit.jsonl") }
func (l layout) nodeDir(ods string) string    { return l.path("nodes", ods) }
func (l layout) nodeConfig(ods string) string { return l.path("nodes", ods, "node.yaml") }
func (l layout) log(name string) string       { return l.path("logs", name+".log") }

// prepareDir makes dir an empty demo directory. A directory left by an
// earlier demo is cleared; any other directory with something in it is
// refused rather than deleted.
func prepareDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("demo directory: %w", err)
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
			return fmt.Errorf("demo directory %s is not empty and was not made by haven demo; choose another --dir or empty it", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("clear the last demo's directory: %w", err)
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, "bin"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("demo directory: %w", err)
		}
	}
	return os.WriteFile(filepath.Join(dir, markerFile), []byte("made by haven demo; removed by the next one\n"), 0o600)
}

// moduleRoot returns the directory of the haven module's go.mod, as the go
// command finds it from the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the haven source: `go env GOMOD`: %w (the demo needs the Go toolchain)", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find the haven source: run the demo from inside the haven repository; it builds the connector plugins from source")
	}
	return filepath.Dir(gomod), nil
}

// checkModule checks that root holds the haven module.
func checkModule(root string) error {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return fmt.Errorf("haven source %s: %w", root, err)
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	if strings.TrimSpace(string(first)) != "module "+modulePath {
		return fmt.Errorf("haven source %s: go.mod is not module %s", root, modulePath)
	}
	return nil
}

// goBuild builds the main packages pkgs (import paths) into dir with the
// given tags.
func goBuild(ctx context.Context, root, dir string, tags []string, pkgs ...string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	cmd.Dir = root
	// The DuckDB plugin is cgo; say so rather than fail obscurely where
	// someone turned it off.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// On cancellation stop the compilers go build started too, not only
	// go build itself.
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// plugin is a built connector plugin.
type plugin struct {
	path, sha256 string
}

func builtPlugin(path string) (plugin, error) {
	sum, err := connector.FileSHA256(path)
	if err != nil {
		return plugin{}, err
	}
	return plugin{path: path, sha256: sum}, nil
}

// pkiFiles are the certificates the demo issued.
type pkiFiles struct {
	ca                   string
	serverCert, serverKy string
	nodes                map[string][2]string // ODS → cert, key
	userCert, userKey    string
	// releaseKey is the coordinator's release signing key; its public
	// half, release-signing.pub beside it, is for haven query verify.
	releaseKey string
}

// makePKI creates the network CA and issues the coordinator's certificate
// for 127.0.0.1, one node certificate per site and the commissioner's.
func makePKI(dir string, sites []synth.Site, now time.Time) (*pkiFiles, error) {
	ca, caPEM, caKey, err := pki.NewCA("Haven demo network CA", now)
	if err != nil {
		return nil, err
	}
	p := &pkiFiles{nodes: map[string][2]string{}}
	if p.ca, _, err = pki.WriteFiles(dir, "ca", caPEM, caKey); err != nil {
		return nil, err
	}
	issue := func(name string, req pki.Request) (string, string, error) {
		_, c, k, err := ca.Issue(req)
		if err != nil {
			return "", "", fmt.Errorf("issue %s certificate: %w", name, err)
		}
		return pki.WriteFiles(dir, name, c, k)
	}
	if p.serverCert, p.serverKy, err = issue("coordinator", pki.Request{Kind: pki.KindServer, Hosts: []string{"127.0.0.1", "localhost"}}); err != nil {
		return nil, err
	}
	for _, s := range sites {
		c, k, err := issue("node-"+s.ODS, pki.Request{Kind: pki.KindNode, ODS: s.ODS})
		if err != nil {
			return nil, err
		}
		p.nodes[s.ODS] = [2]string{c, k}
	}
	p.userCert, p.userKey, err = issue(commissionerID, pki.Request{Kind: pki.KindUser, ID: commissionerID,
		Org: commissionerOU, Roles: []string{commissionRole}})
	if err != nil {
		return nil, err
	}
	_, sk, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	priv, pub, err := release.MarshalKeys(sk)
	if err != nil {
		return nil, err
	}
	p.releaseKey = filepath.Join(dir, "release-signing.key")
	if err := os.WriteFile(p.releaseKey, priv, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "release-signing.pub"), pub, 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// signBundle copies the reference governance bundle to dst, as the board
// publishes it, makes a board key pair and signs the copy with it.
func signBundle(src, dst, privPath, pubPath string, edit func(dir string) error) error {
	// The demo board signs its own copy.
	if err := policy.CopyUnsigned(src, dst); err != nil {
		return fmt.Errorf("copy the governance bundle: %w", err)
	}
	if edit != nil {
		if err := edit(dst); err != nil {
			return fmt.Errorf("edit the governance bundle: %w", err)
		}
	}
	priv, pub, err := policy.GenerateKey()
	if err != nil {
		return fmt.Errorf("board key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(privPath), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(privPath, priv, 0o600); err != nil {
		return fmt.Errorf("board key: %w", err)
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		return fmt.Errorf("board key: %w", err)
	}
	return policy.Sign(dst, priv, "", boardKeyID)
}

// writeSecret writes a random network secret (the linkage secret or the
// perturbation secret), readable only by its owner as nodes require.
func writeSecret(path string) error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600)
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for the coordinator: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// population is a site's registered list (practice) or catchment (trust).
func population(s synth.Site) int64 {
	if s.Kind == cdm.KindGP {
		return int64(s.RegisteredPopulation)
	}
	return int64(s.CatchmentPopulation)
}

// Configuration files are written from these structs rather than
// templates, so every value is quoted as YAML needs. Their fields follow
// deploy/examples; the loaders reject anything they do not know.

type coordinatorFile struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
		CA   string `yaml:"ca"`
	} `yaml:"tls"`
	Governance struct {
		Bundle         string `yaml:"bundle"`
		PublicKey      string `yaml:"public_key"`
		ReloadInterval string `yaml:"reload_interval"`
	} `yaml:"governance"`
	Releases struct {
		SigningKey string `yaml:"signing_key"`
	} `yaml:"releases"`
	DataDir string `yaml:"data_dir"`
	Runs    struct {
		Deadline          string `yaml:"deadline"`
		HeartbeatInterval string `yaml:"heartbeat_interval"`
	} `yaml:"runs"`
	OperatorRoles []string `yaml:"operator_roles"`
	Network       struct {
		LinkageKeyID string            `yaml:"linkage_key_id"`
		Sites        []coordinatorSite `yaml:"sites"`
	} `yaml:"network"`
	Register struct {
		Listen string `yaml:"listen"`
	} `yaml:"register"`
	HTTPAPI struct {
		Listen string `yaml:"listen"`
	} `yaml:"http_api"`
	Portal struct {
		Listen string `yaml:"listen"`
		URL    string `yaml:"url"`
		OIDC   struct {
			Issuer           string `yaml:"issuer"`
			ClientID         string `yaml:"client_id"`
			ClientSecretFile string `yaml:"client_secret_file"`
		} `yaml:"oidc"`
		Session struct {
			KeyFile string `yaml:"key_file"`
		} `yaml:"session"`
	} `yaml:"portal"`
}

// faces are the addresses of the coordinator's web faces and of the
// development OpenID provider that signs people in to the portal.
type faces struct {
	register, portal, oidc, httpAPI string // host:port each
}

func (f faces) portalURL() string   { return "https://" + f.portal }
func (f faces) registerURL() string { return "https://" + f.register + "/register/" }
func (f faces) issuer() string      { return "http://" + f.oidc }
func (f faces) httpAPIURL() string  { return "https://" + f.httpAPI }

// portalClientID is the portal's client id at the development provider.
const portalClientID = "haven-portal"

// PortalUsers are the people who can sign in to the demo's portal, through
// its development OpenID provider: ana, an analyst of the demo
// commissioner's organisation (QHM), who sees its runs; olu, an analyst of
// another organisation (15N), who does not. Synthetic people with fixed
// passwords, on loopback only.
func PortalUsers() []oidcdev.User {
	return []oidcdev.User{
		{ID: "ana", Username: "ana", Password: "ana-demo-password", Name: "Ana Analyst", Org: commissionerOU, Roles: []string{commissionRole}},
		{ID: "olu", Username: "olu", Password: "olu-demo-password", Name: "Olu Analyst", Org: "15N", Roles: []string{commissionRole}},
	}
}

// writeFaces picks the faces' addresses and writes the development
// provider's file, the portal's client secret and its session key.
func writeFaces(l layout) (faces, error) {
	var f faces
	for _, a := range []*string{&f.register, &f.portal, &f.oidc, &f.httpAPI} {
		var err error
		if *a, err = freeAddr(); err != nil {
			return f, err
		}
	}
	for _, path := range []string{l.portalSecret(), l.portalSessionKey()} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return f, err
		}
		if err := writeSecret(path); err != nil {
			return f, fmt.Errorf("portal: %w", err)
		}
	}
	cfg := oidcdev.Config{
		Clients: []oidcdev.Client{{ID: portalClientID, SecretFile: l.portalSecret(),
			RedirectURIs: []string{f.portalURL() + "/auth/callback"}, PostLogoutRedirectURIs: []string{f.portalURL() + "/"}}},
		Users: PortalUsers(),
	}
	return f, writeYAML(l.oidcConfig(), "# Written by haven demo: the development OpenID provider's clients and synthetic users.\n", cfg)
}

type coordinatorSite struct {
	ODS        string       `yaml:"ods"`
	Kind       cdm.SiteKind `yaml:"kind"`
	Population int64        `yaml:"population"`
}

type nodeFile struct {
	Site struct {
		ODS                  string       `yaml:"ods"`
		Kind                 cdm.SiteKind `yaml:"kind"`
		RegisteredPopulation int64        `yaml:"registered_population"`
	} `yaml:"site"`
	Coordinator struct {
		Address      string `yaml:"address"`
		ReconnectMax string `yaml:"reconnect_max,omitempty"`
	} `yaml:"coordinator"`
	TLS struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
		CA   string `yaml:"ca"`
	} `yaml:"tls"`
	Connector struct {
		Path   string            `yaml:"path"`
		SHA256 string            `yaml:"sha256"`
		Args   []string          `yaml:"args"`
		Env    map[string]string `yaml:"env,omitempty"`
		// StartTimeout is longer than a node's default (30s): the demo
		// starts every site's plugin at once on one machine, 154 of them
		// at ICB scale, where a start takes minutes on a busy host.
		StartTimeout string `yaml:"start_timeout"`
	} `yaml:"connector"`
	Governance struct {
		Bundle    string `yaml:"bundle"`
		PublicKey string `yaml:"public_key"`
	} `yaml:"governance"`
	Linkage struct {
		SecretFile             string `yaml:"secret_file"`
		KeyID                  string `yaml:"key_id"`
		PerturbationSecretFile string `yaml:"perturbation_secret_file"`
	} `yaml:"linkage"`
	OptOut struct {
		NDOPFile string `yaml:"ndop_file"`
	} `yaml:"opt_out"`
	StateDir string `yaml:"state_dir"`
	AuditDir string `yaml:"audit_dir"`
}

// writeYAML writes v to path with a comment header.
func writeYAML(path, header string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(header)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// writeCoordinatorConfig writes the coordinator's configuration: the demo
// network's sites as its closed membership, so coverage counts every one.
func writeCoordinatorConfig(l layout, p *pkiFiles, addr string, f faces, sites []synth.Site, deadline, reload time.Duration) error {
	var c coordinatorFile
	c.Listen = addr
	c.Register.Listen, c.HTTPAPI.Listen = f.register, f.httpAPI
	c.Portal.Listen, c.Portal.URL = f.portal, f.portalURL()
	c.Portal.OIDC.Issuer, c.Portal.OIDC.ClientID, c.Portal.OIDC.ClientSecretFile = f.issuer(), portalClientID, l.portalSecret()
	c.Portal.Session.KeyFile = l.portalSessionKey()
	c.TLS.Cert, c.TLS.Key, c.TLS.CA = p.serverCert, p.serverKy, p.ca
	c.Governance.Bundle, c.Governance.PublicKey, c.Governance.ReloadInterval = l.bundle(), l.boardPublic(), "0s"
	if reload > 0 {
		// The coordinator's own link, which UseCoordinatorBundle re-points.
		if err := os.MkdirAll(filepath.Dir(l.coordinatorBundle()), 0o700); err != nil {
			return err
		}
		if err := os.Symlink(l.bundle(), l.coordinatorBundle()); err != nil {
			return fmt.Errorf("coordinator's bundle link: %w", err)
		}
		c.Governance.Bundle, c.Governance.ReloadInterval = l.coordinatorBundle(), reload.String()
	}
	c.Releases.SigningKey = p.releaseKey
	c.DataDir = l.coordinatorData()
	c.Runs.Deadline = deadline.String()
	c.Runs.HeartbeatInterval = "5s"
	c.OperatorRoles = []string{"operator"}
	c.Network.LinkageKeyID = linkageKeyID
	for _, s := range sites {
		c.Network.Sites = append(c.Network.Sites, coordinatorSite{ODS: s.ODS, Kind: s.Kind, Population: population(s)})
	}
	return writeYAML(l.coordinatorConfig(), "# Written by haven demo. See deploy/examples/coordinator.yaml for every setting.\n", c)
}

// siteSource is how a node reads its site's data.
type siteSource struct {
	plugin plugin
	args   []string
	env    map[string]string
}

// duckdbSource reads the site's Parquet files with DuckDB, one thread each
// since ten of them share the machine.
func duckdbSource(p plugin, siteDir string) siteSource {
	return siteSource{plugin: p, args: []string{"--dir", siteDir, "--threads", "1", "--memory-limit", "512MB"}}
}

// writeNodeConfig writes one site's node configuration.
func writeNodeConfig(l layout, p *pkiFiles, addr string, s synth.Site, src siteSource, ndop string, reconnectMax time.Duration) error {
	var c nodeFile
	c.Site.ODS, c.Site.Kind, c.Site.RegisteredPopulation = s.ODS, s.Kind, population(s)
	c.Coordinator.Address = addr
	if reconnectMax > 0 {
		c.Coordinator.ReconnectMax = reconnectMax.String()
	}
	cert := p.nodes[s.ODS]
	c.TLS.Cert, c.TLS.Key, c.TLS.CA = cert[0], cert[1], p.ca
	c.Connector.Path, c.Connector.SHA256 = src.plugin.path, src.plugin.sha256
	c.Connector.Args, c.Connector.Env = src.args, src.env
	c.Connector.StartTimeout = "5m"
	c.Governance.Bundle, c.Governance.PublicKey = l.bundle(), l.boardPublic()
	c.Linkage.SecretFile, c.Linkage.KeyID = l.secret(), linkageKeyID
	c.Linkage.PerturbationSecretFile = l.perturbationSecret()
	c.OptOut.NDOPFile = ndop
	c.StateDir = filepath.Join(l.nodeDir(s.ODS), "state")
	c.AuditDir = filepath.Join(l.nodeDir(s.ODS), "audit")
	header := "# Written by haven demo for " + s.Name + " (" + string(s.Kind) + ", population " +
		strconv.FormatInt(population(s), 10) + ").\n# See deploy/examples/node.yaml for every setting.\n"
	return writeYAML(l.nodeConfig(s.ODS), header, c)
}

// ModuleRoot returns the root of the haven source the command runs in,
// checked to hold the haven module: the national simulation signs its
// copy of the reference bundle from there, as the demo does.
func ModuleRoot(ctx context.Context) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	return root, checkModule(root)
}

// SignBundle copies the bundle at src to dst, passes the copy through
// edit (if set), and signs it with a new board key whose halves go to
// privPath and pubPath.
func SignBundle(src, dst, privPath, pubPath string, edit func(dir string) error) error {
	return signBundle(src, dst, privPath, pubPath, edit)
}
