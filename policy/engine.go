// Package policy evaluates Haven's governance decisions with OPA, in
// process.
//
// The governance board's bundle (Rego, data, approved query definitions and
// codelists) is read once into memory, its signature checked with OPA's
// bundle verification, and that same in-memory copy is handed to both OPA
// and the catalogue, so what was verified is exactly what is used. Each of
// the three decisions (haven/submit, haven/participate, haven/disclose) is
// prepared once per bundle and evaluated per request under a timeout. Any
// failure denies: an evaluation error, an undefined or malformed result and
// a timeout all give allow=false with a reason.
//
// A new bundle replaces the old one atomically (Reload, Watch); if the new
// one fails verification or compilation the old one stays in force. A site
// may add Rego under package haven.site, which can only narrow what the
// bundle allows.
package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/havenhealth/haven/policy/catalog"
	"github.com/havenhealth/haven/policy/ptable"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// DefaultTimeout bounds one decision when Config.Timeout is zero. A
// decision normally takes tens of microseconds; the bound is for a policy
// that runs away, and is wide because it is wall-clock time: on a busy
// machine (154 sites' nodes on two cores, in the ICB benchmark) 500 ms was
// overrun by healthy decisions, and each overrun refuses a task.
const DefaultTimeout = 5 * time.Second

// Config says where the bundle is and how to trust it.
type Config struct {
	// BundlePath is the governance bundle: a directory or a .tar.gz file.
	BundlePath string
	// PublicKeyPEM is the board's public key. A bundle not signed with the
	// matching private key is refused.
	PublicKeyPEM []byte
	// Alg is the JWS algorithm of the signature, e.g. ES256 or RS256;
	// empty means the one that goes with the key.
	Alg string
	// InsecureSkipVerify loads a bundle without checking its signature. It
	// is for a board drafting policy on its own machine, never for a
	// coordinator or node.
	InsecureSkipVerify bool
	// SiteModules are the site's own Rego files, or directories of them
	// (files ending _test.rego are skipped). Every module must be in
	// package haven.site or below it. They are read again on each reload.
	SiteModules []string
	// Logger receives one record per decision and one per bundle
	// activation; nil means slog.Default().
	Logger *slog.Logger
	// Timeout bounds each decision; zero means DefaultTimeout.
	Timeout time.Duration
	// Observe, if set, is told how long each decision took, by its name
	// ("haven/submit", …): for the coordinator's metrics.
	Observe func(decision string, took time.Duration)
}

// Engine evaluates decisions against the active bundle. It is safe for
// concurrent use.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	reload sync.Mutex // serialises Reload, so two new bundles never race
	active atomic.Pointer[state]
}

// state is one activated bundle: everything a decision needs, never
// changed after activation.
type state struct {
	path        string
	revision    string
	fingerprint [32]byte
	files       fs.FS
	catalog     *catalog.Catalog
	problems    catalog.ErrorList        // approvals that do not match the catalogue
	ptables     map[string]*ptable.Table // perturbation tables by bundle path, validated
	ledger      ledgerRules              // data.ledger's numbers, for SubmitInput.History
	queries     [numDecisions]rego.PreparedEvalQuery
}

// Load reads, verifies and compiles the bundle at cfg.BundlePath and
// returns an engine that evaluates against it.
func Load(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.BundlePath == "" {
		return nil, errors.New("policy: no bundle path configured")
	}
	if len(cfg.PublicKeyPEM) == 0 && !cfg.InsecureSkipVerify {
		return nil, errors.New("policy: no public key configured to verify the bundle")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	e := &Engine{cfg: cfg, log: cfg.Logger}
	if e.log == nil {
		e.log = slog.Default()
	}
	f, err := readBundle(cfg.BundlePath)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", cfg.BundlePath, err)
	}
	s, err := e.build(ctx, cfg.BundlePath, f)
	if err != nil {
		return nil, err
	}
	e.activate(ctx, s)
	return e, nil
}

// Reload reads, verifies and compiles the bundle at p (empty: the path
// the active bundle came from) and makes it active. If anything fails, the
// active bundle stays in force and the error says why.
func (e *Engine) Reload(ctx context.Context, p string) error {
	if p == "" {
		p = e.active.Load().path
	}
	f, err := readBundle(p)
	if err != nil {
		err = fmt.Errorf("load bundle %s: %w", p, err)
		e.log.LogAttrs(ctx, slog.LevelError, "policy bundle refused; the active bundle stays in force",
			slog.String("bundle", p), slog.String("active_revision", e.Revision()), slog.String("error", err.Error()))
		return err
	}
	return e.reloadFiles(ctx, p, f)
}

func (e *Engine) reloadFiles(ctx context.Context, p string, f files) error {
	e.reload.Lock()
	defer e.reload.Unlock()
	s, err := e.build(ctx, p, f)
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelError, "policy bundle refused; the active bundle stays in force",
			slog.String("bundle", p), slog.String("active_revision", e.Revision()), slog.String("error", err.Error()))
		return err
	}
	e.activate(ctx, s)
	return nil
}

// Watch polls the active bundle's path every interval and reloads it when
// its contents change, until ctx ends. A changed bundle that fails to load
// is logged once and the active one stays in force; copying a new bundle
// over the old one file by file is therefore safe, since the half-copied
// bundle fails verification.
func (e *Engine) Watch(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("policy: watch interval %v is not positive", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var refused [32]byte
	var unreadable string
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		p := e.active.Load().path
		f, err := readBundle(p)
		if err != nil {
			if err.Error() != unreadable { // once, not every tick
				unreadable = err.Error()
				e.log.LogAttrs(ctx, slog.LevelWarn, "policy bundle unreadable; the active bundle stays in force",
					slog.String("bundle", p), slog.String("error", unreadable))
			}
			continue
		}
		unreadable = ""
		fp := f.fingerprint()
		if fp == e.active.Load().fingerprint || fp == refused {
			continue
		}
		if err := e.reloadFiles(ctx, p, f); err != nil {
			refused = fp
		}
	}
}

// Revision is the revision named in the active bundle's manifest.
func (e *Engine) Revision() string { return e.active.Load().revision }

// Files is the active bundle's files as they were verified (read-only):
// query definitions, codelists and everything else the bundle holds.
func (e *Engine) Files() fs.FS { return e.active.Load().files }

// Catalog is the approved catalogue of the active bundle, parsed from the
// same verified bytes that policy was loaded from. A caller that holds it
// across a reload keeps the old catalogue; call again for the new one.
func (e *Engine) Catalog() *catalog.Catalog { return e.active.Load().catalog }

func (e *Engine) activate(ctx context.Context, s *state) {
	e.active.Store(s)
	e.log.LogAttrs(ctx, slog.LevelInfo, "policy bundle active",
		slog.String("bundle", s.path), slog.String("bundle_revision", s.revision),
		slog.Bool("verified", !e.cfg.InsecureSkipVerify), slog.Int("definitions", len(s.catalog.Definitions())))
	// An approval that does not match its definition approves nothing,
	// which policy enforces; say so where the operator will see it.
	for _, p := range s.problems {
		e.log.LogAttrs(ctx, slog.LevelWarn, "policy bundle approval does not match the catalogue",
			slog.String("bundle_revision", s.revision), slog.String("problem", p.Error()))
	}
}

// build does all the work of a load, from the files read from p, without
// touching the active state.
func (e *Engine) build(ctx context.Context, p string, f files) (*state, error) {
	var err error
	var vc *bundle.VerificationConfig
	if !e.cfg.InsecureSkipVerify {
		if vc, err = verificationConfig(e.cfg.PublicKeyPEM, e.cfg.Alg); err != nil {
			return nil, fmt.Errorf("load bundle %s: %w", p, err)
		}
	}
	b, err := readVerified(f, vc)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", p, err)
	}
	modules := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		// Tests ship in the bundle, signed like the rest, but take no part
		// in decisions.
		if strings.HasSuffix(m.Path, "_test.rego") {
			continue
		}
		modules[m.Path] = m.Parsed
	}
	site, err := readSiteModules(e.cfg.SiteModules)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", p, err)
	}
	for name, m := range site {
		modules[name] = m
	}
	s := &state{path: p, revision: b.Manifest.Revision, fingerprint: f.fingerprint(), files: f.asFS()}
	if s.catalog, err = catalog.Load(s.files); err != nil {
		return nil, fmt.Errorf("load bundle %s: catalogue: %w", p, err)
	}
	s.problems = ApprovalProblems(b.Data, s.catalog)
	if s.ptables, err = loadPTables(b.Data, f); err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", p, err)
	}
	s.ledger = readLedgerRules(b.Data)
	if err := s.prepare(ctx, modules, b.Data); err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", p, err)
	}
	return s, nil
}

// prepare compiles the modules once and prepares every decision on them.
func (s *state) prepare(ctx context.Context, modules map[string]*ast.Module, data map[string]any) error {
	c := ast.NewCompiler().WithCapabilities(capabilities())
	if c.Compile(modules); c.Failed() {
		return fmt.Errorf("compile: %w", c.Errors)
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	for d := range numDecisions {
		ref := d.ref()
		if len(c.GetRulesForVirtualDocument(ref)) == 0 {
			return fmt.Errorf("the bundle defines no %s", ref)
		}
		pq, err := rego.New(
			rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
			rego.Compiler(c),
			rego.Store(store),
			rego.StrictBuiltinErrors(true),
		).PrepareForEval(ctx)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", ref, err)
		}
		s.queries[d] = pq
	}
	return nil
}

// deniedBuiltins are left out of the capabilities policy is compiled with:
// decisions must not reach the network or the process environment (a site
// module least of all), and must not depend on the clock or randomness, so
// that a decision can be replayed from its input. The caller passes "now".
var deniedBuiltins = []string{
	"http.send",
	"net.lookup_ip_addr",
	"opa.runtime",
	"time.now_ns",
	"rand.intn",
	"uuid.rfc4122",
}

func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(slices.Clone(c.Builtins), func(b *ast.Builtin) bool {
		return slices.Contains(deniedBuiltins, b.Name)
	})
	return c
}

// sitePackage is where a site's own Rego must live. The bundle's
// haven/participate reads data.haven.site.deny and only ever adds its
// reasons, so a site module can narrow but not widen.
var sitePackage = ast.MustParseRef("data.haven.site")

func readSiteModules(paths []string) (map[string]*ast.Module, error) {
	var names []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("site module: %w", err)
		}
		if !fi.IsDir() {
			names = append(names, p)
			continue
		}
		err = filepath.WalkDir(p, func(n string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(n, ".rego") && !strings.HasSuffix(n, "_test.rego") {
				names = append(names, n)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("site modules %s: %w", p, err)
		}
	}
	modules := make(map[string]*ast.Module, len(names))
	for _, n := range names {
		src, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("site module: %w", err)
		}
		m, err := ast.ParseModuleWithOpts(n, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("site module: %w", err)
		}
		if !m.Package.Path.HasPrefix(sitePackage) {
			return nil, fmt.Errorf("site module %s: package %s is outside %s; a site may only add rules under %s",
				n, m.Package.Path, sitePackage, sitePackage)
		}
		// Keep site modules apart from bundle modules of the same name.
		modules["site:"+n] = m
	}
	return modules, nil
}
