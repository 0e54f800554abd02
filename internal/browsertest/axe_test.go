package browsertest

import (
	"net/url"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestAccessibilityFindsViolations shows that the check can fail: a page
// with no language and an unlabelled field breaks two rules axe-core
// rates serious or critical, and a page without those faults breaks none.
func TestAccessibilityFindsViolations(t *testing.T) {
	b := New(t)
	for _, tc := range []struct {
		name, html string
		want       []string
	}{
		{"faulty", `<!doctype html><html><head><title>t</title></head><body><main><input type="text"></main></body></html>`,
			[]string{"html-has-lang", "label"}},
		{"sound", `<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1>t</h1>` +
			`<label for="f">Name</label><input id="f" type="text"></main></body></html>`, nil},
	} {
		b.Do("open the "+tc.name+" page", chromedp.Navigate("data:text/html,"+url.PathEscape(tc.html)))
		var got []string
		for _, v := range b.accessibility(tc.name) {
			if v.Impact == "serious" || v.Impact == "critical" {
				got = append(got, v.ID)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s page: serious or critical violations %v, want %v", tc.name, got, tc.want)
		}
	}
}
