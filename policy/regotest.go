package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestReport is the outcome of a bundle's Rego tests.
type TestReport struct {
	Passed, Failed, Errored, Skipped int
	// Results holds every test, in the order they finished.
	Results []*tester.Result
}

// OK reports whether tests ran and none failed or errored.
func (r *TestReport) OK() bool { return r.Failed == 0 && r.Errored == 0 && r.Passed > 0 }

// RunTests runs the Rego tests (rules named test_*) of the bundle at p, a
// directory or a .tar.gz, the way `opa test -b` does: the bundle's data is
// the data, and its query definitions and codelists are not mistaken for
// data. Policy is compiled with the same capabilities as in Load, so a rule
// that reaches for the network fails here too. The signature is not
// checked: this is for boards drafting policy.
func RunTests(ctx context.Context, p string) (*TestReport, error) {
	f, err := readBundle(p)
	if err != nil {
		return nil, fmt.Errorf("test %s: %w", p, err)
	}
	b, err := readVerified(f, nil)
	if err != nil {
		return nil, fmt.Errorf("test %s: %w", p, err)
	}
	modules := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		modules[m.Path] = m.Parsed
	}
	compiler := ast.NewCompiler().WithCapabilities(capabilities()).WithDefaultRegoVersion(ast.RegoV1)
	ch, err := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(inmem.NewFromObject(b.Data)).
		SetModules(modules).
		SetTimeout(30*time.Second).
		RunTests(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("test %s: %w", p, err)
	}
	rep := &TestReport{}
	for r := range ch {
		rep.Results = append(rep.Results, r)
		switch {
		case r.Skip:
			rep.Skipped++
		case r.Error != nil:
			rep.Errored++
		case r.Fail:
			rep.Failed++
		default:
			rep.Passed++
		}
	}
	return rep, nil
}
