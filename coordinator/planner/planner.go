// Package planner decides which sites a run asks (DESIGN §6). The
// definition's plan (catalog.Plan) says which kinds of site take part and
// what each returns; the planner turns that into one assignment per site of
// those kinds, from the network's members and the nodes that are connected,
// and says for each whether it can be asked now.
//
// Aggregate plans ask every GP practice; linkage plans ask the kinds their
// tasks name: practices and trusts for a GP population with hospital
// variables, trusts alone for a hospital population.
package planner

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
)

// Site is what the coordinator knows of one site when it plans.
type Site struct {
	ODS  string
	Kind cdm.SiteKind
	// Population is the site's registered population, for coverage.
	Population int64
	// Activity is a trust's hospital activity records, for coverage.
	Activity int64
	// Connected reports a live node link.
	Connected bool
	// Paused reports that provider IT paused the node.
	Paused bool
	// LinkageKeyID names the linkage secret the node holds.
	LinkageKeyID string
}

// Assignment is one site's part in a run.
type Assignment struct {
	Site Site
	Task catalog.SiteTask
	// State is SITE_STATE_PENDING for a site to ask now, or the reason it
	// is not asked: DISCONNECTED, PAUSED or FAILED (with Error).
	State havenv1.SiteState
	Error string
}

// Options tune planning.
type Options struct {
	// LinkageKeyID, when set, is the network's linkage secret: a linkage
	// run asks only nodes that hold it, since pseudonyms made with another
	// secret cannot match.
	LinkageKeyID string
}

// ErrNoSites says no site of a kind the plan needs is known.
var ErrNoSites = errors.New("no sites to ask")

// Merge combines the configured members with the sites known from node
// links into one list, ordered by ODS code. What a node reported wins over
// configuration, except that a node that reported no population keeps the
// configured one.
func Merge(members, live []Site) []Site {
	by := map[string]Site{}
	for _, m := range members {
		by[m.ODS] = m
	}
	for _, l := range live {
		if m, ok := by[l.ODS]; ok && l.Population <= 0 {
			l.Population = m.Population
		}
		by[l.ODS] = l
	}
	out := make([]Site, 0, len(by))
	for _, s := range by {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Site) int { return cmp.Compare(a.ODS, b.ODS) })
	return out
}

// Assign returns one assignment per site whose kind takes part in plan,
// ordered by ODS code. It fails with ErrNoSites if some kind the plan needs
// has no site at all.
func Assign(plan *catalog.Plan, sites []Site, opts Options) ([]Assignment, error) {
	if plan == nil || len(plan.Tasks) == 0 {
		return nil, errors.New("plan has no tasks")
	}
	var out []Assignment
	var missing []string
	for _, task := range plan.Tasks {
		n := 0
		for _, s := range sites {
			if s.Kind != task.Kind {
				continue
			}
			n++
			a := Assignment{Site: s, Task: task, State: havenv1.SiteState_SITE_STATE_PENDING}
			switch {
			case !s.Connected:
				a.State = havenv1.SiteState_SITE_STATE_DISCONNECTED
			case s.Paused:
				a.State = havenv1.SiteState_SITE_STATE_PAUSED
			case plan.Mode == catalog.ModeLinkage && opts.LinkageKeyID != "" && s.LinkageKeyID != opts.LinkageKeyID:
				a.State = havenv1.SiteState_SITE_STATE_FAILED
				a.Error = fmt.Sprintf("the node holds linkage key %q, the network uses %q; its pseudonyms could not be linked", s.LinkageKeyID, opts.LinkageKeyID)
			}
			out = append(out, a)
		}
		if n == 0 {
			missing = append(missing, string(task.Kind))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: the plan needs %s sites and the network has none", ErrNoSites, strings.Join(missing, " and "))
	}
	slices.SortFunc(out, func(a, b Assignment) int { return cmp.Compare(a.Site.ODS, b.Site.ODS) })
	return out, nil
}
