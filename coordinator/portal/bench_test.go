package portal

import (
	"log/slog"
	"net/http/httptest"
	"strconv"
	"testing"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// BenchmarkRunPage renders the run page of a released table of 1,000
// rows (issue 16 asks for at most 20 ms).
func BenchmarkRunPage(b *testing.B) {
	pages, err := parsePages()
	if err != nil {
		b.Fatal(err)
	}
	p := &Portal{pages: pages, cfg: Config{Log: slog.New(slog.DiscardHandler)}}
	tab := &release.Table{Dims: []string{"practice", "age_band"}, Measures: []release.Measure{{Name: "patients"}, {Name: "on_statin"}}}
	for i := range 1000 {
		v := []release.Value{{Released: true, Value: float64(i)}, {Reason: "secondary"}}
		tab.Rows = append(tab.Rows, release.Row{Kind: release.RowCell, Key: []string{"P" + strconv.Itoa(i/10), strconv.Itoa(i % 10)}, MarginDim: -1, Values: v})
	}
	s := session{User: "ana", Org: "QHM", Roles: []string{"analyst"}}
	run := &havenv1.Run{Id: "run-BENCH", DefinitionId: "statins-chd", State: havenv1.RunState_RUN_STATE_RELEASED,
		Requester: &havenv1.Requester{Id: "ana", Org: "QHM"}}
	sn, _ := snippetsFor(run.GetId(), "localhost:7443")
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("GET", "/runs/run-BENCH", nil)
		w := httptest.NewRecorder()
		p.page(w, r, 200, "run.html", &s, map[string]any{"Title": "Run", "Run": viewOf(run, s), "Table": tableOf(tab),
			"Charts": charts(tab), "Snippets": sn})
		if w.Code != 200 {
			b.Fatalf("status %d", w.Code)
		}
	}
}
