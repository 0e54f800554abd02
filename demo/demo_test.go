package demo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/integration/releasecheck"
	"github.com/havenhealth/haven/internal/pgtest"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/internal/portaltest"
	"github.com/havenhealth/haven/node/audit"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// TestDemo runs the whole demo, separate processes and all, and checks
// what it released against an answer computed here from the Parquet
// files. With PostgreSQL installed it runs a second time with one trust
// served from PostgreSQL.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole network as processes; skipped with -short")
	}
	// The first demo builds haven into its directory; later ones reuse it.
	root := t.TempDir()
	var haven string
	for _, tc := range []struct {
		name     string
		postgres bool
	}{
		{"duckdb", false},
		{"postgres", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var progress bytes.Buffer
			// Building haven and the plugins takes minutes on a loaded host.
			ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
			defer cancel()
			var faces func(context.Context, *demo.Network) error
			if !tc.postgres {
				faces = checkFaces(t)
			}
			res, err := demo.Run(ctx, demo.Options{
				Dir:      filepath.Join(root, tc.name),
				Keep:     true, // the checks below read its files; TempDir removes it
				Postgres: tc.postgres,
				Haven:    haven,
				Stderr:   &progress,
				Serve:    faces,
			})
			if res != nil && haven == "" {
				if p := filepath.Join(res.Dir, "bin", "haven"); fileExists(p) {
					haven = p
				}
			}
			t.Logf("progress:\n%s", progress.String())
			if res != nil {
				checkNoProcesses(t, res)
			}
			if tc.postgres && errors.Is(err, pgtest.ErrNoBinaries) && os.Getenv("CI") == "" {
				t.Skipf("PostgreSQL is not installed: %v", err)
			}
			if err != nil {
				t.Fatalf("demo: %v", err)
			}
			if tc.postgres && res.Postgres == "" {
				t.Error("Result.Postgres names no site")
			}
			checkDemo(t, res)
		})
	}
}

// checkFaces checks the demo's portal and register while the network
// runs, after the demo's two runs: ana of the demo commissioner's
// organisation signs in through the development OpenID provider and
// finds both runs among her organisation's, olu of another organisation
// gets Not Found for one of them, and the register lists both without
// anyone signing in.
func checkFaces(t *testing.T) func(context.Context, *demo.Network) error {
	return func(ctx context.Context, n *demo.Network) error {
		var runs []string
		for _, rr := range n.Result().Runs {
			runs = append(runs, rr.Run.GetId())
		}
		if len(runs) != 2 {
			t.Errorf("runs %v before serving, want the demo's 2", runs)
		}
		site := portaltest.Site{URL: n.PortalURL(), Issuer: n.OIDCIssuer(), CAFile: n.CAFile()}
		users := map[string]string{}
		for _, u := range demo.PortalUsers() {
			users[u.Username] = u.Password
		}
		ana := portaltest.SignIn(t, site, "ana", users["ana"])
		code, page := ana.Get("/runs?scope=organisation")
		for _, id := range runs {
			if code != http.StatusOK || !strings.Contains(page, id) {
				t.Errorf("ana's organisation's runs (%d) do not list run %s:\n%s", code, id, page)
			}
		}
		olu := portaltest.SignIn(t, site, "olu", users["olu"])
		for _, id := range runs {
			if code, _ := olu.Get("/runs/" + id); code != http.StatusNotFound {
				t.Errorf("olu of another organisation gets %d for run %s, want 404", code, id)
			}
		}
		// The HTTP/JSON API, as the demo commissioner with its certificate.
		cert, key := n.CommissionerCert()
		tlsCfg, err := pki.ClientTLS(cert, key, n.CAFile(), "")
		if err != nil {
			return err
		}
		api := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.HTTPAPIURL()+"/v1/runs", nil)
		resp, err := api.Do(req)
		if err != nil {
			return fmt.Errorf("HTTP API: %w", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, id := range runs {
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), id) {
				t.Errorf("the HTTP API's runs (%s) do not list run %s:\n%s", resp.Status, id, body)
			}
		}
		reg := ana.Anonymous()
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, n.RegisterURL(), nil)
		code, _, page = reg.Do(req)
		for _, id := range runs {
			if code != http.StatusOK || !strings.Contains(page, id) {
				t.Errorf("the register (%d) does not list run %s", code, id)
			}
		}
		return nil
	}
}

func checkDemo(t *testing.T, res *demo.Result) {
	n := res.Network
	var sites []string
	for _, s := range n.Sites {
		sites = append(sites, s.ODS)
	}
	slices.Sort(sites)
	if len(sites) != 10 || !slices.Equal(res.Registered, sites) {
		t.Errorf("registered %v, want all 10 sites %v", res.Registered, sites)
	}
	if len(res.Runs) != 2 {
		t.Fatalf("%d runs, want 2", len(res.Runs))
	}
	if res.AuditEntries == 0 {
		t.Error("the coordinator's audit log is empty")
	}

	wantSites := map[string]int{"t2dm-prevalence": 8, "t2dm-emergency-admissions": 10}
	for _, rr := range res.Runs {
		r := rr.Run
		id := rr.Query.Definition
		if r.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
			t.Fatalf("%s: run %s is %s (%s), want RELEASED", id, r.GetId(), r.GetState(), r.GetError())
		}
		cov := r.GetCoverage()
		if int(cov.GetSitesExpected()) != wantSites[id] || cov.GetSitesAnswered() != cov.GetSitesExpected() ||
			cov.GetPopulationExpected() == 0 || cov.GetPopulationAnswered() != cov.GetPopulationExpected() {
			t.Errorf("%s: coverage %d/%d sites, population %d/%d; want full coverage of %d sites", id,
				cov.GetSitesAnswered(), cov.GetSitesExpected(), cov.GetPopulationAnswered(), cov.GetPopulationExpected(), wantSites[id])
		}
		for _, s := range cov.GetSites() {
			if s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
				t.Errorf("%s: site %s is %s: %s", id, s.GetSiteOds(), s.GetState(), s.GetError())
			}
		}
		if rr.Table == nil {
			t.Fatalf("%s: no table fetched", id)
		}
		checkNodeAudit(t, res, r)
	}

	bundle := filepath.Join(res.Dir, "bundle")
	pt := releasecheck.MustPTable(t, bundle)
	if pt == nil {
		t.Error("the demo's bundle does not perturb counts, as the reference bundle does")
	}
	prev := res.Runs[0]
	minAge, _ := strconv.Atoi(prev.Query.Parameters["min_age"])
	releasecheck.CheckT(t, prev.Table, prevalence(t, n, bundle, prev.Query.Parameters["index_date"], minAge), meanValues, pt, "t2dm-prevalence")

	adm := res.Runs[1]
	followup, _ := strconv.Atoi(adm.Query.Parameters["followup_days"])
	releasecheck.CheckT(t, adm.Table, emergencyAdmissions(t, n, bundle, adm.Query.Parameters["index_date"], int32(followup)), meanValues, pt, "t2dm-emergency-admissions")
}

// checkNodeAudit checks that every site the run asked recorded in its own
// audit log that it answered the run.
func checkNodeAudit(t *testing.T, res *demo.Result, r *havenv1.Run) {
	for _, s := range r.GetCoverage().GetSites() {
		recs, err := audit.Read(filepath.Join(res.Dir, "nodes", s.GetSiteOds(), "audit"), time.Time{})
		if err != nil {
			t.Fatalf("site %s: node audit log: %v", s.GetSiteOds(), err)
		}
		done := slices.ContainsFunc(recs, func(rec audit.Record) bool {
			return rec.Event == audit.EventDone && rec.RunID == r.GetId() && rec.Rows == s.GetRows()
		})
		if !done {
			t.Errorf("site %s: its audit log has no task_done for run %s with %d rows", s.GetSiteOds(), r.GetId(), s.GetRows())
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// checkNoProcesses checks that no process the demo started, nor any in its
// process groups (the connector plugins), nor any other process running
// from the demo directory, is left.
func checkNoProcesses(t *testing.T, res *demo.Result) {
	t.Helper()
	if len(res.PIDs) == 0 {
		return
	}
	for _, pid := range res.PIDs {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child process %d is still there (kill 0: %v)", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d still has a member (kill 0: %v)", pid, err)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(res.Dir)) {
			t.Errorf("process %s still runs from the demo directory: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
