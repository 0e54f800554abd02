package portal

import (
	"html/template"
	"strings"
	"testing"

	"github.com/havenhealth/haven/release"
)

// tableBodyTemplate is the template the run page's rows were written with
// before tableBody: tableBody must write the same bytes.
const tableBodyTemplate = `{{range .Rows}}<tr class="nhsuk-table__row haven-row-{{.Kind}}">{{range .Key}}<th scope="row" class="nhsuk-table__header">{{.}}</th>{{end}}{{range .Cells}}<td class="nhsuk-table__cell haven-num{{if .Withheld}} haven-withheld{{end}}"{{if .Reason}} data-reason="{{.Reason}}"{{end}}>{{.Text}}{{if .Reason}} <span class="haven-reason">({{.Reason}})</span>{{end}}</td>{{end}}</tr>
{{end}}`

func TestTableBody(t *testing.T) {
	tmpl := template.Must(template.New("").Parse(`<table><tbody>` + tableBodyTemplate + `</tbody></table>`))
	for _, c := range []struct {
		name string
		tab  release.Table
	}{
		{"empty", release.Table{Dims: []string{"practice"}, Measures: []release.Measure{{Name: "n"}}}},
		{"cells, margins and a total", release.Table{Dims: []string{"practice", "sex"}, Measures: []release.Measure{{Name: "n"}, {Name: "t2dm"}},
			Rows: []release.Row{
				{Kind: release.RowCell, Key: []string{"G80001", "F"}, MarginDim: -1, Values: []release.Value{{Released: true, Value: 1200}, {Released: true, Value: 91.5}}},
				{Kind: release.RowCell, Key: []string{"G80001", "M"}, MarginDim: -1, Values: []release.Value{{Released: true, Value: 1150}, {Reason: "low_count"}}},
				{Kind: release.RowMargin, Key: []string{"G80001", ""}, MarginDim: 0, Values: []release.Value{{Released: true, Value: 2350}, {Reason: "secondary"}}},
				{Kind: release.RowTotal, Key: []string{"", ""}, MarginDim: -1, Values: []release.Value{{Released: true, Value: 2350}, {Reason: release.CodeNotAdditive}}},
			}}},
		{"text that needs escaping", release.Table{Dims: []string{"group"}, Measures: []release.Measure{{Name: "n"}},
			Rows: []release.Row{
				{Kind: release.RowCell, Key: []string{`<script>alert("x" + 'y') & </script>` + "\x00"}, MarginDim: -1, Values: []release.Value{{Reason: `a"b<c>'d+e&f`}}},
				{Kind: release.RowCell, Key: []string{"Ünïcødé — ✓"}, MarginDim: -1, Values: []release.Value{{Released: true, Value: -0.25}}},
			}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := tableOf(&c.tab)
			var want strings.Builder
			if err := tmpl.Execute(&want, v.TableView); err != nil {
				t.Fatal(err)
			}
			got := "<table><tbody>" + string(v.Body) + "</tbody></table>"
			if got != want.String() {
				t.Errorf("tableBody wrote\n%s\nthe template wrote\n%s", got, want.String())
			}
		})
	}
}
