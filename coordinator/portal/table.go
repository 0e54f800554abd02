package portal

import (
	"html/template"
	"strings"

	"github.com/havenhealth/haven/coordinator/register"
	"github.com/havenhealth/haven/release"
)

// tableView is a released table as the run page shows it: the register's
// view of it, with the body's rows written once in Go. A 1,000-row table
// through html/template's range costs some 50,000 reflective calls; the
// rows written here are the same bytes (tableBodyTemplate in the tests
// holds the template they replace and checks they match) in a fraction
// of the time.
type tableView struct {
	register.TableView
	// Body is the table's <tbody> rows.
	Body template.HTML
}

// tableOf is t as the run page shows it.
func tableOf(t *release.Table) tableView {
	v := tableView{TableView: register.TableOf(t)}
	v.Body = tableBody(v.Rows)
	return v
}

// escape escapes text exactly as html/template escapes a value in text or
// a quoted attribute, so the rows match what the template wrote.
var escape = strings.NewReplacer(
	"\x00", "\uFFFD", `"`, "&#34;", "&", "&amp;", "'", "&#39;", "+", "&#43;", "<", "&lt;", ">", "&gt;",
).WriteString

// tableBody writes rows as the run page's table rows. Every text in them
// is escaped.
func tableBody(rows []register.RowView) template.HTML {
	var b strings.Builder
	if len(rows) > 0 {
		// About what a row takes, so the builder grows once.
		b.Grow(len(rows) * (64 + 64*len(rows[0].Key) + 160*len(rows[0].Cells)))
	}
	for _, r := range rows {
		b.WriteString(`<tr class="nhsuk-table__row haven-row-`)
		escape(&b, r.Kind)
		b.WriteString(`">`)
		for _, k := range r.Key {
			b.WriteString(`<th scope="row" class="nhsuk-table__header">`)
			escape(&b, k)
			b.WriteString(`</th>`)
		}
		for _, c := range r.Cells {
			b.WriteString(`<td class="nhsuk-table__cell haven-num`)
			if c.Withheld {
				b.WriteString(` haven-withheld`)
			}
			b.WriteString(`"`)
			if c.Reason != "" {
				b.WriteString(` data-reason="`)
				escape(&b, c.Reason)
				b.WriteString(`"`)
			}
			b.WriteString(`>`)
			escape(&b, c.Text)
			if c.Reason != "" {
				b.WriteString(` <span class="haven-reason">(`)
				escape(&b, c.Reason)
				b.WriteString(`)</span>`)
			}
			b.WriteString(`</td>`)
		}
		b.WriteString("</tr>\n")
	}
	return template.HTML(b.String()) // every text in it was escaped above
}
