package policy

import (
	"context"
	"path/filepath"
	"testing"
)

// The Rego tests run under `go test`, so `make test` fails when policy
// does.
func TestRegoTestsPass(t *testing.T) {
	for _, dir := range []string{referenceBundle, filepath.Join("examples", "site")} {
		t.Run(dir, func(t *testing.T) {
			rep, err := RunTests(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rep.Results {
				if !r.Pass() {
					t.Errorf("%s.%s: %s", r.Package, r.Name, r.String())
				}
			}
			if !rep.OK() {
				t.Errorf("passed %d, failed %d, errored %d", rep.Passed, rep.Failed, rep.Errored)
			}
		})
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	dir := copyDir(t, referenceBundle)
	// Break the rule that denies expired approvals: its test must notice.
	replaceOnce("not approval_current\n", "false\n")(t, filepath.Join(dir, "haven/submit/submit.rego"))
	rep, err := RunTests(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Failed == 0 {
		t.Errorf("a broken expiry rule passed its tests: %+v", rep)
	}
}
