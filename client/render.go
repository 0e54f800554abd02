package client

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// SafeText makes free text from the coordinator safe to print on a
// terminal: control characters (a newline that would forge a line of
// output, a tab that would shift a column, an escape sequence) and the
// invisible characters that reorder text are written as Go escapes, so
// what is shown is what was stored and nothing more.
func SafeText(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unsafeRune(r) {
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
		return true
	case r == 0x2028, r == 0x2029, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0xfeff:
		return true
	}
	return false
}

// StateLabel is a run state as the client shows it: "RELEASED",
// "RUNNING", ….
func StateLabel(s havenv1.RunState) string { return strings.ToUpper(wire.RunStateName(s)) }

// WriteDefinitions writes the catalogue as a table: id, version, mode,
// approval's expiry and title.
func WriteDefinitions(w io.Writer, defs []*havenv1.DefinitionSummary) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVERSION\tMODE\tAPPROVED UNTIL\tTITLE")
	for _, d := range defs {
		until := "not approved"
		if e := d.GetApproval().GetExpiresAt(); e != nil {
			until = e.AsTime().Format(time.DateOnly)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", d.GetId(), d.GetVersion(), wire.ModeName(d.GetMode()), until, d.GetTitle())
	}
	return tw.Flush()
}

// valueString is a parameter value as a person would type it.
func valueString(v *havenv1.ParameterValue) string {
	s, _, _ := v.Text()
	return s
}

// WriteDefinition describes a definition: what it answers, its approval,
// parameters (type, range, allowed values, approved grid, default) and
// codelists.
func WriteDefinition(w io.Writer, resp *havenv1.GetDefinitionResponse) error {
	d := resp.GetDefinition()
	fmt.Fprintf(w, "%s (version %d): %s\n\n%s\n\n", d.GetId(), d.GetVersion(), d.GetTitle(), d.GetDescription())
	fmt.Fprintf(w, "mode        %s\nsha256      %s\n", wire.ModeName(d.GetMode()), d.GetSha256())
	if ap := d.GetApproval(); ap != nil {
		fmt.Fprintf(w, "approved    by %s, until %s\npurposes    %s\n", ap.GetApprover(),
			ap.GetExpiresAt().AsTime().Format(time.DateOnly), strings.Join(ap.GetAllowedPurposes(), ", "))
	} else {
		fmt.Fprintf(w, "approved    no: the governance board has not approved this version\n")
	}
	fmt.Fprintf(w, "group by    %s\nmeasures    %s\n\nparameters:\n", strings.Join(d.GetGroupBy(), ", "), strings.Join(d.GetMeasures(), ", "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, p := range d.GetParameters() {
		var rng []string
		if p.GetMin() != nil {
			rng = append(rng, "min "+valueString(p.GetMin()))
		}
		if p.GetMax() != nil {
			rng = append(rng, "max "+valueString(p.GetMax()))
		}
		if len(p.GetAllowedValues()) > 0 {
			rng = append(rng, "one of "+strings.Join(p.GetAllowedValues(), ", "))
		}
		if g := p.GetApprovedGrid(); g != "" {
			rng = append(rng, "approved: "+g)
		}
		def := "required"
		if p.GetDefaultValue() != nil {
			def = "default " + valueString(p.GetDefaultValue())
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.GetName(), wire.ParamTypeName(p.GetType()), strings.Join(rng, ", "), def, p.GetDescription())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if cls := resp.GetCodelists(); len(cls) > 0 {
		fmt.Fprintf(w, "\ncodelists:\n")
		for _, cl := range cls {
			fmt.Fprintf(w, "  %s (%d codes, sha256 %s)\n", cl.GetName(), cl.GetCodeCount(), cl.GetSha256())
		}
	}
	return nil
}

// WriteRuns writes runs as a table, one a line.
func WriteRuns(w io.Writer, runs []*havenv1.Run) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tDEFINITION\tSTATE\tSUBMITTED\tREQUESTER\tSITES\tPURPOSE")
	for _, r := range runs {
		cov := r.GetCoverage()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", SafeText(r.GetId()), SafeText(r.GetDefinitionId()), StateLabel(r.GetState()),
			r.GetSubmittedAt().AsTime().Format(time.RFC3339), SafeText(r.GetRequester().GetId()),
			cov.GetSitesAnswered(), cov.GetSitesExpected(), SafeText(r.GetPurpose()))
	}
	return tw.Flush()
}

// Progress draws a run's progress as Follow reports it: one line that is
// redrawn in place on a terminal, a line per change elsewhere.
type Progress struct {
	w    io.Writer
	tty  bool
	last string
}

// NewProgress draws on w; tty says whether w is a terminal.
func NewProgress(w io.Writer, tty bool) *Progress { return &Progress{w: w, tty: tty} }

// Update draws run's state if it changed; it fits Follow's progress.
func (p *Progress) Update(run *havenv1.Run) {
	cov := run.GetCoverage()
	line := fmt.Sprintf("%s %-9s sites %d/%d answered", run.GetId(), StateLabel(run.GetState()), cov.GetSitesAnswered(), cov.GetSitesExpected())
	if cov.GetPopulationExpected() > 0 {
		line += fmt.Sprintf(", population %.1f%%", 100*float64(cov.GetPopulationAnswered())/float64(cov.GetPopulationExpected()))
	}
	if cov.GetTrustsExpected() > 0 {
		line += fmt.Sprintf(", trusts %d/%d", cov.GetTrustsAnswered(), cov.GetTrustsExpected())
	}
	if line == p.last {
		return
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.last = line
}

// Done ends the progress line on a terminal.
func (p *Progress) Done() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

// activityShare says how much of the asked trusts' hospital activity
// answered.
func activityShare(answered, expected int64) string {
	if expected <= 0 {
		return "hospital activity not reported"
	}
	return fmt.Sprintf("hospital activity %d of %d records (%.1f%%)", answered, expected, 100*float64(answered)/float64(expected))
}

// WriteRun describes a run and its sites.
func WriteRun(w io.Writer, run *havenv1.Run) {
	names := slices.Sorted(maps.Keys(run.GetParameters()))
	var ps []string
	for _, n := range names {
		ps = append(ps, SafeText(n)+"="+SafeText(valueString(run.GetParameters()[n])))
	}
	fmt.Fprintf(w, "run         %s\nstate       %s\ndefinition  %s v%d (%s)\nparameters  %s\npurpose     %s\nrequester   %s (%s)\n",
		SafeText(run.GetId()), StateLabel(run.GetState()), SafeText(run.GetDefinitionId()), run.GetDefinitionVersion(), wire.ModeName(run.GetMode()),
		strings.Join(ps, " "), SafeText(run.GetPurpose()), SafeText(run.GetRequester().GetId()), SafeText(run.GetRequester().GetOrg()))
	fmt.Fprintf(w, "submitted   %s\n", run.GetSubmittedAt().AsTime().Format(time.RFC3339))
	if p := run.GetQueuePosition(); p > 0 {
		fmt.Fprintf(w, "queued      position %d: waiting for a slot (organisations take turns); the deadline starts when it leaves the queue\n", p)
	}
	if run.GetDeadline() != nil {
		fmt.Fprintf(w, "deadline    %s\n", run.GetDeadline().AsTime().Format(time.RFC3339))
	}
	if run.GetFinishedAt() != nil {
		fmt.Fprintf(w, "finished    %s\n", run.GetFinishedAt().AsTime().Format(time.RFC3339))
	}
	cov := run.GetCoverage()
	if cov.GetSitesExpected() > 0 {
		fmt.Fprintf(w, "coverage    %d of %d sites, %d of %d people\n", cov.GetSitesAnswered(), cov.GetSitesExpected(),
			cov.GetPopulationAnswered(), cov.GetPopulationExpected())
	}
	if cov.GetTrustsExpected() > 0 {
		fmt.Fprintf(w, "trusts      %d of %d, %s\n", cov.GetTrustsAnswered(), cov.GetTrustsExpected(),
			activityShare(cov.GetActivityAnswered(), cov.GetActivityExpected()))
		for _, s := range cov.GetSites() {
			if s.GetKind() == havenv1.SiteKind_SITE_KIND_TRUST && s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
				fmt.Fprintf(w, "missing     trust %s (%s): the table leaves out the hospital activity it holds\n",
					s.GetSiteOds(), wire.SiteStateName(s.GetState()))
			}
		}
	}
	for _, r := range run.GetPolicyReasons() {
		fmt.Fprintf(w, "reason      %s: %s\n", SafeText(r.GetCode()), SafeText(r.GetMessage()))
	}
	if run.GetError() != "" {
		fmt.Fprintf(w, "error       %s\n", SafeText(run.GetError()))
	}
	if rel := run.GetRelease(); rel != nil {
		rule := fmt.Sprintf("counts under %d withheld, rounded to %d", rel.GetMinCellCount(), rel.GetRoundingBase())
		if p := rel.GetPerturbationTable(); p != "" {
			rule = fmt.Sprintf("counts perturbed by %s, sums rounded to %d", SafeText(p), rel.GetRoundingBase())
		}
		fmt.Fprintf(w, "released    %d rows, %d values released, %d withheld (%s)\n",
			rel.GetRows(), rel.GetCellsReleased(), rel.GetCellsWithheld(), rule)
	}
	if sites := cov.GetSites(); len(sites) > 0 {
		fmt.Fprintln(w, "sites:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range sites {
			detail := s.GetError()
			for _, r := range s.GetReasons() {
				detail = strings.TrimSpace(detail + " " + r.GetCode() + ": " + r.GetMessage())
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d rows\t%s\n", SafeText(s.GetSiteOds()), wire.SiteKindName(s.GetKind()),
				wire.SiteStateName(s.GetState()), s.GetRows(), SafeText(detail))
		}
		tw.Flush()
	}
}
