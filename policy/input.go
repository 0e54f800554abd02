package policy

import (
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The typed inputs build their Rego value directly: decoding their JSON
// again for OPA would cost more than the rest of a simple decision. The
// value must be exactly what the JSON encoding decodes to (the digest in
// the decision log is of the JSON); TestInputValueMatchesJSON checks that
// for every input type.

func (in SubmitInput) astValue() (ast.Value, error) {
	params, err := anyTerm(in.Parameters)
	if err != nil {
		return nil, err
	}
	obj := ast.NewObject(
		item("now", timeTerm(in.Now)),
		item("requester", ast.ObjectTerm(
			item("id", ast.StringTerm(in.Requester.ID)),
			item("org", ast.StringTerm(in.Requester.Org)),
			item("roles", stringsTerm(in.Requester.Roles)),
		)),
		item("definition", definitionTerm(in.Definition)),
		item("parameters", params),
		item("purpose", ast.StringTerm(in.Purpose)),
	)
	if in.Counts != nil {
		obj.Insert(ast.StringTerm("counts"), ast.ObjectTerm(
			item("runs_last_24h", ast.IntNumberTerm(in.Counts.RunsLast24h)),
			item("refused_last_24h", ast.IntNumberTerm(in.Counts.RefusedLast24h)),
			item("active_runs", ast.IntNumberTerm(in.Counts.ActiveRuns)),
			item("org_active_runs", ast.IntNumberTerm(in.Counts.OrgActiveRuns))))
	}
	if in.Ledger != nil {
		l, err := in.Ledger.term()
		if err != nil {
			return nil, err
		}
		obj.Insert(ast.StringTerm("ledger"), l)
	}
	return obj, nil
}

func (l *SubmitLedger) term() (*ast.Term, error) {
	near := ast.NullTerm()
	if l.Near != nil {
		ts := make([]*ast.Term, len(l.Near))
		for i, e := range l.Near {
			params, err := anyTerm(e.Parameters)
			if err != nil {
				return nil, err
			}
			ts[i] = ast.ObjectTerm(
				item("run_id", ast.StringTerm(e.RunID)),
				item("requester", ast.ObjectTerm(item("id", ast.StringTerm(e.Requester.ID)), item("org", ast.StringTerm(e.Requester.Org)))),
				item("parameters", params),
				item("submitted_at", timeTerm(e.SubmittedAt)),
				item("released", ast.BooleanTerm(e.Released)),
			)
		}
		near = ast.ArrayTerm(ts...)
	}
	return ast.ObjectTerm(
		item("since", timeTerm(l.Since)),
		item("near", near),
		item("runs", ast.ObjectTerm(
			item("requester", ast.IntNumberTerm(l.Runs.Requester)),
			item("organisation", ast.IntNumberTerm(l.Runs.Organisation)))),
	), nil
}

func (in ParticipateInput) astValue() (ast.Value, error) {
	params, err := anyTerm(in.Task.Parameters)
	if err != nil {
		return nil, err
	}
	return ast.NewObject(
		item("now", timeTerm(in.Now)),
		item("task", ast.ObjectTerm(
			item("definition", definitionTerm(in.Task.Definition)),
			item("purpose", ast.StringTerm(in.Task.Purpose)),
			item("mode", ast.StringTerm(in.Task.Mode)),
			item("requester_org", ast.StringTerm(in.Task.RequesterOrg)),
			item("codelists", stringsTerm(in.Task.Codelists)),
			item("parameters", params),
		)),
		item("site", ast.ObjectTerm(
			item("ods", ast.StringTerm(in.Site.ODS)),
			item("kind", ast.StringTerm(in.Site.Kind)),
			item("paused", ast.BooleanTerm(in.Site.Paused)),
			item("bundle_revision", ast.StringTerm(in.Site.BundleRevision)),
		)),
	), nil
}

func (in DiscloseInput) astValue() (ast.Value, error) {
	var measures *ast.Term
	if in.Table.Measures == nil {
		measures = ast.NullTerm()
	} else {
		ms := make([]*ast.Term, len(in.Table.Measures))
		for i, m := range in.Table.Measures {
			ms[i] = ast.ObjectTerm(item("name", ast.StringTerm(m.Name)), item("kind", ast.StringTerm(m.Kind)),
				item("dominance", ast.BooleanTerm(m.Dominance)))
		}
		measures = ast.ArrayTerm(ms...)
	}
	answered := func(a Answered) *ast.Term {
		return ast.ObjectTerm(
			item("expected", ast.InternedTerm(a.Expected)),
			item("answered", ast.InternedTerm(a.Answered)),
		)
	}
	return ast.NewObject(
		item("purpose", ast.StringTerm(in.Purpose)),
		item("table", ast.ObjectTerm(
			item("rows", ast.IntNumberTerm(in.Table.Rows)),
			item("measures", measures),
		)),
		item("coverage", ast.ObjectTerm(
			item("sites", answered(in.Coverage.Sites)),
			item("population", answered(in.Coverage.Population)),
			item("trusts", answered(in.Coverage.Trusts)),
			item("activity", answered(in.Coverage.Activity)),
			item("missing_trusts", missingTerm(in.Coverage.MissingTrusts)),
		)),
	), nil
}

// missingTerm is a list of missing sites; nil is null, as in JSON, which
// policy refuses as malformed coverage.
func missingTerm(ms []MissingSite) *ast.Term {
	if ms == nil {
		return ast.NullTerm()
	}
	ts := make([]*ast.Term, len(ms))
	for i, m := range ms {
		ts[i] = ast.ObjectTerm(item("ods", ast.StringTerm(m.ODS)), item("state", ast.StringTerm(m.State)),
			item("activity", ast.InternedTerm(m.Activity)))
	}
	return ast.ArrayTerm(ts...)
}

func definitionTerm(d DefinitionRef) *ast.Term {
	obj := ast.NewObject(item("id", ast.StringTerm(d.ID)), item("hash", ast.StringTerm(d.Hash)))
	if len(d.Codelists) > 0 { // omitempty
		obj.Insert(ast.StringTerm("codelists"), stringsTerm(d.Codelists))
	}
	return ast.NewTerm(obj)
}

func item(key string, v *ast.Term) [2]*ast.Term { return ast.Item(ast.StringTerm(key), v) }

// timeTerm writes t as encoding/json does.
func timeTerm(t time.Time) *ast.Term { return ast.StringTerm(t.Format(time.RFC3339Nano)) }

// stringsTerm writes xs as encoding/json does: nil is null.
func stringsTerm(xs []string) *ast.Term {
	if xs == nil {
		return ast.NullTerm()
	}
	ts := make([]*ast.Term, len(xs))
	for i, x := range xs {
		ts[i] = ast.StringTerm(x)
	}
	return ast.ArrayTerm(ts...)
}

// anyTerm converts parameter values; OPA round-trips through JSON any type
// it does not know, so the result matches the JSON encoding.
func anyTerm(m map[string]any) (*ast.Term, error) {
	if m == nil {
		return ast.NullTerm(), nil
	}
	v, err := ast.InterfaceToValue(m)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(v), nil
}
