// Package layout states Haven's import rules and checks a package graph
// against them. The rules keep the two sides of the network apart: the
// coordinator and the node meet only in the shared packages (cdm, proto,
// policy), and whole-system tests under integration/ are imported by no
// product code. ARCHITECTURE.md explains why; layout_test.go checks the
// module's real graph with go list -deps, so a forbidden import fails
// make test.
package layout

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Module is the import path of the haven module.
const Module = "github.com/havenhealth/haven"

// Rule forbids packages under From (a path relative to the module, a
// package and everything under it) from depending, directly or not, on
// packages under any of Not.
type Rule struct {
	From string
	Not  []string
	Why  string
}

// Rules are Haven's import rules.
var Rules = []Rule{
	{From: "coordinator", Not: []string{"node", "integration", "demo", "synth", "cmd"},
		Why: "the coordinator meets nodes only through proto and policy"},
	{From: "node", Not: []string{"coordinator", "integration", "demo", "cmd", "client"},
		Why: "a node meets the coordinator only through proto and policy"},
	{From: "policy", Not: []string{"coordinator", "node", "integration", "demo", "synth", "cmd", "wire", "client"},
		Why: "policy is shared by both sides and depends on neither"},
	{From: "cdm", Not: []string{"coordinator", "node", "policy", "integration", "demo", "synth", "cmd", "wire", "client"},
		Why: "the common data model is the bottom of the graph"},
	{From: "proto", Not: []string{"coordinator", "node", "policy", "integration", "demo", "synth", "cmd", "wire", "client"},
		Why: "wire types depend on nothing of Haven's"},
	{From: "synth", Not: []string{"coordinator", "node", "integration", "demo", "cmd", "wire", "client"},
		Why: "the synthesiser writes site data from the data model alone"},
	{From: "demo", Not: []string{"integration", "cmd"},
		Why: "the demo is product code; integration/ holds whole-system tests"},
	{From: "cmd", Not: []string{"integration"},
		Why: "no product code imports the whole-system tests"},
	{From: "client", Not: []string{"coordinator", "node", "integration", "demo", "synth", "cmd"},
		Why: "the commissioner client talks to the coordinator only over the network"},
	{From: "release", Not: []string{"coordinator", "node", "policy", "integration", "demo", "synth", "cmd", "wire", "client"},
		Why: "the released-table format is read by every client without the coordinator's code"},
	{From: "wire", Not: []string{"coordinator", "node", "integration", "demo", "synth", "cmd", "client"},
		Why: "wire conversions sit beside proto and serve both sides and every client"},
	{From: "coordinator/portal", Not: []string{"coordinator/api", "coordinator/dispatch", "coordinator/access", "coordinator/admission"},
		Why: "the portal acts through the commissioner API's service it is handed, as the signed-in person, and decides nothing itself"},
	{From: "coordinator/httpapi", Not: []string{"coordinator/api", "coordinator/dispatch", "coordinator/access", "coordinator/admission", "coordinator/portal", "coordinator/register"},
		Why: "the HTTP API acts through the commissioner API's service it is handed, as the authenticated caller, and decides nothing itself"},
	{From: "coordinator/register", Not: []string{"coordinator/portal"},
		Why: "the public register needs no sign-in and shows only what was released"},
	{From: "internal", Not: []string{"coordinator", "node", "policy", "integration", "demo", "synth", "cmd", "wire", "client"},
		Why: "internal holds leaf helpers both sides share"},
}

// Violation is one package that depends on what a rule forbids.
type Violation struct {
	Package, Dep string
	Rule         Rule
}

func (v Violation) String() string {
	return fmt.Sprintf("%s depends on %s: %s may not depend on %s (%s)",
		v.Package, v.Dep, v.Rule.From, strings.Join(v.Rule.Not, ", "), v.Rule.Why)
}

// under says whether package path p (relative to the module) is dir or
// below it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// Check returns every violation of rules in deps, which maps each package
// (full import path) to its dependencies, direct or not, as go list -deps
// gives them. Packages outside the module are ignored.
func Check(deps map[string][]string, rules []Rule) []Violation {
	var out []Violation
	for _, pkg := range slices.Sorted(maps.Keys(deps)) {
		rel, ok := strings.CutPrefix(pkg, Module+"/")
		if !ok {
			continue
		}
		for _, r := range rules {
			if !under(rel, r.From) {
				continue
			}
			for _, dep := range deps[pkg] {
				d, ok := strings.CutPrefix(dep, Module+"/")
				if !ok {
					continue
				}
				if slices.ContainsFunc(r.Not, func(n string) bool { return under(d, n) }) {
					out = append(out, Violation{Package: pkg, Dep: dep, Rule: r})
				}
			}
		}
	}
	return out
}
