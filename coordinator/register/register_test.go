package register

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/havenhealth/haven/coordinator/disclosure"
	"github.com/havenhealth/haven/coordinator/store"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// The user ids of the requesters: the register must never show them.
const (
	releasedBy = "analyst-zq81@qhm.example"
	refusedBy  = "analyst-yx27@qwe.example"
)

func run(id, org, user string, state havenv1.RunState, minutes int) *havenv1.Run {
	return &havenv1.Run{
		Id: id, DefinitionId: "t2dm-prevalence", DefinitionVersion: 2, DefinitionHash: strings.Repeat("ab", 32),
		Parameters: map[string]*havenv1.ParameterValue{
			"index_date": {Value: &havenv1.ParameterValue_DateValue{DateValue: "2025-06-01"}},
			"min_age":    {Value: &havenv1.ParameterValue_IntValue{IntValue: 40}},
		},
		Purpose: "commissioning", Requester: &havenv1.Requester{Id: user, Org: org}, State: state,
		SubmittedAt: timestamppb.New(t0.Add(time.Duration(minutes) * time.Minute)),
		UpdatedAt:   timestamppb.New(t0.Add(time.Duration(minutes+1) * time.Minute)),
		Coverage: &havenv1.Coverage{SitesExpected: 10, SitesAnswered: 9, PopulationExpected: 50030, PopulationAnswered: 45020,
			TrustsExpected: 1, TrustsAnswered: 1, ActivityExpected: 1000, ActivityAnswered: 1000},
	}
}

// withheldTrue is the true count of a cell that disclosure control
// withholds: the register must not show it.
const withheldTrue = 4

// setup stores three runs (released, refused, running) and the released
// run's table, and serves the register over them.
func setup(t *testing.T) (*httptest.Server, *store.SQLite) {
	t.Helper()
	ctx := context.Background()
	s, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "coordinator.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	released := run("run-RELEASED1", "QHM", releasedBy, havenv1.RunState_RUN_STATE_RELEASED, 0)
	released.Requester.Roles = []string{"analyst", "commissioner"}
	released.Coverage.OptOutsHonoured = 268
	released.Coverage.Sites = []*havenv1.SiteStatus{
		{SiteOds: "G80001", Kind: havenv1.SiteKind_SITE_KIND_GP, State: havenv1.SiteState_SITE_STATE_DONE, OptOutsHonoured: 263},
		{SiteOds: "G80005", Kind: havenv1.SiteKind_SITE_KIND_GP, State: havenv1.SiteState_SITE_STATE_DONE, OptOutsHonoured: 0},
		{SiteOds: "G80007", Kind: havenv1.SiteKind_SITE_KIND_GP, State: havenv1.SiteState_SITE_STATE_DONE, OptOutsHonoured: 5},
		{SiteOds: "G80009", Kind: havenv1.SiteKind_SITE_KIND_GP, State: havenv1.SiteState_SITE_STATE_TIMED_OUT},
	}
	released.FinishedAt = timestamppb.New(t0.Add(5 * time.Minute))
	refused := run("run-REFUSED1", "QWE", refusedBy, havenv1.RunState_RUN_STATE_REFUSED, 10)
	refused.PolicyReasons = []*havenv1.PolicyReason{{Code: "near_duplicate", Message: "run run-RELEASED1 (released, submitted 2026-03-02) asked definition \"t2dm-prevalence\" with parameters within the near-duplicate distance of these"}}
	running := run("run-RUNNING1", "QHM", releasedBy, havenv1.RunState_RUN_STATE_RUNNING, 20)
	for _, r := range []*havenv1.Run{released, refused, running} {
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	tab := disclosure.Table{Dims: []string{"practice", "sex"}, Measures: []disclosure.Measure{
		{Name: "patients", Kind: disclosure.KindCount, GroupTotal: true},
		{Name: "t2dm", Kind: disclosure.KindCount},
	}}
	for _, c := range []struct {
		practice, sex string
		n, t2dm       int64
	}{{"G80001", "F", 1200, 91}, {"G80001", "M", 1150, 104}, {"G80005", "F", 980, 60}, {"G80005", "M", 1010, withheldTrue}} {
		tab.Cells = append(tab.Cells, disclosure.Cell{Key: []string{c.practice, c.sex}, Values: []disclosure.Input{{Count: c.n}, {Count: c.t2dm}}})
	}
	rel, err := disclosure.Apply(ctx, tab, disclosure.Thresholds{MinCount: 10, RoundingBase: 5, Dominance: disclosure.Dominance{N: 1, K: 0.8}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := rel.Encode(release.Meta{RunID: released.Id})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if err := s.PutRelease(ctx, store.Release{RunID: released.Id, CreatedAt: t0, Table: b, SHA256: hex.EncodeToString(sum[:])}); err != nil {
		t.Fatal(err)
	}
	reg, err := New(Config{Store: s, Head: func() (uint64, string) { return 42, strings.Repeat("c", 64) }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	return srv, s
}

func get(t *testing.T, srv *httptest.Server, path string) (*http.Response, string) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestPages(t *testing.T) {
	srv, _ := setup(t)
	resp, list := get(t, srv, "/register/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("list: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"run-RELEASED1", "run-REFUSED1", "run-RUNNING1", "QHM (analyst, commissioner)", "<td>QWE</td>", "commissioning",
		"t2dm-prevalence v2", "index_date = 2025-06-01", "min_age = 40", "near_duplicate", "released", "refused", "running",
		`id="audit-seq">42<`, strings.Repeat("c", 64)} {
		if !strings.Contains(list, want) {
			t.Errorf("the list does not show %q", want)
		}
	}
	// Newest first.
	if strings.Index(list, "run-RUNNING1") > strings.Index(list, "run-RELEASED1") {
		t.Error("the list is not newest first")
	}

	_, page := get(t, srv, "/register/runs/run-RELEASED1")
	for _, want := range []string{"Asked by</dt><dd>QHM (analyst, commissioner)</dd>", "commissioning", strings.Repeat("ab", 32), "index_date = 2025-06-01",
		"9 of 10 sites answered; 45020 of 50030 registered patients (90.0%); 1 of 1 hospital trusts, holding 100.0% of their usual activity",
		"The released table", "G80005", "low_count", "the count is under the threshold", `id="audit-seq">42<`,
		"Opt-outs honoured</dt><dd>about 270 records",
		`<th scope="row">G80001</th><td>gp</td><td>done</td><td>about 265</td>`,
		`<th scope="row">G80005</th><td>gp</td><td>done</td><td>fewer than 10</td>`,
		`<th scope="row">G80007</th><td>gp</td><td>done</td><td>fewer than 10</td>`,
		`<th scope="row">G80009</th><td>gp</td><td>timed out</td><td></td>`} {
		if !strings.Contains(page, want) {
			t.Errorf("the released run's page does not show %q", want)
		}
	}
	// The withheld cell shows as withheld, and its true value nowhere in
	// its row.
	row := regexp.MustCompile(`(?s)<tr class="row-cell"><th scope="row">G80005</th><th scope="row">M</th>(.*?)</tr>`).FindStringSubmatch(page)
	if row == nil {
		t.Fatalf("no row for G80005 M in\n%s", page)
	}
	if !strings.Contains(row[1], "withheld") || regexp.MustCompile(`>\s*4\s*<`).MatchString(row[1]) {
		t.Errorf("G80005 M row: %s", row[1])
	}

	_, refused := get(t, srv, "/register/runs/run-REFUSED1")
	if !strings.Contains(refused, "Why it was refused") || !strings.Contains(refused, "near-duplicate distance") || strings.Contains(refused, "The released table") {
		t.Errorf("the refused run's page:\n%s", refused)
	}
	for _, page := range []string{list, page, refused} {
		for _, user := range []string{releasedBy, refusedBy, "analyst-"} {
			if strings.Contains(page, user) {
				t.Errorf("a page shows a requester's user id %q", user)
			}
		}
	}
}

// An opt-out count is never published exactly when it is small, zero
// included, and otherwise only to the nearest 5.
func TestOptOutText(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "fewer than 10"}, {1, "fewer than 10"}, {9, "fewer than 10"},
		{10, "about 10"}, {12, "about 10"}, {13, "about 15"}, {263, "about 265"}, {268, "about 270"},
	} {
		if got := OptOutText(tc.n); got != tc.want {
			t.Errorf("OptOutText(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestNotFoundAndHeaders(t *testing.T) {
	srv, _ := setup(t)
	for _, path := range []string{"/register/runs/run-NOSUCH", "/register/runs/..%2f..%2fetc", "/register/runs/" + strings.Repeat("x", 300), "/register/nothing"} {
		if resp, _ := get(t, srv, path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %s, want 404", path, resp.Status)
		}
	}
	if resp, _ := get(t, srv, "/register/?page=not-a-token"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a bad page token: %s, want 400", resp.Status)
	}
	resp, _ := get(t, srv, "/register/")
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
	} {
		if !strings.Contains(resp.Header.Get(h), want) {
			t.Errorf("%s: %q, want %q", h, resp.Header.Get(h), want)
		}
	}
	if resp, body := get(t, srv, "/register/register.css"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "font-family") {
		t.Errorf("stylesheet: %s", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/register/", nil)
	if resp, err := srv.Client().Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v %v", resp.Status, err)
	}
}

func TestFeeds(t *testing.T) {
	srv, _ := setup(t)
	resp, body := get(t, srv, "/register/runs.json")
	if resp.Header.Get("Content-Type") != "application/feed+json; charset=utf-8" {
		t.Errorf("JSON Feed content type %q", resp.Header.Get("Content-Type"))
	}
	var f jsonFeed
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		t.Fatal(err)
	}
	if f.Version != "https://jsonfeed.org/version/1.1" || len(f.Items) != 3 || f.Haven.AuditHead.Seq != 42 {
		t.Fatalf("JSON Feed: version %q, %d items, head %+v", f.Version, len(f.Items), f.Haven.AuditHead)
	}
	first := f.Items[0]
	if first.ID != "run-RUNNING1" || first.URL != srv.URL+"/register/runs/run-RUNNING1" || first.Haven.Organisation != "QHM" ||
		first.Haven.Parameters["min_age"] != "40" || first.Haven.DefinitionSHA256 != strings.Repeat("ab", 32) {
		t.Errorf("first item %+v", first)
	}
	if f.Items[1].Haven.State != "refused" || len(f.Items[1].Haven.Reasons) != 1 || f.Items[1].Haven.Roles != nil {
		t.Errorf("refused item %+v", f.Items[1].Haven)
	}
	if r := f.Items[2].Haven; !slices.Equal(r.Roles, []string{"analyst", "commissioner"}) || !strings.HasPrefix(f.Items[2].Title, "QHM (analyst, commissioner) asked") {
		t.Errorf("released item: roles %q, title %q", r.Roles, f.Items[2].Title)
	}

	_, body = get(t, srv, "/register/runs.atom")
	var a atomFeed
	if err := xml.Unmarshal([]byte(body), &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Entries) != 3 || !strings.Contains(a.Subtitle, "entry 42") || a.Entries[2].ID != srv.URL+"/register/runs/run-RELEASED1" {
		t.Errorf("Atom feed: %d entries, subtitle %q", len(a.Entries), a.Subtitle)
	}
	for _, b := range []string{body} {
		if strings.Contains(b, releasedBy) || strings.Contains(b, refusedBy) {
			t.Error("a feed shows a requester's user id")
		}
	}
	_, body = get(t, srv, "/register/head.json")
	var h auditHead
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Seq != 42 || h.Hash != strings.Repeat("c", 64) {
		t.Errorf("head.json %s: %v", body, err)
	}
}

// The register lists every run, page by page, none twice.
func TestPaging(t *testing.T) {
	srv, s := setup(t)
	for i := range PageSize + 5 {
		if err := s.CreateRun(context.Background(), run(fmt.Sprintf("run-MANY%03d", i), "QHM", releasedBy,
			havenv1.RunState_RUN_STATE_FAILED, 30+i)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	path := "/register/"
	for pages := 0; path != ""; pages++ {
		if pages > 3 {
			t.Fatal("more pages than runs")
		}
		_, body := get(t, srv, path)
		for _, m := range regexp.MustCompile(`href="/register/runs/(run-[A-Za-z0-9]+)"`).FindAllStringSubmatch(body, -1) {
			if seen[m[1]] {
				t.Errorf("%s listed twice", m[1])
			}
			seen[m[1]] = true
		}
		path = ""
		if m := regexp.MustCompile(`rel="next" href="([^"]+)"`).FindStringSubmatch(body); m != nil {
			path = strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if len(seen) != PageSize+5+3 {
		t.Errorf("%d runs listed, want %d", len(seen), PageSize+5+3)
	}
}
