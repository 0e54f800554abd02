// Package browsertest drives web pages in a real browser for tests:
// Debian's Chromium, headless, through the DevTools protocol
// (github.com/chromedp/chromedp). It fails a test on any error or
// warning the page logs (a Content-Security-Policy violation, a script
// error, a resource that would not load), so a page that works only
// because a test reads its HTML as text cannot pass.
package browsertest

import (
	"context"
	_ "embed" // axe-core
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium with one tab.
type Browser struct {
	tb       testing.TB
	ctx      context.Context
	mu       sync.Mutex
	problems []string
	allowed  []string
}

// Allow stops messages containing substr from failing the test, from now
// on: for a step that is meant to fail, such as opening a page the server
// answers 404, which the browser logs as an error.
func (b *Browser) Allow(substr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.allowed = append(b.allowed, substr)
}

// New starts Chromium for tb and closes it when tb ends. Without Chromium
// on PATH it skips tb, unless HAVEN_REQUIRE_BROWSER is set (make test sets
// it after installing Chromium), when it fails.
func New(tb testing.TB) *Browser {
	tb.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("HAVEN_REQUIRE_BROWSER") != "" {
			tb.Fatal("chromium is not installed (scripts/setup-chromium.sh installs it)")
		}
		tb.Skip("chromium is not installed; scripts/setup-chromium.sh installs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(tb.TempDir()),
		// The test's servers use the test network's own CA.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &Browser{tb: tb, ctx: ctx}
	// The first call starts Chromium, which lives as long as the context
	// of that call: ctx itself, not one with a deadline.
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		tb.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleWarning, chromedp.ConsoleError, chromedp.ConsoleException:
				b.problem(fmt.Sprintf("%s: %s (%s)", m.Type, m.Text, m.URL))
			}
		}
	}()
	return b
}

func (b *Browser) problem(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range b.allowed {
		if strings.Contains(s, a) {
			return
		}
	}
	b.problems = append(b.problems, s)
}

// Do runs steps in the tab, within a generous deadline for a loaded
// machine, and fails the test on an error or on anything the page logged
// as a warning or error meanwhile.
func (b *Browser) Do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.tb.Fatalf("%s: %v", what, err)
	}
	b.checkLog(what)
}

// Run runs one action that returns a value, as Do does.
func Run[T any](b *Browser, what string, a chromedp.Action[T]) T {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.tb.Fatalf("%s: %v", what, err)
	}
	b.checkLog(what)
	return v
}

// checkLog fails the test on what the page logged since the last check.
// Messages arrive asynchronously; the page's own load events come before
// the steps that wait for its elements return, which is what the checks
// here follow.
func (b *Browser) checkLog(what string) {
	b.tb.Helper()
	b.mu.Lock()
	problems := b.problems
	b.problems = nil
	b.mu.Unlock()
	if len(problems) > 0 {
		b.tb.Errorf("%s: the page logged:\n%s", what, strings.Join(problems, "\n"))
	}
}

// Screenshot saves the whole page as a PNG named name in the artifacts
// directory (HAVEN_TEST_ARTIFACTS, or a directory under the system's
// temporary one) and logs where.
func (b *Browser) Screenshot(name string) string {
	b.tb.Helper()
	dir := os.Getenv("HAVEN_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "haven-test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.tb.Fatal(err)
	}
	png := Run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.tb.Fatal(err)
	}
	b.tb.Logf("screenshot: %s", path)
	return path
}

// axeSource is axe-core, the accessibility engine (scripts/fetch-axe-core.sh
// pins and copies it; MPL-2.0, see axe/LICENSE).
//
//go:embed axe/axe.min.js
var axeSource string

// Violation is one accessibility rule a page breaks, as axe-core reports it.
type Violation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"` // minor, moderate, serious or critical
	Help   string   `json:"help"`
	URL    string   `json:"helpUrl"`
	Nodes  []string `json:"nodes"` // CSS selectors of the offending elements
}

// CheckAccessibility runs axe-core in the page now open, against the WCAG
// 2.2 A and AA rules and axe's best practices, fails the test on each
// serious or critical violation, logs the others, and returns them all.
// Evaluating through the DevTools protocol is not subject to the page's
// Content-Security-Policy, so a strict policy need not make room for it.
func (b *Browser) CheckAccessibility(page string) []Violation {
	b.tb.Helper()
	vs := b.accessibility(page)
	for _, v := range vs {
		line := fmt.Sprintf("%s: accessibility (%s) %s: %s, at %s (%s)", page, v.Impact, v.ID, v.Help, strings.Join(v.Nodes, "; "), v.URL)
		if v.Impact == "serious" || v.Impact == "critical" {
			b.tb.Error(line)
		} else {
			b.tb.Log(line)
		}
	}
	b.tb.Logf("%s: axe-core found %d violations (%s)", page, len(vs), impacts(vs))
	return vs
}

// accessibility runs axe-core in the page now open and returns what it
// found.
func (b *Browser) accessibility(page string) []Violation {
	b.tb.Helper()
	const run = `(async () => {
		if (typeof axe === "undefined") { throw new Error("axe-core did not load"); }
		const r = await axe.run(document, {resultTypes: ["violations"],
			runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]}});
		return JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact || "", help: v.help, helpUrl: v.helpUrl,
			nodes: v.nodes.map(n => n.target.join(" "))})));
	})()`
	b.Do("load axe-core into "+page, chromedp.Evaluate[chromedp.Void](axeSource+"\n;undefined"))
	raw := Run(b, "run axe-core on "+page, chromedp.Evaluate[string](run, chromedp.EvalAwaitPromise))
	var vs []Violation
	if err := json.Unmarshal([]byte(raw), &vs); err != nil {
		b.tb.Fatalf("axe-core on %s: %v", page, err)
	}
	return vs
}

// impacts counts violations by impact, for the log.
func impacts(vs []Violation) string {
	n := map[string]int{}
	for _, v := range vs {
		n[v.Impact]++
	}
	var parts []string
	for _, k := range []string{"critical", "serious", "moderate", "minor"} {
		parts = append(parts, fmt.Sprintf("%d %s", n[k], k))
	}
	return strings.Join(parts, ", ")
}
