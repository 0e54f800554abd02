package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck pins the rule checker down on small graphs: a forbidden
// dependency, direct or not, is found and named; an allowed one is not;
// packages outside the module and the rule's own subtree are ignored.
func TestCheck(t *testing.T) {
	m := func(p string) string { return Module + "/" + p }
	for _, tc := range []struct {
		name string
		deps map[string][]string
		want []string // "package -> dep"
	}{
		{"allowed", map[string][]string{m("coordinator/dispatch"): {m("policy/catalog"), m("cdm"), m("proto/haven/v1"), "fmt"}}, nil},
		{"coordinator imports node", map[string][]string{m("coordinator/dispatch"): {m("node/cdmx")}}, []string{"coordinator/dispatch -> node/cdmx"}},
		{"node imports coordinator", map[string][]string{m("node/runner"): {m("coordinator")}}, []string{"node/runner -> coordinator"}},
		{"product imports integration", map[string][]string{m("cmd/haven"): {m("integration/releasecheck")}}, []string{"cmd/haven -> integration/releasecheck"}},
		{"policy imports node", map[string][]string{m("policy/catalog"): {m("node/sqlgen")}}, []string{"policy/catalog -> node/sqlgen"}},
		{"prefix is not a parent", map[string][]string{m("coordinatorx"): {m("node")}, m("nodes/x"): {m("coordinator")}}, nil},
		{"client reads the release format", map[string][]string{m("client"): {m("release"), m("wire"), m("proto/haven/v1")}}, nil},
		{"client imports the coordinator", map[string][]string{m("client"): {m("coordinator/dispatch"), m("coordinator/disclosure")}},
			[]string{"client -> coordinator/dispatch", "client -> coordinator/disclosure"}},
		{"release imports the coordinator", map[string][]string{m("release"): {m("coordinator/disclosure")}}, []string{"release -> coordinator/disclosure"}},
		{"wire imports node", map[string][]string{m("wire"): {m("node/runner")}}, []string{"wire -> node/runner"}},
		{"outside the module", map[string][]string{"example.com/coordinator": {m("node")}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, v := range Check(tc.deps, Rules) {
				got = append(got, strings.TrimPrefix(v.Package, Module+"/")+" -> "+strings.TrimPrefix(v.Dep, Module+"/"))
				if !strings.Contains(v.String(), v.Rule.Why) {
					t.Errorf("%s does not say why", v)
				}
			}
			if strings.Join(got, ";") != strings.Join(tc.want, ";") {
				t.Errorf("violations %v, want %v", got, tc.want)
			}
		})
	}
}

// TestModuleFollowsRules checks the module's real package graph, as go
// list -deps gives it for non-test code, against Rules.
func TestModuleFollowsRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command in PATH")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps=false", "-json=ImportPath,Deps", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	deps := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("read go list output: %v", err)
		}
		deps[p.ImportPath] = p.Deps
	}
	if len(deps) < 20 || len(deps[Module+"/cmd/haven"]) == 0 {
		t.Fatalf("go list gave %d packages, cmd/haven with %d deps; the check would prove nothing", len(deps), len(deps[Module+"/cmd/haven"]))
	}
	for _, v := range Check(deps, Rules) {
		t.Error(v)
	}
}
