// Package httpapi is the commissioner API over HTTP and JSON: the same
// service as the gRPC Coordinator API (coordinator/api), for tools that
// speak HTTP and not gRPC (curl, R's httr, Excel's Power Query, a
// browser's fetch). It serves the approved catalogue, submitting,
// reading, watching, cancelling and listing runs, and the released table
// as JSON, CSV or Arrow IPC, and describes itself in an OpenAPI 3
// document at GET /v1/openapi.json.
//
// Why a small net/http layer and not grpc-gateway or connect-go: the API
// is seven methods and one download, and every one of them must pass the
// coordinator's own authentication (mutual TLS or a bearer token,
// coordinator/authn), its request limit (api.UnaryLimit) and its
// validation, and answer the gRPC API's errors as HTTP ones. Go's router
// (method patterns) and protojson do all of it over the same in-process
// service the portal already calls, with no generated code, no second
// protoc plugin chain, no HTTP annotations in the .proto and no new
// module dependency. The OpenAPI document is built from the same route
// table the router is (openapi.go), with each body's schema read from the
// protobuf descriptors of the messages the handlers encode, so the
// document cannot drift from the routes or the messages.
//
// A browser holding a user certificate presents it to any site's request,
// so the API refuses what a page on another site could send it: a POST
// marked cross-origin (http.CrossOriginProtection) and any POST that is
// not application/json, which a form cannot be and a script cannot send
// cross-origin without the browser asking first.
//
// Authentication is the gRPC port's: the HTTP API is served with the
// coordinator's TLS configuration (a client certificate verified against
// the network CA if offered), and each request's caller is the user its
// verified certificate names, or the user of its "Authorization: Bearer"
// token, by the same authenticator (authn.Authenticator.AuthenticateTLS).
// A request with neither is answered 401; a node's certificate 403. Only
// the OpenAPI document is served without a caller: it describes the API
// and holds nothing else.
//
// Limits are the gRPC API's: a body over the request limit is refused
// with 413 before it is decoded, every call passes the same unary limit
// interceptor, and submissions are counted by the same admission
// controller inside the service (a requester past the bundle's limits is
// answered 429). Errors are the gRPC status mapped to HTTP (InvalidArgument
// 400, Unauthenticated 401, PermissionDenied 403, NotFound 404,
// ResourceExhausted 429, ...) with a JSON body naming what was wrong.
package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/coordinator/authn"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// Releases serves released tables (dispatch.Dispatcher): the table of a
// run as Arrow IPC, if p may fetch it, by the rule Flight DoGet applies;
// its errors are gRPC statuses.
type Releases interface {
	Release(ctx context.Context, p authn.Principal, runID string) ([]byte, error)
}

// Config is what the HTTP API needs.
type Config struct {
	// API is the commissioner API's service (api.Server), called in
	// process as the authenticated caller.
	API havenv1.CoordinatorServer
	// Limit is the gRPC server's unary interceptor for the commissioner
	// API's request limits (api.UnaryLimit); every unary call passes it.
	Limit grpc.UnaryServerInterceptor
	// MaxBodyBytes caps a request body (api.MaxRequestBytes); a larger
	// one is answered 413 unread.
	MaxBodyBytes int64
	// Releases gives released tables.
	Releases Releases
	// Authenticate identifies a caller by its TLS connection and its
	// Authorization header values (authn.Authenticator.AuthenticateTLS).
	Authenticate func(state *tls.ConnectionState, authorization []string) (authn.Principal, error)
	// KeepAlive is how often a watch sent as server-sent events gets a
	// comment line while the run is quiet, so that a proxy's idle timeout
	// does not end a long watch (JSON lines get none: a blank line is not
	// JSON); zero means 15 s.
	KeepAlive time.Duration
	Log       *slog.Logger
}

// Handler serves the HTTP API.
type Handler struct {
	cfg    Config
	mux    *http.ServeMux
	routes []route
	// csrf refuses a POST a browser marks as cross-origin.
	csrf *http.CrossOriginProtection
}

// New returns the HTTP API's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.API == nil || cfg.Limit == nil || cfg.Releases == nil || cfg.Authenticate == nil || cfg.MaxBodyBytes <= 0 {
		return nil, errors.New("httpapi: the API, its limit, a body limit, releases and an authenticator are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), csrf: http.NewCrossOriginProtection()}
	h.csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "PERMISSION_DENIED", "a cross-origin request from a browser is refused: the API is for programs, not for other sites' pages", nil)
	}))
	h.routes = h.table()
	for _, rt := range h.routes {
		hf := rt.handle
		if !rt.public {
			hf = h.authenticated(rt.handle)
		}
		h.mux.HandleFunc(rt.method+" "+rt.path, hf)
	}
	return h, nil
}

// ServeHTTP serves the API. Every answer is marked not to be cached or
// sniffed: it is one caller's view of the coordinator.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	if r.TLS != nil {
		hd.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		h.unrouted(w, r)
		return
	}
	// A browser that holds a user certificate would present it to any
	// page's request: a POST another site's page makes is refused, by
	// the browser's own Sec-Fetch-Site or Origin header, and every POST
	// must say it is JSON, which no cross-site form can.
	if err := h.csrf.Check(r); err != nil {
		h.csrf.Handler(nil).ServeHTTP(w, r) // answers with the deny handler
		return
	}
	h.mux.ServeHTTP(w, r)
}

// unrouted answers a request no route serves, in the API's JSON: 405
// naming the allowed methods when the path is served, 404 otherwise.
func (h *Handler) unrouted(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		for _, m := range allowed {
			w.Header().Add("Allow", m)
		}
		writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", r.Method+" is not served on "+r.URL.Path, nil)
		return
	}
	writeError(w, http.StatusNotFound, "NOT_FOUND", "no route "+r.URL.Path+"; GET /v1/openapi.json lists them", nil)
}

// authenticated serves next with the caller's principal in the request's
// context, and refuses a request without a user's proof of identity.
func (h *Handler) authenticated(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := h.cfg.Authenticate(r.TLS, r.Header.Values("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="haven"`)
			h.fail(w, r, status.Error(codes.Unauthenticated, err.Error()))
			return
		}
		if p.Kind != authn.KindUser {
			h.fail(w, r, status.Errorf(codes.PermissionDenied, "the commissioner API is for users; the caller presented a node certificate (site %s)", p.ODS))
			return
		}
		next(w, r.WithContext(authn.NewContext(r.Context(), p)))
	}
}

// caller is the principal authenticated put in the request's context.
func caller(r *http.Request) authn.Principal {
	p, _ := authn.FromContext(r.Context())
	return p
}
