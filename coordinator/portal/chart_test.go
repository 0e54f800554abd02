package portal

import (
	"strings"
	"testing"

	"github.com/apache/arrow/go/v17/arrow/flight"

	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

func testTable() *release.Table {
	return &release.Table{
		Dims:     []string{"age_band", "sex"},
		Measures: []release.Measure{{Name: "patients"}, {Name: "on_statin"}},
		Rows: []release.Row{
			{Kind: release.RowCell, Key: []string{"18-49", "F"}, MarginDim: -1, Values: []release.Value{{Released: true, Value: 60}, {Released: true, Value: 35}}},
			{Kind: release.RowCell, Key: []string{"18-49", "<script>"}, MarginDim: -1, Values: []release.Value{{Released: true, Value: 40}, {Reason: "secondary"}}},
			{Kind: release.RowTotal, Key: []string{"", ""}, MarginDim: -1, Values: []release.Value{{Released: true, Value: 999}, {Released: true, Value: 998}}},
		},
	}
}

// Each measure gets a chart of the groups (not margins or totals): a bar
// for each released value, none for a withheld one, which says so; labels
// are escaped.
func TestCharts(t *testing.T) {
	cs := charts(testTable())
	if len(cs) != 2 {
		t.Fatalf("%d charts, want one per measure", len(cs))
	}
	for i, tc := range []struct {
		bars, withheld int
		axis           string
	}{{bars: 2, withheld: 0, axis: ">patients</text>"}, {bars: 1, withheld: 1, axis: ">on_statin</text>"}} {
		svg := string(cs[i])
		if n := strings.Count(svg, "<rect"); n != tc.bars {
			t.Errorf("chart %d: %d bars, want %d", i, n, tc.bars)
		}
		if n := strings.Count(svg, "withheld (secondary)"); n != tc.withheld {
			t.Errorf("chart %d: %d withheld labels, want %d", i, n, tc.withheld)
		}
		if !strings.Contains(svg, tc.axis) || !strings.Contains(svg, `role="img"`) {
			t.Errorf("chart %d lacks its axis label or role:\n%s", i, svg)
		}
		if strings.Contains(svg, "<script>") || !strings.Contains(svg, "&lt;script&gt;") {
			t.Errorf("chart %d does not escape a label", i)
		}
		if strings.Contains(svg, ">999<") || strings.Contains(svg, ">998<") {
			t.Errorf("chart %d draws the total", i)
		}
	}
	big := testTable()
	for range maxChartBars {
		big.Rows = append(big.Rows, big.Rows[0])
	}
	if charts(big) != nil {
		t.Error("a table of more groups than maxChartBars was charted")
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 1: 1, 7: 10, 60: 100, 180: 200, 230: 250, 1495: 2000, 0.3: 0.5} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

// The Python snippet asks for the run's descriptor, and its address is
// the coordinator's.
func TestSnippets(t *testing.T) {
	sn, err := snippetsFor("run-ABC123", "haven.example:7443")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sn.Python, `"grpc+tls://haven.example:7443"`) || !strings.Contains(sn.R, `read_ipc_stream("run-ABC123.arrow"`) {
		t.Errorf("snippets:\n%s\n%s", sn.Python, sn.R)
	}
	if !strings.Contains(sn.Python, `get_flight_info(flight.FlightDescriptor.for_path("runs", "run-ABC123"))`) ||
		!strings.Contains(sn.Python, "do_get(info.endpoints[0].ticket)") {
		t.Errorf("the Python snippet does not fetch the run's table by its descriptor:\n%s", sn.Python)
	}
	// The descriptor it names is the one the coordinator reads.
	if id, err := havenv1.ParseRunDescriptor(&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"runs", "run-ABC123"}}); err != nil || id != "run-ABC123" {
		t.Errorf("the snippet's descriptor: %q %v", id, err)
	}
	if _, err := snippetsFor("../etc", "x:1"); err == nil {
		t.Error("a malformed run id made a snippet")
	}
}
