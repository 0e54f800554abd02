// Package coordinatortest runs a real coordinator for tests, the way
// net/http/httptest runs a server: a network CA and certificates issued by
// it, a copy of the reference governance bundle signed with a key made for
// the test, a configuration file, and the service on a loopback port with
// mutual TLS. NodeDouble is a test double of a node that speaks NodeLink
// and uploads with Flight DoPut; synth.go makes the patients its answers
// are computed from.
//
// It is for tests only and imports nothing from node/ but the shared data
// model.
package coordinatortest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator"
	"github.com/havenhealth/haven/coordinator/config"
	"github.com/havenhealth/haven/internal/oidcdev"
	"github.com/havenhealth/haven/internal/oidcdev/oidcdevtest"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/release"
)

// Options shape a test network.
type Options struct {
	// Deadline of runs; default 20s.
	Deadline time.Duration
	// MaxRunning is runs.max_running; default the coordinator's.
	MaxRunning int
	// Heartbeat interval of node links; default 1s.
	Heartbeat time.Duration
	// MaxRows, MaxBytes and MaxBatchBytes cap uploads; zero means the
	// configuration's defaults.
	MaxRows       int64
	MaxBytes      int64
	MaxBatchBytes int64
	// Users are bearer-token users: id → token. Each gets org "QHM" and
	// role "analyst".
	Users map[string]string
	// Sites, if set, are the network's configured members.
	Sites []config.Site
	// EditData, if set, edits the bundle's data.json before it is signed
	// (a board's settings: thresholds, ledger rules).
	//
	// The network's bundle switches cell-key perturbation off before
	// EditData runs, although the reference bundle has it on: node
	// doubles answer with exact tables computed here, and a test that
	// wants perturbed releases says so by switching it back on.
	EditData func(data map[string]any)
	// OptOutInterval is runs.opt_out_interval; default the coordinator's.
	OptOutInterval time.Duration
	// External leaves the coordinator to the test, to run as its own
	// process (haven coordinator --config ConfigPath): New writes the
	// files and starts nothing.
	External bool
	// LinkageBudget, if set, is linkage.memory_budget (e.g. "64MiB"):
	// past it a linkage run spills to the data directory.
	LinkageBudget string
	// Register serves the transparency register on a free loopback port
	// (RegisterURL).
	Register bool
	// Metrics serves the Prometheus endpoint on a free loopback port
	// (MetricsURL).
	Metrics bool
	// HTTPAPI serves the commissioner API over HTTP on a free loopback
	// port (HTTPAPIURL).
	HTTPAPI bool
	// Clock, if set, is the dispatcher's clock (coordinator.WithClock),
	// kept across restarts: a test with a fake clock moves runs past
	// their deadline by advancing it.
	Clock clockwork.Clock
	// Portal serves the commissioners' portal on a free loopback port
	// (PortalURL). People sign in through a development OpenID provider
	// (internal/oidcdev) started for the test (OIDCIssuer), whose users
	// are PortalUsers, or DefaultPortalUsers if that is empty.
	Portal      bool
	PortalUsers []oidcdev.User
}

// DefaultPortalUsers are the portal's users when Options.PortalUsers is
// empty: two analysts of QHM and one of another organisation, 15N. Each
// one's password is PortalPassword(id).
func DefaultPortalUsers() []oidcdev.User {
	var out []oidcdev.User
	for _, u := range []struct{ id, name, org string }{{"ana", "Ana Analyst", "QHM"}, {"bob", "Bob Analyst", "QHM"}, {"olu", "Olu Analyst", "15N"}} {
		out = append(out, oidcdev.User{ID: u.id, Username: u.id, Password: PortalPassword(u.id), Name: u.name, Org: u.org,
			Roles: []string{"analyst"}})
	}
	return out
}

// PortalPassword is the development provider's password of a default
// portal user.
func PortalPassword(id string) string { return id + "-password" }

// Network is a running test coordinator and the files it runs from.
type Network struct {
	tb         testing.TB
	Dir        string // everything lives under it
	ConfigPath string
	Config     *config.Config
	CA         *pki.CA
	CAFile     string
	BundleDir  string
	// Catalog is the signed bundle's catalogue, as nodes would load it.
	Catalog *catalog.Catalog
	// Addr is the coordinator's address, the same across restarts.
	Addr string
	// ReleasePublicKey is the PEM file of the public half of the key the
	// coordinator signs released tables with.
	ReleasePublicKey string
	// Logs holds everything the coordinator logged.
	Logs *SyncBuffer

	clock       clockwork.Clock // nil: the real one
	mu          sync.Mutex
	certs       map[string][2]string
	cancel      context.CancelFunc
	done        chan error
	registerURL string
	metricsURL  string
	httpAPIURL  string
	// portalURL is the portal's address (fixed at New, so that the
	// OpenID provider knows its redirect URI) and oidcIssuer the
	// development provider's.
	portalURL, oidcIssuer string
}

// New builds a network under a temporary directory and starts its
// coordinator. It is stopped when the test ends.
func New(tb testing.TB, opts Options) *Network {
	tb.Helper()
	if opts.Deadline == 0 {
		opts.Deadline = 20 * time.Second
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = time.Second
	}
	dir := tb.TempDir()
	n := &Network{tb: tb, Dir: dir, Logs: &SyncBuffer{}, certs: map[string][2]string{}, clock: opts.Clock}
	ca, caPEM, caKey, err := pki.NewCA("Haven test CA", time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	n.CA = ca
	if n.CAFile, _, err = pki.WriteFiles(filepath.Join(dir, "pki"), "ca", caPEM, caKey); err != nil {
		tb.Fatal(err)
	}
	_, certPEM, keyPEM, err := ca.Issue(pki.Request{Kind: pki.KindServer, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		tb.Fatal(err)
	}
	if _, _, err := pki.WriteFiles(filepath.Join(dir, "pki"), "server", certPEM, keyPEM); err != nil {
		tb.Fatal(err)
	}
	_, signingKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	signPriv, signPub, err := release.MarshalKeys(signingKey)
	if err != nil {
		tb.Fatal(err)
	}
	n.ReleasePublicKey = filepath.Join(dir, "pki", "release-signing.pub.pem")
	if err := os.WriteFile(filepath.Join(dir, "pki", "release-signing.key"), signPriv, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(n.ReleasePublicKey, signPub, 0o644); err != nil {
		tb.Fatal(err)
	}
	edit := func(data map[string]any) {
		if d, ok := data["disclosure"].(map[string]any); ok {
			if p, ok := d["perturbation"].(map[string]any); ok {
				p["enabled"] = false
			}
		}
		if opts.EditData != nil {
			opts.EditData(data)
		}
	}
	n.BundleDir, n.Catalog = signedBundle(tb, filepath.Join(dir, "bundle"), filepath.Join(dir, "board.pub.pem"), edit)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	n.Addr = lis.Addr().String()
	lis.Close()

	users := ""
	for id, token := range opts.Users {
		users += fmt.Sprintf("  - {id: %s, org: QHM, roles: [analyst], token_sha256: %s}\n", id, config.HashToken(token))
	}
	var sites bytes.Buffer
	for _, s := range opts.Sites {
		fmt.Fprintf(&sites, "    - {ods: %s, kind: %s, population: %d}\n", s.ODS, s.Kind, s.Population)
	}
	uploads := ""
	if opts.MaxRows > 0 {
		uploads += fmt.Sprintf("  max_rows: %d\n", opts.MaxRows)
	}
	if opts.MaxBytes > 0 {
		uploads += fmt.Sprintf("  max_bytes: %d\n", opts.MaxBytes)
	}
	if opts.MaxBatchBytes > 0 {
		uploads += fmt.Sprintf("  max_batch_bytes: %d\n", opts.MaxBatchBytes)
	}
	if uploads != "" {
		uploads = "uploads:\n" + uploads
	}
	if opts.LinkageBudget != "" {
		uploads += fmt.Sprintf("linkage: {memory_budget: %q}\n", opts.LinkageBudget)
	}
	maxRunning := ""
	if opts.MaxRunning > 0 {
		maxRunning = fmt.Sprintf(", max_running: %d", opts.MaxRunning)
	}
	if opts.OptOutInterval > 0 {
		maxRunning += fmt.Sprintf(", opt_out_interval: %s", opts.OptOutInterval)
	}
	network := ""
	if sites.Len() > 0 {
		network = "network:\n  sites:\n" + sites.String()
	}
	if users != "" {
		users = "users:\n" + users
	}
	if opts.Register {
		network += "register: {listen: \"127.0.0.1:0\"}\n"
	}
	if opts.Metrics {
		network += "metrics: {listen: \"127.0.0.1:0\"}\n"
	}
	if opts.HTTPAPI {
		network += "http_api: {listen: \"127.0.0.1:0\"}\n"
	}
	if opts.Portal {
		network += n.portal(opts.PortalUsers)
	}
	// Relative paths, resolved against the file, as an operator writes them.
	yml := fmt.Sprintf(`listen: %s
tls: {cert: pki/server.crt, key: pki/server.key, ca: pki/ca.crt}
governance: {bundle: bundle, public_key: board.pub.pem, reload_interval: 0s}
releases: {signing_key: pki/release-signing.key}
data_dir: data
runs: {deadline: %s, heartbeat_interval: %s%s}
operator_roles: [operator]
%s%s%s`, n.Addr, opts.Deadline, opts.Heartbeat, maxRunning, uploads, users, network)
	n.ConfigPath = filepath.Join(dir, "coordinator.yaml")
	if err := os.WriteFile(n.ConfigPath, []byte(yml), 0o600); err != nil {
		tb.Fatal(err)
	}
	if n.Config, err = config.Load(n.ConfigPath); err != nil {
		tb.Fatal(err)
	}
	if opts.External {
		return n
	}
	n.Start()
	tb.Cleanup(func() {
		if err := n.Stop(); err != nil {
			tb.Errorf("stop coordinator: %v", err)
		}
	})
	return n
}

// portal starts the development OpenID provider with users and returns
// the configuration's portal section, writing its secret files.
func (n *Network) portal(users []oidcdev.User) string {
	n.tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.tb.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	n.portalURL = "https://" + addr
	secret := rand.Text()
	for name, content := range map[string]string{"portal-client.secret": secret, "portal-session.key": rand.Text() + rand.Text()} {
		if err := os.WriteFile(filepath.Join(n.Dir, "pki", name), []byte(content+"\n"), 0o600); err != nil {
			n.tb.Fatal(err)
		}
	}
	if len(users) == 0 {
		users = DefaultPortalUsers()
	}
	n.oidcIssuer = oidcdevtest.Start(n.tb, &oidcdev.Config{Users: users, Clients: []oidcdev.Client{{ID: "haven-portal", Secret: secret,
		RedirectURIs: []string{n.portalURL + "/auth/callback"}}}})
	return fmt.Sprintf(`portal:
  listen: %q
  url: %s
  oidc: {issuer: %s, client_id: haven-portal, client_secret_file: pki/portal-client.secret}
  session: {key_file: pki/portal-session.key}
`, addr, n.portalURL, n.oidcIssuer)
}

// PortalURL is the portal's address (Options.Portal), without a trailing
// slash.
func (n *Network) PortalURL() string { return n.portalURL }

// OIDCIssuer is the development OpenID provider's issuer (Options.Portal).
func (n *Network) OIDCIssuer() string { return n.oidcIssuer }

// repoRoot is the module root, found from this file's path.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// signedBundle copies the reference bundle to dst, makes every approval
// name its definition's current hash (so these tests do not depend on
// the reference hashes), applies edit to its data, and signs it with a key made here, whose public
// half goes to pubPath.
func signedBundle(tb testing.TB, dst, pubPath string, edit func(map[string]any)) (string, *catalog.Catalog) {
	tb.Helper()
	if err := policy.CopyUnsigned(filepath.Join(repoRoot(), "policy", "bundle"), dst); err != nil {
		tb.Fatal(err)
	}
	cat, err := catalog.Load(os.DirFS(dst))
	if err != nil {
		tb.Fatal(err)
	}
	dataPath := filepath.Join(dst, "data.json")
	b, err := os.ReadFile(dataPath)
	if err != nil {
		tb.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		tb.Fatal(err)
	}
	approvals, _ := data["approvals"].(map[string]any)
	for _, d := range cat.Definitions() {
		if a, ok := approvals[d.ID].(map[string]any); ok {
			a["hash"] = d.Hash()
		}
	}
	if edit != nil {
		edit(data)
	}
	if b, err = json.MarshalIndent(data, "", "  "); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dataPath, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	priv, pub, err := policy.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	if err := policy.Sign(dst, priv, "", "test-board"); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		tb.Fatal(err)
	}
	return dst, cat
}

// Start starts the coordinator from the configuration file.
func (n *Network) Start() {
	n.tb.Helper()
	cfg, err := config.Load(n.ConfigPath)
	if err != nil {
		n.tb.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(n.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var opts []coordinator.Option
	if n.clock != nil {
		opts = append(opts, coordinator.WithClock(n.clock))
	}
	svc, err := coordinator.New(context.Background(), cfg, log, opts...)
	if err != nil {
		n.tb.Fatal(err)
	}
	var lis net.Listener
	for i := 0; ; i++ {
		if lis, err = net.Listen("tcp", n.Addr); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond) // the old listener's port is being released
	}
	if err != nil {
		svc.Close()
		n.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, lis) }()
	n.mu.Lock()
	n.cancel, n.done = cancel, done
	if a := svc.RegisterAddr(); a != nil {
		n.registerURL = "https://" + a.String() + "/register/"
	}
	if a := svc.MetricsAddr(); a != nil {
		n.metricsURL = "http://" + a.String() + "/metrics"
	}
	if a := svc.HTTPAPIAddr(); a != nil {
		n.httpAPIURL = "https://" + a.String()
	}
	n.mu.Unlock()
}

// MetricsURL is the Prometheus endpoint's address (Options.Metrics), as
// the coordinator last started serves it.
func (n *Network) MetricsURL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.metricsURL
}

// HTTPAPIURL is the HTTP API's address (Options.HTTPAPI), https://host:port
// with no trailing slash, as the coordinator last started serves it.
func (n *Network) HTTPAPIURL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.httpAPIURL
}

// RegisterURL is the transparency register's address (Options.Register),
// as the coordinator last started serves it.
func (n *Network) RegisterURL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.registerURL
}

// Stop shuts the coordinator down as SIGTERM does and waits for it.
func (n *Network) Stop() error {
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.cancel, n.done = nil, nil
	n.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	return <-done
}

// Restart stops the coordinator and starts it again on the same files.
func (n *Network) Restart() {
	n.tb.Helper()
	if err := n.Stop(); err != nil {
		n.tb.Fatalf("stop coordinator: %v", err)
	}
	n.Start()
}

// issue writes a certificate once per name and returns its files.
func (n *Network) issue(name string, req pki.Request) (certFile, keyFile string) {
	n.tb.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.certs[name]; ok {
		return c[0], c[1]
	}
	_, certPEM, keyPEM, err := n.CA.Issue(req)
	if err != nil {
		n.tb.Fatal(err)
	}
	certFile, keyFile, err = pki.WriteFiles(filepath.Join(n.Dir, "pki"), name, certPEM, keyPEM)
	if err != nil {
		n.tb.Fatal(err)
	}
	n.certs[name] = [2]string{certFile, keyFile}
	return certFile, keyFile
}

// NodeCert returns a node certificate naming site ods.
func (n *Network) NodeCert(ods string) (certFile, keyFile string) {
	return n.issue("node-"+ods, pki.Request{Kind: pki.KindNode, ODS: ods})
}

// UserCert returns a user certificate.
func (n *Network) UserCert(id, org string, roles ...string) (certFile, keyFile string) {
	return n.issue("user-"+id+"-"+org, pki.Request{Kind: pki.KindUser, ID: id, Org: org, Roles: roles})
}

// Dial connects with a client certificate.
func (n *Network) Dial(certFile, keyFile string) *grpc.ClientConn {
	n.tb.Helper()
	tc, err := pki.ClientTLS(certFile, keyFile, n.CAFile, "")
	if err != nil {
		n.tb.Fatal(err)
	}
	return n.dial(grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

// DialToken connects with a bearer token and no client certificate.
func (n *Network) DialToken(token string) *grpc.ClientConn {
	n.tb.Helper()
	return n.dial(n.serverOnlyTLS(), grpc.WithPerRPCCredentials(client.BearerToken(token)))
}

// DialAnonymous connects with no client certificate and no token, as a
// load balancer's health probe does.
func (n *Network) DialAnonymous() *grpc.ClientConn {
	n.tb.Helper()
	return n.dial(n.serverOnlyTLS())
}

// serverOnlyTLS checks the coordinator's certificate and presents none.
func (n *Network) serverOnlyTLS() grpc.DialOption {
	n.tb.Helper()
	pool, err := pki.CertPool(n.CAFile)
	if err != nil {
		n.tb.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}))
}

func (n *Network) dial(opts ...grpc.DialOption) *grpc.ClientConn {
	conn, err := grpc.NewClient(n.Addr, opts...)
	if err != nil {
		n.tb.Fatal(err)
	}
	n.tb.Cleanup(func() { conn.Close() })
	return conn
}

// SyncBuffer is a bytes.Buffer a logger and a test can share.
type SyncBuffer = testutil.SyncBuffer
