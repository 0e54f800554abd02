package dispatch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// TestCoverageKeptInStep changes sites' states at random and checks, after
// each change, that the coverage setSite keeps up to date by adding and
// taking away is the coverage counted afresh from every site.
func TestCoverageKeptInStep(t *testing.T) {
	for _, population := range []cdm.SiteKind{cdm.KindGP, cdm.KindTrust} {
		t.Run(string(population), func(t *testing.T) {
			run := &havenv1.Run{Id: "run-1", Coverage: &havenv1.Coverage{}}
			r := newActiveRun(run, nil, nil, &catalog.Plan{Population: population}, nil, "")
			for i := range 40 {
				kind := cdm.KindGP
				if i%5 == 0 {
					kind = cdm.KindTrust
				}
				st := &havenv1.SiteStatus{SiteOds: fmt.Sprintf("S%02d", i), State: havenv1.SiteState_SITE_STATE_PENDING}
				r.sites[st.SiteOds] = &siteRun{ods: st.SiteOds, kind: kind, population: int64(100 + i), activity: int64(7 * i), status: st}
				run.Coverage.Sites = append(run.Coverage.Sites, st)
			}
			r.updateCoverage()
			d := &Dispatcher{}
			rng := rand.New(rand.NewPCG(1, 2))
			states := []havenv1.SiteState{havenv1.SiteState_SITE_STATE_ACCEPTED, havenv1.SiteState_SITE_STATE_DONE,
				havenv1.SiteState_SITE_STATE_FAILED, havenv1.SiteState_SITE_STATE_TIMED_OUT, havenv1.SiteState_SITE_STATE_DONE}
			for step := range 500 {
				s := r.sites[fmt.Sprintf("S%02d", rng.IntN(40))]
				optOuts := int64(rng.IntN(20))
				d.setSite(context.Background(), r, s, states[rng.IntN(len(states))], time.Unix(int64(step), 0), func(st *havenv1.SiteStatus) {
					st.OptOutsHonoured = optOuts
				})
				kept := proto.Clone(run.Coverage).(*havenv1.Coverage)
				r.updateCoverage()
				if !proto.Equal(kept, run.Coverage) {
					t.Fatalf("step %d: coverage kept %v, counted afresh %v", step, kept, run.Coverage)
				}
			}
			if run.Coverage.SitesAnswered == 0 || run.Coverage.TrustsAnswered == 0 {
				t.Fatalf("no site ever answered: %v", run.Coverage)
			}
		})
	}
}
