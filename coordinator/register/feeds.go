package register

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/havenhealth/haven/coordinator/store"
)

// The feeds list the most recent runs (one page), newest first, so a
// reader polling them misses nothing as long as fewer than PageSize runs
// arrive between polls; each item links to the run's page.

// baseURL is where the register is served, as the request reached it.
func baseURL(req *http.Request) string {
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + req.Host
}

// jsonFeed is a JSON Feed 1.1 document (jsonfeed.org) with Haven's own
// fields under "_haven", as the format allows for extensions.
type jsonFeed struct {
	Version     string     `json:"version"`
	Title       string     `json:"title"`
	HomePageURL string     `json:"home_page_url"`
	FeedURL     string     `json:"feed_url"`
	Description string     `json:"description"`
	Items       []jsonItem `json:"items"`
	Haven       struct {
		AuditHead auditHead `json:"audit_head"`
	} `json:"_haven"`
}

type jsonItem struct {
	ID            string    `json:"id"`
	URL           string    `json:"url"`
	Title         string    `json:"title"`
	ContentText   string    `json:"content_text"`
	DatePublished time.Time `json:"date_published,omitzero"`
	DateModified  time.Time `json:"date_modified,omitzero"`
	Haven         feedRun   `json:"_haven"`
}

// feedRun is a run's register entry for machines.
type feedRun struct {
	RunID             string            `json:"run_id"`
	Organisation      string            `json:"organisation"`
	Roles             []string          `json:"roles,omitempty"`
	Purpose           string            `json:"purpose"`
	Definition        string            `json:"definition"`
	DefinitionVersion uint32            `json:"definition_version"`
	DefinitionSHA256  string            `json:"definition_sha256"`
	Parameters        map[string]string `json:"parameters"`
	State             string            `json:"state"`
	Reasons           []Reason          `json:"reasons,omitempty"`
	Coverage          string            `json:"coverage"`
}

func (r *Register) recent(w http.ResponseWriter, req *http.Request) ([]runView, bool) {
	runs, _, err := r.cfg.Store.ListRuns(req.Context(), store.ListQuery{PageSize: PageSize})
	if err != nil {
		r.fail(w, req, "list runs", err, http.StatusInternalServerError)
		return nil, false
	}
	out := make([]runView, len(runs))
	for i, run := range runs {
		out[i] = viewOf(run)
	}
	return out, true
}

// title is a run's one-line description.
func title(v runView) string {
	return fmt.Sprintf("%s asked %s for %s: %s", v.AskedBy(), v.Definition, v.Purpose, v.State)
}

// summary is a run's description in a sentence or two.
func summary(v runView) string {
	var params []string
	for _, p := range v.Parameters {
		params = append(params, p.Name+" = "+p.Value)
	}
	s := fmt.Sprintf("%s asked %s version %d (%s) for %s. Outcome: %s. Coverage: %s.",
		v.AskedBy(), v.Definition, v.DefinitionVersion, strings.Join(params, ", "), v.Purpose, v.State, v.Coverage)
	for _, r := range v.Reasons {
		s += " " + r.Code + ": " + r.Message
	}
	return s
}

func (r *Register) jsonFeed(w http.ResponseWriter, req *http.Request) {
	views, ok := r.recent(w, req)
	if !ok {
		return
	}
	base := baseURL(req)
	f := jsonFeed{Version: "https://jsonfeed.org/version/1.1", Title: "Haven transparency register: runs",
		HomePageURL: base + "/register/", FeedURL: base + "/register/runs.json",
		Description: "Every question asked of patients' records through Haven, and its outcome.", Items: []jsonItem{}}
	f.Haven.AuditHead = r.auditHead()
	for _, v := range views {
		params := map[string]string{}
		for _, p := range v.Parameters {
			params[p.Name] = p.Value
		}
		f.Items = append(f.Items, jsonItem{ID: v.ID, URL: base + "/register/runs/" + v.ID, Title: title(v),
			ContentText: summary(v), DatePublished: v.Submitted, DateModified: v.Finished,
			Haven: feedRun{RunID: v.ID, Organisation: v.Organisation, Roles: v.Roles, Purpose: v.Purpose, Definition: v.Definition,
				DefinitionVersion: v.DefinitionVersion, DefinitionSHA256: v.DefinitionHash, Parameters: params,
				State: v.State, Reasons: v.Reasons, Coverage: v.Coverage}})
	}
	w.Header().Set("Content-Type", "application/feed+json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(f)
}

// atomFeed is an Atom (RFC 4287) feed.
type atomFeed struct {
	XMLName  xml.Name    `xml:"http://www.w3.org/2005/Atom feed"`
	Title    string      `xml:"title"`
	Subtitle string      `xml:"subtitle"`
	ID       string      `xml:"id"`
	Updated  string      `xml:"updated"`
	Links    []atomLink  `xml:"link"`
	Author   atomAuthor  `xml:"author"`
	Entries  []atomEntry `xml:"entry"`
}

type atomLink struct {
	Href string `xml:"href,attr"`
	Rel  string `xml:"rel,attr,omitempty"`
	Type string `xml:"type,attr,omitempty"`
}

type atomAuthor struct {
	Name string `xml:"name"`
}

type atomEntry struct {
	Title   string   `xml:"title"`
	ID      string   `xml:"id"`
	Updated string   `xml:"updated"`
	Link    atomLink `xml:"link"`
	Summary string   `xml:"summary"`
}

func (r *Register) atomFeed(w http.ResponseWriter, req *http.Request) {
	views, ok := r.recent(w, req)
	if !ok {
		return
	}
	base := baseURL(req)
	head := r.auditHead()
	f := atomFeed{Title: "Haven transparency register: runs",
		Subtitle: fmt.Sprintf("Audit log head: entry %d, hash %s", head.Seq, head.Hash),
		ID:       base + "/register/", Updated: time.Unix(0, 0).UTC().Format(time.RFC3339),
		Links:  []atomLink{{Href: base + "/register/runs.atom", Rel: "self", Type: "application/atom+xml"}, {Href: base + "/register/", Rel: "alternate"}},
		Author: atomAuthor{Name: "Haven coordinator"}}
	var newest time.Time
	for _, v := range views {
		updated := v.Submitted
		if v.Finished.After(updated) {
			updated = v.Finished
		}
		if updated.After(newest) {
			newest = updated
		}
		f.Entries = append(f.Entries, atomEntry{Title: title(v), ID: base + "/register/runs/" + v.ID,
			Updated: updated.UTC().Format(time.RFC3339), Link: atomLink{Href: base + "/register/runs/" + v.ID},
			Summary: summary(v)})
	}
	if !newest.IsZero() {
		f.Updated = newest.UTC().Format(time.RFC3339)
	}
	w.Header().Set("Content-Type", "application/atom+xml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write([]byte(xml.Header))
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	enc.Encode(f)
}

func (r *Register) head(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	json.NewEncoder(w).Encode(r.auditHead())
}
