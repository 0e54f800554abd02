package planner

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

func loadCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Load(os.DirFS(filepath.Join("..", "..", "policy", "bundle")))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAssign(t *testing.T) {
	cat := loadCatalog(t)
	sites := Merge(
		[]Site{{ODS: "A81001", Kind: cdm.KindGP, Population: 900}, {ODS: "A81004", Kind: cdm.KindGP, Population: 400}},
		[]Site{
			{ODS: "A81001", Kind: cdm.KindGP, Connected: true, LinkageKeyID: "k1"},
			{ODS: "A81002", Kind: cdm.KindGP, Population: 1200, Connected: true, Paused: true, LinkageKeyID: "k1"},
			{ODS: "A81003", Kind: cdm.KindGP, Population: 800, Connected: true, LinkageKeyID: "k0"},
			{ODS: "RXA", Kind: cdm.KindTrust, Population: 50000, Connected: true, LinkageKeyID: "k1"},
		})
	pending, disconnected, paused, failed := havenv1.SiteState_SITE_STATE_PENDING, havenv1.SiteState_SITE_STATE_DISCONNECTED,
		havenv1.SiteState_SITE_STATE_PAUSED, havenv1.SiteState_SITE_STATE_FAILED
	for _, tc := range []struct {
		def  string
		want map[string]havenv1.SiteState
	}{
		// Aggregate: practices only; the linkage key does not matter.
		{"statins-chd", map[string]havenv1.SiteState{"A81001": pending, "A81002": paused, "A81003": pending, "A81004": disconnected}},
		// Linkage with a GP population: practices and trusts, with the key.
		{"t2dm-emergency-admissions", map[string]havenv1.SiteState{"A81001": pending, "A81002": paused, "A81003": failed,
			"A81004": disconnected, "RXA": pending}},
		// Hospital population: trusts only.
		{"emergency-readmissions-30d", map[string]havenv1.SiteState{"RXA": pending}},
	} {
		t.Run(tc.def, func(t *testing.T) {
			def, _ := cat.Get(tc.def)
			got, err := Assign(def.Plan(), sites, Options{LinkageKeyID: "k1"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d assignments, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, a := range got {
				if i > 0 && got[i-1].Site.ODS >= a.Site.ODS {
					t.Errorf("not ordered by ODS code at %s", a.Site.ODS)
				}
				if a.State != tc.want[a.Site.ODS] {
					t.Errorf("%s is %s, want %s (%s)", a.Site.ODS, a.State, tc.want[a.Site.ODS], a.Error)
				}
				if a.Task.Kind != a.Site.Kind {
					t.Errorf("%s got a %s task", a.Site.ODS, a.Task.Kind)
				}
				if a.State == failed && a.Error == "" {
					t.Errorf("%s failed without a reason", a.Site.ODS)
				}
			}
		})
	}
	if got := sites[0]; got.Population != 900 {
		t.Errorf("a node that reported no population should keep the configured one: %+v", got)
	}
}

func TestAssignWithoutSites(t *testing.T) {
	cat := loadCatalog(t)
	def, _ := cat.Get("t2dm-emergency-admissions")
	_, err := Assign(def.Plan(), []Site{{ODS: "A81001", Kind: cdm.KindGP, Connected: true}}, Options{})
	if !errors.Is(err, ErrNoSites) {
		t.Errorf("no trusts for a linkage run: %v", err)
	}
}
