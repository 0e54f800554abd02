package coordinator_test

import (
	"bytes"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/browsertest"
	"github.com/havenhealth/haven/internal/portaltest"
	"github.com/havenhealth/haven/release"
)

// signIn signs user in to the portal as a browser does, through the
// development OpenID provider's sign-in form.
func signIn(t *testing.T, n *coordinatortest.Network, user string) *portaltest.User {
	t.Helper()
	site := portaltest.Site{URL: n.PortalURL(), Issuer: n.OIDCIssuer(), CAFile: n.CAFile, ServerName: "localhost"}
	return portaltest.SignIn(t, site, user, coordinatortest.PortalPassword(user))
}

// TestPortalAccess signs three people in to the portal through the
// development OpenID provider and checks that each sees what the
// commissioner API would let them: the requester sees the run and its
// table, a colleague of the same organisation the run but not the table,
// and someone of another organisation nothing (404, as the API says).
// A cross-site form post, a forged cookie and a request without one are
// refused, and the pages carry the security headers.
func TestPortalAccess(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{Portal: true})
	statinsSites(t, ctx, n, 7, 2, 150)
	run := releaseStatins(t, ctx, n, "ana") // over gRPC, as ana of QHM

	ana := signIn(t, n, "ana")
	req, _ := http.NewRequest(http.MethodGet, ana.Base+"/runs/"+run.GetId(), nil)
	code, h, page := ana.Do(req)
	if code != http.StatusOK || !strings.Contains(page, "The released table") || !strings.Contains(page, `id="legend"`) && !strings.Contains(page, `id="released"`) {
		t.Errorf("the requester's run page: %d\n%s", code, page)
	}
	if !strings.Contains(page, "ana (QHM, analyst)</dd>") {
		t.Errorf("the run page does not say who asked with their role:\n%s", page)
	}
	for _, name := range []string{"Content-Security-Policy", "Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options"} {
		if h.Get(name) == "" {
			t.Errorf("no %s header", name)
		}
	}
	if !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("CSP %q", h.Get("Content-Security-Policy"))
	}
	if code, page := ana.Get("/runs"); code != http.StatusOK || !strings.Contains(page, run.GetId()) {
		t.Errorf("ana's runs: %d, without the run", code)
	}
	// The downloads are the table the API gives: the CSV as haven query
	// writes it, the Arrow stream as released (it verifies).
	var want bytes.Buffer
	if err := client.WriteCSV(&want, fetch(t, ctx, analyst(n, "ana"), run.GetId())); err != nil {
		t.Fatal(err)
	}
	if code, csv := ana.Get("/runs/" + run.GetId() + "/table.csv"); code != http.StatusOK || csv != want.String() {
		t.Errorf("the CSV download (%d) differs from the API's table:\n%s\nwant:\n%s", code, csv, want.String())
	}
	code, arrowFile := ana.Get("/runs/" + run.GetId() + "/table.arrow")
	path := filepath.Join(t.TempDir(), "table.arrow")
	os.WriteFile(path, []byte(arrowFile), 0o600)
	if code != http.StatusOK {
		t.Errorf("the Arrow download: %d", code)
	} else if pub, err := release.LoadPublicKey(n.ReleasePublicKey); err != nil {
		t.Fatal(err)
	} else if _, err := client.VerifyFile(path, pub); err != nil {
		t.Errorf("the Arrow download does not verify: %v", err)
	}

	bob := signIn(t, n, "bob")
	if code, page := bob.Get("/runs/" + run.GetId()); code != http.StatusOK || strings.Contains(page, `id="released"`) || !strings.Contains(page, `id="table-note"`) {
		t.Errorf("a colleague's view of the run: %d\n%s", code, page)
	}
	if code, _ := bob.Get("/runs/" + run.GetId() + "/table.csv"); code != http.StatusForbidden {
		t.Errorf("a colleague downloading the table: %d", code)
	}
	if _, page := bob.Get("/runs"); strings.Contains(page, run.GetId()) {
		t.Error("bob's own runs list ana's run")
	}
	if _, page := bob.Get("/runs?scope=organisation"); !strings.Contains(page, run.GetId()) {
		t.Error("bob's organisation's runs do not list ana's run")
	}

	olu := signIn(t, n, "olu")
	if code, page := olu.Get("/runs/" + run.GetId()); code != http.StatusNotFound || strings.Contains(page, "statins-chd") {
		t.Errorf("another organisation's user reading the run: %d\n%s", code, page)
	}
	if code, _ := olu.Get("/runs/" + run.GetId() + "/table.arrow"); code != http.StatusNotFound {
		t.Errorf("another organisation downloading the table: %d", code)
	}
	if _, page := olu.Get("/runs?scope=organisation"); strings.Contains(page, run.GetId()) {
		t.Error("another organisation lists the run")
	}

	// A form posted from another site, as a forged request would be.
	form := url.Values{"purpose": {purpose}}
	req, _ = http.NewRequest(http.MethodPost, ana.Base+"/definitions/statins-chd", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if code, _, body := ana.Do(req); code != http.StatusForbidden {
		t.Errorf("a cross-site post answered %d:\n%s", code, body)
	}
	// The same post from the portal's own page submits a run.
	req, _ = http.NewRequest(http.MethodPost, ana.Base+"/definitions/statins-chd", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", ana.Base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if code, h, body := ana.Do(req); code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/runs/run-") {
		t.Errorf("a same-origin post answered %d %s:\n%s", code, h.Get("Location"), body)
	}

	// No cookie, and a forged one, are sent to sign in.
	for _, cookie := range []string{"", "forged-value"} {
		req, _ = http.NewRequest(http.MethodGet, ana.Base+"/runs/"+run.GetId(), nil)
		if cookie != "" {
			req.Header.Set("Cookie", "__Host-haven-session="+cookie)
		}
		anon := ana.Anonymous()
		if code, h, body := anon.Do(req); code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/auth/login") {
			t.Errorf("cookie %q: %d %s\n%s", cookie, code, h.Get("Location"), body)
		}
	}
	if strings.Contains(n.Logs.String(), "haven-session=") {
		t.Error("the coordinator logged a session cookie")
	}
}

// TestPortalInABrowser uses the portal in Chromium as a commissioner
// would: sign in through the OpenID provider's form, open the catalogue,
// submit statins-chd with a value out of range (and see the error next to
// the field), then with a good one, follow the run to its released table
// with the withheld values marked and the legend, and sign out. Someone of
// another organisation who opens the run's address is told there is no
// such run. Nothing the pages do may log an error (a CSP violation would);
// a screenshot of each page is saved.
func TestPortalInABrowser(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{Portal: true})
	statinsSites(t, ctx, n, 5, 2, 150)
	b := browsertest.New(t)
	base := n.PortalURL()

	signInAs := func(user string) {
		t.Helper()
		b.Do("open the portal", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("sign-in")))
		b.Do("sign in as "+user, chromedp.Click(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("username")),
			chromedp.SendKeys(chromedp.ID("username"), user), chromedp.SendKeys(chromedp.ID("password"), coordinatortest.PortalPassword(user)),
			chromedp.Click(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("signed-in-as")))
		// The sign-in ends in a chain of redirects, and a page found
		// visible during it can be replaced under the next step (Chromium
		// then answers "No node with given id found"): load the page the
		// chain lands on once more, now that the session cookie is set.
		landed := browsertest.Run(b, "read where the sign-in landed", chromedp.Evaluate[string](`location.pathname`))
		b.Do("reload "+landed, chromedp.Navigate(base+landed), chromedp.WaitVisible(chromedp.ID("signed-in-as")))
		if landed != "/catalogue" {
			t.Errorf("signing in as %s landed on %s, want /catalogue", user, landed)
		}
	}
	signInAs("ana")
	if who := browsertest.Run(b, "read who is signed in", chromedp.Text(chromedp.ID("signed-in-as"))); !strings.Contains(who, "QHM") {
		t.Errorf("signed in as %q", who)
	}
	if h := browsertest.Run(b, "read the heading", chromedp.Text(chromedp.CSS("h1"))); h != "Catalogue" {
		t.Errorf("after signing in the heading is %q", h)
	}
	font := browsertest.Run(b, "read the header's colour", chromedp.Evaluate[string](`getComputedStyle(document.querySelector(".nhsuk-header")).backgroundColor`))
	if font != "rgb(0, 94, 184)" {
		t.Errorf("the NHS header's background is %q: the design system's stylesheet did not apply", font)
	}
	b.Screenshot("portal-catalogue")
	b.CheckAccessibility("portal-catalogue")

	lookback := `[id="p.lookback_days"]`
	if n := browsertest.Run(b, "find the form's link", chromedp.Evaluate[int](`document.querySelectorAll('a[href="/definitions/statins-chd"]').length`)); n != 1 {
		t.Errorf("the catalogue has %d links to statins-chd's form", n)
	}
	b.Do("open the form", chromedp.Navigate(base+"/definitions/statins-chd"), chromedp.WaitVisible(chromedp.CSS(lookback)))
	b.Do("submit a value out of range", chromedp.SetValue(chromedp.CSS(lookback), "5000"), chromedp.SetValue(chromedp.ID("purpose"), purpose),
		chromedp.Click(chromedp.ID("submit")), chromedp.WaitVisible(chromedp.CSS(`[id="p.lookback_days-error"]`)))
	msg := browsertest.Run(b, "read the field's error", chromedp.Text(chromedp.CSS(`[id="p.lookback_days-error"]`)))
	if !strings.Contains(msg, "5000") {
		t.Errorf("the field's error is %q", msg)
	}
	b.Screenshot("portal-submit-error")
	b.CheckAccessibility("portal-submit-error")

	b.Do("submit a good value", chromedp.SetValue(chromedp.CSS(lookback), "365"), chromedp.Click(chromedp.ID("submit")),
		chromedp.WaitVisible(chromedp.ID("run-state")))
	runURL := browsertest.Run(b, "read the run's address", chromedp.Evaluate[string](`location.href`))
	var state string
	for deadline := time.Now().Add(time.Minute); ; {
		state = browsertest.Run(b, "read the run's state", chromedp.Evaluate[string](`(document.getElementById("run-state")||{}).textContent||""`))
		if state == "released" || state == "refused" || state == "failed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if state != "released" {
		b.Screenshot("portal-run-failed")
		why := browsertest.Run(b, "read why", chromedp.Evaluate[string](`document.querySelector("main").innerText`))
		t.Fatalf("the run page ended %q:\n%s", state, why)
	}
	b.Do("reload the released run", chromedp.Navigate(runURL), chromedp.WaitVisible(chromedp.ID("released")))
	rows := browsertest.Run(b, "count the table's rows", chromedp.Evaluate[int](`document.querySelectorAll("#released tbody tr").length`))
	if rows < 2 {
		t.Errorf("the released table has %d rows", rows)
	}
	if n := browsertest.Run(b, "count the charts", chromedp.Evaluate[int](`document.querySelectorAll("svg.haven-chart").length`)); n != 3 {
		t.Errorf("%d charts, want one for each of statins-chd's 3 measures", n)
	}
	if py := browsertest.Run(b, "read the Python snippet", chromedp.Text(chromedp.ID("snippet-python"))); !strings.Contains(py, "pyarrow.flight") {
		t.Errorf("the Python snippet: %q", py)
	}
	b.Screenshot("portal-run")
	b.CheckAccessibility("portal-run")
	b.Do("open my runs", chromedp.Navigate(base+"/runs"), chromedp.WaitVisible(chromedp.CSS(`#runs a[href="`+strings.TrimPrefix(runURL, base)+`"]`)))
	b.Screenshot("portal-my-runs")
	b.CheckAccessibility("portal-my-runs")
	b.Do("sign out", chromedp.Click(chromedp.ID("sign-out")), chromedp.WaitVisible(chromedp.ID("signed-out")))

	signInAs("olu")
	b.Allow("status of 404") // what the API says of another organisation's run
	b.Do("open another organisation's run", chromedp.Navigate(runURL), chromedp.WaitVisible(chromedp.ID("error-message")))
	if h := browsertest.Run(b, "read the heading", chromedp.Text(chromedp.CSS("h1"))); h != "Not Found" {
		t.Errorf("another organisation's run shows %q", h)
	}
	b.Screenshot("portal-other-organisation")
	b.CheckAccessibility("portal-other-organisation")
}
