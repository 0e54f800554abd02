// Package nodetest holds what the node's tests share: a synthetic network
// generated once per test binary, a governance bundle signed with a test
// key, a test PKI, a DuckDB view of a synthetic site, and a test double of
// the coordinator (CoordinatorDouble). It is for tests only.
//
// A test package that uses Network removes it in TestMain:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		nodetest.Cleanup()
//		os.Exit(code)
//	}
package nodetest

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/internal/testutil"
	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/synth"
)

// network is the synthetic network, generated at most once per process.
var network struct {
	once sync.Once
	dir  string
	n    *synth.Network
	err  error
}

// Network returns the small synthetic network (seed 1), generating it the
// first time a test asks. Tests only read it.
func Network(t testing.TB) *synth.Network {
	t.Helper()
	network.once.Do(func() {
		network.dir, network.err = os.MkdirTemp("", "nodetest-synth-")
		if network.err != nil {
			return
		}
		out := filepath.Join(network.dir, "net")
		if _, network.err = synth.Generate(context.Background(), synth.Config{Out: out, Scale: synth.ScaleSmall, Seed: 1}); network.err != nil {
			return
		}
		network.n, network.err = synth.LoadNetwork(filepath.Join(out, synth.NetworkFile))
	})
	if network.err != nil {
		t.Fatalf("synthetic network: %v", network.err)
	}
	return network.n
}

// Cleanup removes what Network generated.
func Cleanup() {
	if network.dir != "" {
		os.RemoveAll(network.dir)
	}
}

// Site returns the first site of kind k in the network.
func Site(t testing.TB, n *synth.Network, kind string) synth.Site {
	t.Helper()
	for _, s := range n.Sites {
		if string(s.Kind) == kind {
			return s
		}
	}
	t.Fatalf("no %s site in the network", kind)
	return synth.Site{}
}

// NDOP returns the national opt-out list of the network, read directly
// from its file.
func NDOP(t testing.TB, n *synth.Network) []string {
	t.Helper()
	f, err := os.Open(n.Path(n.NationalOptOut.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if !first {
			out = append(out, strings.TrimSpace(sc.Text()))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sourceDir is this package's directory, from which the reference bundle
// is found whatever the test's working directory.
func sourceDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// ReferenceBundle is the path of the board's reference bundle in the
// repository.
func ReferenceBundle() string {
	return filepath.Join(sourceDir(), "..", "..", "policy", "bundle")
}

// Key is a board signing key for tests.
type Key struct{ Private, Public []byte }

// NewKey makes a board key.
func NewKey(t testing.TB) Key {
	t.Helper()
	priv, pub, err := policy.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return Key{priv, pub}
}

// Bundle copies the reference bundle into a new directory, brings each
// approval's hash in line with the catalogue (so tests do not depend on
// the reference approvals being current), lets edit change the data, and
// signs it with k.
func Bundle(t testing.TB, k Key, edit func(data map[string]any)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := policy.CopyUnsigned(ReferenceBundle(), dir); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(os.DirFS(dir))
	if err != nil {
		t.Fatalf("reference catalogue: %v", err)
	}
	EditJSON(t, filepath.Join(dir, "data.json"), func(data map[string]any) {
		approvals, _ := data["approvals"].(map[string]any)
		for _, d := range cat.Definitions() {
			if a, ok := approvals[d.ID].(map[string]any); ok {
				a["hash"] = d.Hash()
				a["expires"] = time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339)
			}
		}
		if edit != nil {
			edit(data)
		}
	})
	Sign(t, dir, k)
	return dir
}

// Sign signs the bundle directory dir with k.
func Sign(t testing.TB, dir string, k Key) {
	t.Helper()
	if err := policy.Sign(dir, k.Private, "", "test-board"); err != nil {
		t.Fatal(err)
	}
}

// CopyDir copies the directory tree src to dst.
func CopyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// EditJSON rewrites the JSON object in file name.
func EditJSON(t testing.TB, name string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	edit(v)
	if b, err = json.MarshalIndent(v, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// PKI is a test network CA with a coordinator certificate and one node
// certificate, written to files.
type PKI struct {
	CAFile             string
	NodeCert, NodeKey  string
	ServerCert, Server string // server certificate and key files
	ServerTLS          *tls.Config
}

// NewPKI issues a CA, a server certificate for 127.0.0.1 and localhost,
// and a node certificate for ods.
func NewPKI(t testing.TB, ods string) *PKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	ca, caPEM, caKey, err := pki.NewCA("Test Haven CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{}
	if p.CAFile, _, err = pki.WriteFiles(dir, "ca", caPEM, caKey); err != nil {
		t.Fatal(err)
	}
	_, c, k, err := ca.Issue(pki.Request{Kind: pki.KindServer, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.ServerCert, p.Server, err = pki.WriteFiles(dir, "server", c, k); err != nil {
		t.Fatal(err)
	}
	if _, c, k, err = ca.Issue(pki.Request{Kind: pki.KindNode, ODS: ods}); err != nil {
		t.Fatal(err)
	}
	if p.NodeCert, p.NodeKey, err = pki.WriteFiles(dir, "node-"+ods, c, k); err != nil {
		t.Fatal(err)
	}
	if p.ServerTLS, err = pki.ServerTLS(p.ServerCert, p.Server, p.CAFile); err != nil {
		t.Fatal(err)
	}
	return p
}

// Eventually is testutil.Eventually.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}
