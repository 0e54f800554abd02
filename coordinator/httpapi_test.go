package coordinator_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator/coordinatortest"
	"github.com/havenhealth/haven/coordinator/httpapi"
	"github.com/havenhealth/haven/internal/pki"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// apiUser is an HTTP client of the HTTP API with a TLS identity.
type apiUser struct {
	t    *testing.T
	base string
	c    *http.Client
	// token, if set, is sent as a bearer token.
	token string
}

// httpUser is a client presenting the user certificate of id of org;
// with no id it presents no certificate.
func httpUser(t *testing.T, n *coordinatortest.Network, id, org string) *apiUser {
	t.Helper()
	pool, err := pki.CertPool(n.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if id != "" {
		cert, key := n.UserCert(id, org, "analyst")
		if tc, err = pki.ClientTLS(cert, key, n.CAFile, ""); err != nil {
			t.Fatal(err)
		}
	}
	return &apiUser{t: t, base: n.HTTPAPIURL(), c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}}
}

func (u *apiUser) do(method, path, body string, hdr ...string) (*http.Response, []byte) {
	u.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u.base+path, rd)
	if err != nil {
		u.t.Fatal(err)
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	if u.token != "" {
		req.Header.Set("Authorization", "Bearer "+u.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := u.c.Do(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// apiError is the HTTP API's error body.
type apiError struct {
	Error httpapi.Error `json:"error"`
}

func decodeError(t *testing.T, b []byte) httpapi.Error {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not a JSON error: %v\n%s", err, b)
	}
	return e.Error
}

func hasField(e httpapi.Error, field string) bool {
	return slices.ContainsFunc(e.Violations, func(v httpapi.Violation) bool { return v.Field == field })
}

// TestHTTPAPI submits a run over the HTTP API as a commissioner with a
// client certificate, watches it to its release as JSON lines, and
// fetches its table as JSON, CSV and Arrow, each the same as the gRPC
// API's; then checks what the API refuses and answers as gRPC would:
// bad JSON, unknown fields, wrong parameters, no caller, a node, another
// organisation's run, an oversized body.
func TestHTTPAPI(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{HTTPAPI: true, Users: map[string]string{"tok": "s3cret-token-for-tests"}})
	statinsSites(t, ctx, n, 7, 2, 150)
	ana := httpUser(t, n, "ana", "QHM")

	// The catalogue, as the gRPC API lists it.
	resp, b := ana.do("GET", "/v1/definitions", "")
	var defs havenv1.ListDefinitionsResponse
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(b, &defs) != nil ||
		!slices.ContainsFunc(defs.GetDefinitions(), func(d *havenv1.DefinitionSummary) bool { return d.GetId() == "statins-chd" }) {
		t.Fatalf("GET /v1/definitions: %s\n%s", resp.Status, b)
	}
	resp, b = ana.do("GET", "/v1/definitions/statins-chd", "")
	var def havenv1.GetDefinitionResponse
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(b, &def) != nil || def.GetSource() == "" {
		t.Fatalf("GET /v1/definitions/statins-chd: %s\n%s", resp.Status, b)
	}

	// Submit, then watch to the end as JSON lines.
	resp, b = ana.do("POST", "/v1/runs", `{"definition_id": "statins-chd", "purpose": "`+purpose+`", "parameters": {"lookback_days": {"int_value": "365"}}}`)
	var sub havenv1.SubmitRunResponse
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(b, &sub) != nil || sub.GetRun().GetId() == "" {
		t.Fatalf("POST /v1/runs: %s\n%s", resp.Status, b)
	}
	id := sub.GetRun().GetId()
	if resp.Header.Get("Location") != "/v1/runs/"+id {
		t.Errorf("Location %q", resp.Header.Get("Location"))
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", ana.base+"/v1/runs/"+id+"/events", nil)
	wresp, err := ana.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if wresp.StatusCode != http.StatusOK || wresp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("watch: %s %s", wresp.Status, wresp.Header.Get("Content-Type"))
	}
	var evs []*havenv1.RunEvent
	sc := bufio.NewScanner(wresp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		ev := &havenv1.RunEvent{}
		if err := protojson.Unmarshal(sc.Bytes(), ev); err != nil {
			t.Fatalf("watch line %d: %v\n%s", len(evs), err, sc.Bytes())
		}
		evs = append(evs, ev)
	}
	wresp.Body.Close()
	checkEvents(t, evs)
	if last := evs[len(evs)-1].GetRun(); last.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Fatalf("the watch ended with the run %s: %v", last.GetState(), last.GetError())
	}
	// Server-sent events of the finished run: its snapshot.
	resp, b = ana.do("GET", "/v1/runs/"+id+"/events", "", "Accept", "text/event-stream")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		!strings.HasPrefix(string(b), "event: run\ndata: {") || !strings.Contains(string(b), "RUN_STATE_RELEASED") {
		t.Errorf("watch as server-sent events: %s %s\n%s", resp.Status, resp.Header.Get("Content-Type"), b)
	}
	resp, b = ana.do("GET", "/v1/runs/"+id, "")
	var got havenv1.GetRunResponse
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(b, &got) != nil || got.GetRun().GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		t.Errorf("GET run: %s\n%s", resp.Status, b)
	}
	resp, b = ana.do("GET", "/v1/runs?state=released&definition_id=statins-chd", "")
	var list havenv1.ListRunsResponse
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(b, &list) != nil || len(list.GetRuns()) != 1 || list.GetRuns()[0].GetId() != id {
		t.Errorf("GET runs: %s\n%s", resp.Status, b)
	}

	// The table in each format is the gRPC API's (Flight DoGet).
	tab := fetch(t, ctx, analyst(n, "ana"), id)
	var wantCSV, wantJSON bytes.Buffer
	if err := client.WriteCSV(&wantCSV, tab); err != nil {
		t.Fatal(err)
	}
	if err := client.WriteJSON(&wantJSON, tab); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ format, ct, want string }{
		{"", "application/json", wantJSON.String()},
		{"?format=json", "application/json", wantJSON.String()},
		{"?format=csv", "text/csv; charset=utf-8", wantCSV.String()},
	} {
		resp, b := ana.do("GET", "/v1/runs/"+id+"/table"+tc.format, "")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.ct || string(b) != tc.want {
			t.Errorf("table%s: %s %s\n%s\nwant:\n%s", tc.format, resp.Status, resp.Header.Get("Content-Type"), b, tc.want)
		}
	}
	resp, b = ana.do("GET", "/v1/runs/"+id+"/table?format=arrow", "")
	path := filepath.Join(t.TempDir(), "table.arrow")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if pub, err := release.LoadPublicKey(n.ReleasePublicKey); err != nil {
		t.Fatal(err)
	} else if v, err := client.VerifyFile(path, pub); resp.StatusCode != http.StatusOK || err != nil || len(v.Rows) != len(tab.Rows) {
		t.Errorf("the Arrow table (%s) does not verify: %v", resp.Status, err)
	}

	// A bearer token is a caller too: a colleague of QHM sees the run.
	tok := httpUser(t, n, "", "")
	tok.token = "s3cret-token-for-tests"
	if resp, b := tok.do("GET", "/v1/runs/"+id, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET run with a bearer token: %s\n%s", resp.Status, b)
	}

	// What is refused, and how.
	big := `{"definition_id": "statins-chd", "purpose": "` + strings.Repeat("x", 80<<10) + `"}`
	olu := httpUser(t, n, "olu", "15N")
	anon := httpUser(t, n, "", "")
	nodeCert, nodeKey := n.NodeCert("A81001")
	nodeTLS, err := pki.ClientTLS(nodeCert, nodeKey, n.CAFile, "")
	if err != nil {
		t.Fatal(err)
	}
	node := &apiUser{t: t, base: ana.base, c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: nodeTLS}}}
	for _, tc := range []struct {
		name         string
		u            *apiUser
		method, path string
		body         string
		code         int
		field        string
		contains     string
	}{
		{"bad JSON", ana, "POST", "/v1/runs", `{"definition_id": "statins-chd",`, 400, "", "not a SubmitRunRequest in JSON"},
		{"unknown field", ana, "POST", "/v1/runs", `{"definition_id": "statins-chd", "purpose": "` + purpose + `", "colour": "red"}`, 400, "colour", `unknown field "colour"`},
		{"unknown parameter", ana, "POST", "/v1/runs", `{"definition_id": "statins-chd", "purpose": "` + purpose + `", "parameters": {"lookback": {"int_value": "30"}}}`,
			400, "parameters.lookback", `unknown parameter "lookback"`},
		{"parameter out of range", ana, "POST", "/v1/runs", `{"definition_id": "statins-chd", "purpose": "` + purpose + `", "parameters": {"lookback_days": {"int_value": "5"}}}`,
			400, "parameters.lookback_days", "below the minimum 28"},
		{"parameter of the wrong type", ana, "POST", "/v1/runs", `{"definition_id": "statins-chd", "purpose": "` + purpose + `", "parameters": {"index_date": {"int_value": "2024"}}}`,
			400, "parameters.index_date", "is a date, not a int"},
		{"no purpose", ana, "POST", "/v1/runs", `{"definition_id": "statins-chd"}`, 400, "purpose", "purpose is required"},
		{"unknown definition", ana, "POST", "/v1/runs", `{"definition_id": "nope", "purpose": "` + purpose + `"}`, 404, "", `no definition "nope"`},
		{"wrong query parameter", ana, "GET", "/v1/runs?page_sise=3", "", 400, "page_sise", "unknown query parameter"},
		{"oversized body", ana, "POST", "/v1/runs", big, 413, "", "over the limit"},
		{"no client certificate", anon, "GET", "/v1/runs/" + id, "", 401, "", "client certificate"},
		{"a node's certificate", node, "GET", "/v1/runs/" + id, "", 403, "", "for users"},
		{"another organisation's run", olu, "GET", "/v1/runs/" + id, "", 404, "", ""},
		{"another organisation's table", olu, "GET", "/v1/runs/" + id + "/table", "", 404, "", ""},
		{"another organisation's watch", olu, "GET", "/v1/runs/" + id + "/events", "", 404, "", ""},
		{"another organisation cancelling", olu, "POST", "/v1/runs/" + id + "/cancel", "", 404, "", ""},
		{"a post from another site's page", ana, "POST", "/v1/runs/" + id + "/cancel", "{}", 403, "", "cross-origin"},
	} {
		var hdr []string
		if strings.Contains(tc.name, "another site") {
			hdr = []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}
		}
		resp, b := tc.u.do(tc.method, tc.path, tc.body, hdr...)
		e := decodeError(t, b)
		if resp.StatusCode != tc.code || e.Code != tc.code || !strings.Contains(e.Message, tc.contains) || tc.field != "" && !hasField(e, tc.field) {
			t.Errorf("%s: %s %+v; want %d naming %q, mentioning %q", tc.name, resp.Status, e, tc.code, tc.field, tc.contains)
		}
	}
	if resp, b := olu.do("GET", "/v1/runs", ""); resp.StatusCode != http.StatusOK || strings.Contains(string(b), id) {
		t.Errorf("another organisation lists the run: %s\n%s", resp.Status, b)
	}
	// The OpenAPI document needs no caller.
	if resp, b := anon.do("GET", httpapi.OpenAPIPath, ""); resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"/v1/runs/{run_id}/table"`) {
		t.Errorf("the OpenAPI document: %s", resp.Status)
	}
}

// TestHTTPAPILimits checks that the HTTP API is held to the gRPC API's
// submission limits, counted together: submissions over either count
// against the same requester, and past the bundle's cap on refusals the
// HTTP API answers 429 and stores nothing, as gRPC answers
// ResourceExhausted.
func TestHTTPAPILimits(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	n := coordinatortest.New(t, coordinatortest.Options{HTTPAPI: true, EditData: rateLimits(2, 3)})
	nd := n.Node("A81001", cdm.KindGP, 100)
	nd.Silent = true
	connect(t, ctx, nd)
	submit(t, ctx, analyst(n, "ana"), "statins-chd", purpose, nil) // over gRPC
	ana := httpUser(t, n, "ana", "QHM")
	body := `{"definition_id": "statins-chd", "purpose": "` + purpose + `"}`
	for i := 1; i < 5; i++ {
		resp, b := ana.do("POST", "/v1/runs", body)
		var sub havenv1.SubmitRunResponse
		if resp.StatusCode != http.StatusOK || protojson.Unmarshal(b, &sub) != nil {
			t.Fatalf("submission %d: %s\n%s", i, resp.Status, b)
		}
		if refused := sub.GetRun().GetState() == havenv1.RunState_RUN_STATE_REFUSED; refused != (i >= 2) {
			t.Errorf("submission %d is %s %v", i, sub.GetRun().GetState(), sub.GetRun().GetPolicyReasons())
		}
	}
	resp, b := ana.do("POST", "/v1/runs", body)
	if e := decodeError(t, b); resp.StatusCode != http.StatusTooManyRequests || e.Status != "RESOURCE_EXHAUSTED" || !strings.Contains(e.Message, "nothing was stored") {
		t.Errorf("past the refused limit: %s %+v", resp.Status, e)
	}
	if stored := allRuns(t, ctx, analyst(n, "ana")); len(stored) != 5 {
		t.Errorf("%d runs stored, want 5", len(stored))
	}
}
