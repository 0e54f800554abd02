package coordinator_test

import (
	"crypto/tls"

	"encoding/json"
	"github.com/chromedp/chromedp"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/havenhealth/haven/coordinator/audit"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/internal/browsertest"
	"github.com/havenhealth/haven/internal/pki"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// releasedWithRegister starts a coordinator with its register on, and
// releases one run of statins-chd asked by analyst-zq81 of QHM.
func releasedWithRegister(t *testing.T) (*coordinatortest.Network, *havenv1.Run) {
	t.Helper()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{Register: true})
	nodes, _ := statinsSites(t, ctx, n, 5, 2, 150)
	// What the nodes say they left out for opt-outs: 140 and 3.
	nodes[0].OptOutsExcluded, nodes[1].OptOutsExcluded = 140, 3
	return n, releaseStatins(t, ctx, n, "analyst-zq81")
}

// TestTransparencyRegisterInABrowser reads the register in Chromium: the
// list, a click through to the run, its released table with the withheld
// values marked and the legend, styled by the register's own stylesheet,
// with nothing logged (a CSP violation or a resource that would not load
// would be). It saves a screenshot of each page.
func TestTransparencyRegisterInABrowser(t *testing.T) {
	t.Parallel()
	n, run := releasedWithRegister(t)
	b := browsertest.New(t)
	b.Do("open the register", chromedp.Navigate(n.RegisterURL()), chromedp.WaitVisible(chromedp.CSS("table.runs")))
	if h := browsertest.Run(b, "read the heading", chromedp.Text(chromedp.CSS("h1"))); h != "Runs" {
		t.Errorf("the register's heading is %q", h)
	}
	b.Screenshot("register-runs")
	b.CheckAccessibility("register-runs")
	b.Do("open the run", chromedp.Click(chromedp.CSS(`a[href="/register/runs/`+run.GetId()+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("table.released")))
	if h := browsertest.Run(b, "read the heading", chromedp.Text(chromedp.CSS("h1"))); h != "Run "+run.GetId() {
		t.Errorf("the run page's heading is %q", h)
	}
	rows := browsertest.Run(b, "count the table's rows", chromedp.Evaluate[int](`document.querySelectorAll("table.released tbody tr").length`))
	if rows < 2 {
		t.Errorf("the released table has %d rows", rows)
	}
	bg := browsertest.Run(b, "read the banner's colour", chromedp.Evaluate[string](`getComputedStyle(document.querySelector(".banner")).backgroundColor`))
	if bg != "rgb(0, 94, 184)" {
		t.Errorf("the banner's background is %q: the stylesheet did not apply", bg)
	}
	b.Screenshot("register-run")
	b.CheckAccessibility("register-run")
}

// TestTransparencyRegister runs a real coordinator with its register on,
// releases a run, and reads the register as a member of the public would:
// over HTTPS with no client certificate. The run is listed with its
// organisation and purpose but not the analyst's user id, its page shows
// the released table, and the audit head on the page is an entry of the
// coordinator's audit log with that hash.
func TestTransparencyRegister(t *testing.T) {
	t.Parallel()
	n, run := releasedWithRegister(t)

	pool, err := pki.CertPool(n.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	// A browser's TLS: the network CA trusted, no client certificate.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	get := func(url string) string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
		}
		if resp.Header.Get("Strict-Transport-Security") == "" {
			t.Errorf("GET %s: no Strict-Transport-Security over HTTPS", url)
		}
		return string(b)
	}
	base := n.RegisterURL()
	if base == "" {
		t.Fatal("the coordinator serves no register")
	}
	list := get(base)
	if !strings.Contains(list, run.GetId()) || !strings.Contains(list, "QHM") || !strings.Contains(list, purpose) {
		t.Errorf("the register's list lacks the run, its organisation or purpose:\n%s", list)
	}
	page := get(base + "runs/" + run.GetId())
	if !strings.Contains(page, "The released table") || !strings.Contains(page, "statins-chd") {
		t.Errorf("the run's page shows no released table:\n%s", page)
	}
	// The opt-outs the sites honoured reach the run's coverage exactly, and
	// the register only coarsely.
	if got := run.GetCoverage().GetOptOutsHonoured(); got != 143 {
		t.Errorf("coverage counts %d opt-outs honoured, want 143", got)
	}
	for _, want := range []string{"Opt-outs honoured</dt><dd>about 145 records", "<td>done</td><td>about 140</td>", "<td>done</td><td>fewer than 10</td>"} {
		if !strings.Contains(page, want) {
			t.Errorf("the run's page does not show %q", want)
		}
	}
	if strings.Contains(page, ">143<") || strings.Contains(page, ">3<") {
		t.Error("the run's page shows an exact opt-out count")
	}
	for _, p := range []string{list, page} {
		if strings.Contains(p, "analyst-zq81") {
			t.Error("the register shows the analyst's user id")
		}
	}

	// The head on the page is in the log, with that hash.
	m := regexp.MustCompile(`id="audit-seq">(\d+)<.*?id="audit-hash">([0-9a-f]{64})<`).FindStringSubmatch(strings.ReplaceAll(page, "\n", " "))
	if m == nil {
		t.Fatalf("no audit head on the page:\n%s", page)
	}
	seq, _ := strconv.Atoi(m[1])
	f, err := os.Open(n.Config.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var hashes []string
	if _, err := audit.Scan(f, func(e audit.Entry) { hashes = append(hashes, e.Hash) }); err != nil {
		t.Fatal(err)
	}
	if seq < 1 || seq > len(hashes) || hashes[seq-1] != m[2] {
		t.Errorf("the page's audit head %d:%s is not entry %d of the log (%d entries)", seq, m[2], seq, len(hashes))
	}
	var head struct {
		Seq  int    `json:"seq"`
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal([]byte(get(base+"head.json")), &head); err != nil || head.Seq < seq || head.Seq > len(hashes)+1 {
		t.Errorf("head.json %+v (page %d, log %d entries): %v", head, seq, len(hashes), err)
	}
}
