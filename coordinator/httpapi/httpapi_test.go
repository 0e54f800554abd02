package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/havenhealth/haven/coordinator/authn"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

type noReleases struct{}

func (noReleases) Release(context.Context, authn.Principal, string) ([]byte, error) { return nil, nil }

const token = "analyst-token-0123456789"

// testHandler is the HTTP API over a service that implements nothing,
// with a real authenticator that knows one user by token.
func testHandler(t *testing.T) *Handler {
	t.Helper()
	sum := sha256.Sum256([]byte(token))
	auth, err := authn.New([]authn.User{{ID: "ana", Org: "QHM", Roles: []string{"analyst"}, TokenSHA256: hex.EncodeToString(sum[:])}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{API: havenv1.UnimplementedCoordinatorServer{}, Releases: noReleases{}, MaxBodyBytes: 1 << 10,
		Limit: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(ctx, req)
		},
		Authenticate: auth.AuthenticateTLS})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func serve(h http.Handler, method, path, auth, body string, hdr ...string) (int, http.Header, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, w.Header(), string(b)
}

// TestDocumentMatchesRoutes checks the OpenAPI document against what the
// router serves: every documented operation reaches its handler, no
// other method or path does, and the document is valid OpenAPI 3.1.
func TestDocumentMatchesRoutes(t *testing.T) {
	h := testHandler(t)
	code, _, body := serve(h, "GET", OpenAPIPath, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", OpenAPIPath, code, body)
	}
	doc, err := openapi3.NewLoader().LoadFromData([]byte(body))
	if err != nil {
		t.Fatalf("the document does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the document is not valid OpenAPI: %v", err)
	}
	param := regexp.MustCompile(`\{([a-z_]+)\}`)
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			documented[method+" "+path] = true
			concrete := param.ReplaceAllString(path, "x1")
			code, _, body := serve(h, method, concrete, "", "")
			want := http.StatusUnauthorized
			if op.Security != nil && len(*op.Security) == 0 {
				want = http.StatusOK
			}
			if code != want {
				t.Errorf("%s %s (documented): %d, want %d (its handler's answer to no caller)\n%s", method, concrete, code, want, body)
			}
			for _, m := range param.FindAllStringSubmatch(path, -1) {
				if op.Parameters.GetByInAndName("path", m[1]) == nil {
					t.Errorf("%s %s: path parameter %s is not documented", method, path, m[1])
				}
			}
			// Every other method on the path is refused by the router.
			for _, other := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
				if item.GetOperation(other) != nil {
					continue
				}
				if code, _, _ := serve(h, other, concrete, "Bearer "+token, ""); code != http.StatusMethodNotAllowed {
					t.Errorf("%s %s (not documented): %d, want 405", other, concrete, code)
				}
			}
		}
	}
	for _, rt := range h.routes {
		if !documented[rt.method+" "+rt.path] {
			t.Errorf("the router serves %s %s, which the document does not list", rt.method, rt.path)
		}
	}
	if len(documented) != len(h.routes) {
		t.Errorf("the document lists %d operations, the router %d", len(documented), len(h.routes))
	}
	for _, path := range []string{"/", "/v1", "/v1/run", "/v2/runs", "/v1/runs/x1/table/more"} {
		if code, _, body := serve(h, "GET", path, "Bearer "+token, ""); code != http.StatusNotFound || !strings.Contains(body, `"NOT_FOUND"`) {
			t.Errorf("GET %s: %d %s, want 404 in JSON", path, code, body)
		}
	}
	// Each message schema the document names is complete: a Run has its
	// fields, in protojson's proto names.
	run := doc.Components.Schemas["Run"]
	if run == nil || run.Value.Properties["definition_id"] == nil || run.Value.Properties["submitted_at"] == nil {
		t.Errorf("the Run schema lacks fields: %+v", run)
	}
}

// TestRequestErrors checks what the HTTP layer itself refuses, before the
// service: each answer is the JSON error naming the field.
func TestRequestErrors(t *testing.T) {
	h := testHandler(t)
	big := `{"purpose": "` + strings.Repeat("x", 2<<10) + `"}`
	for _, tc := range []struct {
		name, method, path, auth, body string
		code                           int
		field                          string
		hdr                            []string
	}{
		{"no caller", "GET", "/v1/runs", "", "", 401, "", nil},
		{"unknown token", "GET", "/v1/runs", "Bearer nope", "", 401, "", nil},
		{"basic auth", "GET", "/v1/runs", "Basic YTpi", "", 401, "", nil},
		{"unknown query parameter", "GET", "/v1/runs?colour=red", "Bearer " + token, "", 400, "colour", nil},
		{"page size not a number", "GET", "/v1/definitions?page_size=ten", "Bearer " + token, "", 400, "page_size", nil},
		{"page size over 32 bits", "GET", "/v1/runs?page_size=99999999999", "Bearer " + token, "", 400, "page_size", nil},
		{"unknown state", "GET", "/v1/runs?state=finished", "Bearer " + token, "", 400, "state", nil},
		{"negative version", "GET", "/v1/definitions/d?version=-1", "Bearer " + token, "", 400, "version", nil},
		{"bad run id", "GET", "/v1/runs/-x", "Bearer " + token, "", 400, "run_id", nil},
		{"bad table format", "GET", "/v1/runs/run-1/table?format=xlsx", "Bearer " + token, "", 400, "format", nil},
		{"bad JSON", "POST", "/v1/runs", "Bearer " + token, `{"purpose": `, 400, "", nil},
		{"unknown field", "POST", "/v1/runs", "Bearer " + token, `{"purpose": "x", "colour": "red"}`, 400, "colour", nil},
		{"wrong type", "POST", "/v1/runs", "Bearer " + token, `{"purpose": 7}`, 400, "purpose", nil},
		{"not JSON", "POST", "/v1/runs", "Bearer " + token, `{}`, 415, "", []string{"Content-Type", "text/plain"}},
		{"empty body not marked JSON", "POST", "/v1/runs/run-1/cancel", "Bearer " + token, ``, 415, "", []string{"Content-Type", ""}},
		{"a form", "POST", "/v1/runs", "Bearer " + token, `purpose=x`, 415, "", []string{"Content-Type", "application/x-www-form-urlencoded"}},
		{"another site's page", "POST", "/v1/runs/run-1/cancel", "Bearer " + token, `{}`, 403, "", []string{"Sec-Fetch-Site", "cross-site"}},
		{"another origin", "POST", "/v1/runs/run-1/cancel", "Bearer " + token, `{}`, 403, "", []string{"Origin", "https://evil.example"}},
		{"empty body", "POST", "/v1/runs", "Bearer " + token, ``, 400, "", nil},
		{"oversized body", "POST", "/v1/runs", "Bearer " + token, big, 413, "", nil},
		{"cancel another run", "POST", "/v1/runs/run-1/cancel", "Bearer " + token, `{"run_id": "run-2"}`, 400, "run_id", nil},
		// The service behind implements nothing: its answer is mapped.
		{"unimplemented", "GET", "/v1/runs/run-1", "Bearer " + token, "", 501, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := serve(h, tc.method, tc.path, tc.auth, tc.body, tc.hdr...)
			var e struct{ Error Error }
			if err := json.Unmarshal([]byte(body), &e); err != nil || hdr.Get("Content-Type") != mediaJSON {
				t.Fatalf("%d %q: not a JSON error: %v", code, body, err)
			}
			if code != tc.code || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Errorf("%d %+v, want %d", code, e.Error, tc.code)
			}
			if tc.field != "" && !slices.ContainsFunc(e.Error.Violations, func(v Violation) bool { return v.Field == tc.field }) {
				t.Errorf("no violation names %s: %+v", tc.field, e.Error)
			}
			if code == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		c    codes.Code
		want int
		name string
	}{
		{codes.InvalidArgument, 400, "INVALID_ARGUMENT"},
		{codes.FailedPrecondition, 400, "FAILED_PRECONDITION"},
		{codes.Unauthenticated, 401, "UNAUTHENTICATED"},
		{codes.PermissionDenied, 403, "PERMISSION_DENIED"},
		{codes.NotFound, 404, "NOT_FOUND"},
		{codes.AlreadyExists, 409, "ALREADY_EXISTS"},
		{codes.ResourceExhausted, 429, "RESOURCE_EXHAUSTED"},
		{codes.Unimplemented, 501, "UNIMPLEMENTED"},
		{codes.Unavailable, 503, "UNAVAILABLE"},
		{codes.DeadlineExceeded, 504, "DEADLINE_EXCEEDED"},
		{codes.Internal, 500, "INTERNAL"},
		{codes.DataLoss, 500, "DATA_LOSS"},
	} {
		if got := httpStatus(tc.c); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.c, got, tc.want)
		}
		if got := statusName(tc.c); got != tc.name {
			t.Errorf("%v: %s, want %s", tc.c, got, tc.name)
		}
	}
}

func TestViolations(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want []Violation
	}{
		{"page_size is negative", []Violation{{"page_size", "page_size is negative"}}},
		{"run_id: id is empty", []Violation{{"run_id", "run_id: id is empty"}}},
		{"the submission was refused and nothing was stored:\npurpose is required; the bundle's purposes are: a\ndefinition_id is required",
			[]Violation{{"purpose", "purpose is required; the bundle's purposes are: a"}, {"definition_id", "definition_id is required"}}},
		{"parameters of d:\nparameters.min_age: parameter min_age is a int, not a date\n40 parameters, over the limit of 32",
			[]Violation{{"parameters.min_age", "parameters.min_age: parameter min_age is a int, not a date"}, {"", "40 parameters, over the limit of 32"}}},
		{"parameters of statins-chd:\nlookback_days: 5 is below the minimum 28\nunknown parameter \"lookback\" (did you mean lookback_days?)",
			[]Violation{{"parameters.lookback_days", "lookback_days: 5 is below the minimum 28"},
				{"parameters.lookback", "unknown parameter \"lookback\" (did you mean lookback_days?)"}}},
	} {
		if got := violations(tc.msg); !slices.Equal(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.msg, got, tc.want)
		}
	}
}

// slowRuns is a Coordinator service whose WatchRun sends an event, waits,
// and sends another: a run that outlasts the server's timeouts, which a
// real run does only after minutes.
type slowRuns struct {
	havenv1.UnimplementedCoordinatorServer
	gap time.Duration
}

func (s slowRuns) WatchRun(req *havenv1.WatchRunRequest, stream havenv1.Coordinator_WatchRunServer) error {
	for i, st := range []havenv1.RunState{havenv1.RunState_RUN_STATE_RUNNING, havenv1.RunState_RUN_STATE_RELEASED} {
		if i > 0 {
			select {
			case <-time.After(s.gap):
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		}
		if err := stream.Send(&havenv1.RunEvent{Sequence: uint64(i), Run: &havenv1.Run{Id: req.GetRunId(), State: st}}); err != nil {
			return err
		}
	}
	return nil
}

// TestWatchOutlastsTimeouts follows a watch past the HTTP server's read
// and write timeouts, which would otherwise end its context or its
// answer, over HTTP/1.1 and HTTP/2.
func TestWatchOutlastsTimeouts(t *testing.T) {
	sum := sha256.Sum256([]byte(token))
	auth, _ := authn.New([]authn.User{{ID: "ana", Org: "QHM", Roles: []string{"analyst"}, TokenSHA256: hex.EncodeToString(sum[:])}}, nil)
	h, err := New(Config{API: slowRuns{gap: 600 * time.Millisecond}, Releases: noReleases{}, MaxBodyBytes: 1 << 10,
		Limit: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(ctx, req)
		},
		Authenticate: auth.AuthenticateTLS})
	if err != nil {
		t.Fatal(err)
	}
	for _, h2 := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(h)
		srv.Config.ReadTimeout, srv.Config.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
		srv.EnableHTTP2 = h2
		srv.StartTLS()
		req, _ := http.NewRequest("GET", srv.URL+"/v1/runs/run-1/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		if err != nil || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] || strings.Count(string(b), "\n") != 2 || !strings.Contains(string(b), "RUN_STATE_RELEASED") {
			t.Errorf("HTTP/2 %v: %s %v, want both events:\n%s", h2, resp.Proto, err, b)
		}
	}
}

// A server-sent event watch of a quiet run gets comment lines between
// events, which keep a proxy's idle timeout from ending it; a JSON-lines
// watch gets none.
func TestWatchKeepAlive(t *testing.T) {
	sum := sha256.Sum256([]byte(token))
	auth, _ := authn.New([]authn.User{{ID: "ana", Org: "QHM", Roles: []string{"analyst"}, TokenSHA256: hex.EncodeToString(sum[:])}}, nil)
	h, err := New(Config{API: slowRuns{gap: 600 * time.Millisecond}, Releases: noReleases{}, MaxBodyBytes: 1 << 10,
		Limit: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(ctx, req)
		},
		Authenticate: auth.AuthenticateTLS, KeepAlive: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	for _, sse := range []bool{true, false} {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/runs/run-1/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if sse {
			req.Header.Set("Accept", "text/event-stream")
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		comments := strings.Count(body, ": keep-alive\n\n")
		events := strings.Count(body, "RUN_STATE_")
		if err != nil || events != 2 || (sse && comments == 0) || (!sse && comments != 0) {
			t.Errorf("server-sent events %v: %d events, %d keep-alive comments, %v:\n%s", sse, events, comments, err, body)
		}
		if sse && strings.Index(body, ": keep-alive") < strings.Index(body, "RUN_STATE_RUNNING") {
			t.Errorf("a keep-alive comment came before the first event:\n%s", body)
		}
	}
}
