// Package portal is the commissioners' web portal: the approved catalogue,
// a form to submit a run of a definition, each run's progress and its
// released table, and lists of one's own runs and one's organisation's.
// Pages are server-rendered (html/template) in the NHS design system's
// look (nhsuk-frontend, embedded under static/nhsuk). The only script is
// the design system's own, started by static/portal.js; every page works
// without it, and a run's page follows the run with a meta refresh.
//
// People sign in with OpenID Connect (auth.go): the authorization code
// flow with PKCE, state and nonce checked and the ID token verified
// (github.com/coreos/go-oidc with golang.org/x/oauth2). The configured
// claims give the person's user id, organisation and roles, and the
// portal then acts as that principal (coordinator/authn) by calling the
// commissioner API's own service (coordinator/api) in process, through
// the same request-size limit the gRPC server applies, so the same
// validation, governance policy, access rules (coordinator/access) and
// limits apply to a browser as to `haven query`. There is no second
// validation path: a form's values are parsed by the client package's
// parser and every other check is the API's, whose errors are shown next
// to the fields they name.
//
// The session is a cookie, signed and encrypted (gorilla/securecookie),
// Secure, HttpOnly, SameSite=Lax and expiring. Forms are protected from
// cross-site request forgery by net/http's CrossOriginProtection, which
// refuses a state-changing request that the browser marks as coming from
// another origin (Sec-Fetch-Site, or Origin for older browsers): it needs
// no token in each form or state on the server, and with SameSite=Lax
// cookies it closes the cross-site POST route a token would.
package portal

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"google.golang.org/grpc"

	"github.com/havenhealth/haven/coordinator/authn"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// Releases serves released tables (dispatch.Dispatcher): the table of a
// run as Arrow IPC, if p may fetch it; its errors are gRPC statuses.
type Releases interface {
	Release(ctx context.Context, p authn.Principal, runID string) ([]byte, error)
}

// OIDC is the OpenID provider and the portal's registration with it.
type OIDC struct {
	Issuer, ClientID, ClientSecret string
	// Scopes asked for; openid among them.
	Scopes []string
	// Claim names of the user id ("sub" for the subject), organisation,
	// roles and display name.
	UserClaim, OrgClaim, RolesClaim, NameClaim string
	// SelectedRoleClaim, when set, reads RolesClaim as CIS2's list of
	// role objects and takes the organisation and role from the one this
	// claim names (config.PortalClaims.SelectedRole).
	SelectedRoleClaim string
	// RoleMap maps the provider's roles to Haven's; nil takes them as
	// they are.
	RoleMap map[string]string
}

// Config is what a portal needs.
type Config struct {
	// API is the commissioner API's service (api.Server), called in
	// process as the signed-in principal.
	API havenv1.CoordinatorServer
	// Limit is the gRPC server's unary interceptor for the commissioner
	// API's request limits (api.UnaryLimit); every call passes it.
	Limit grpc.UnaryServerInterceptor
	// Releases gives released tables.
	Releases Releases
	// Principal makes the principal of a signed-in person
	// (authn.Authenticator.User), operator roles included.
	Principal func(id, org string, roles []string, method string) authn.Principal
	OIDC      OIDC
	// BaseURL is the portal's public address, https://host[:port]; the
	// redirect URI is BaseURL + "/auth/callback".
	BaseURL string
	// SessionKey is the secret the cookie keys are derived from, at
	// least 32 bytes; SessionMaxAge how long a sign-in lasts.
	SessionKey    []byte
	SessionMaxAge time.Duration
	// FlightAddress is host:port of the coordinator's gRPC port as the
	// person's own tools reach it, for the run page's Python snippet.
	FlightAddress string
	// HTTPClient reaches the OpenID provider; nil is a default client
	// with a timeout.
	HTTPClient *http.Client
	Log        *slog.Logger
}

// CallbackPath is where the OpenID provider sends people back to.
const CallbackPath = "/auth/callback"

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Portal serves the portal's pages.
type Portal struct {
	cfg     Config
	mux     *http.ServeMux
	handler http.Handler
	cookies *cookies
	pages   *template.Template

	mu       sync.Mutex
	provider *oidc.Provider // discovered at the first sign-in
}

// New returns the portal's handler. It does not reach the OpenID provider:
// discovery happens at the first sign-in and is retried until it works,
// so a provider that starts after the coordinator is not an error.
func New(cfg Config) (*Portal, error) {
	switch {
	case cfg.API == nil || cfg.Releases == nil || cfg.Principal == nil || cfg.Limit == nil:
		return nil, errors.New("portal: the API, its limit, releases and a principal maker are required")
	case cfg.OIDC.Issuer == "" || cfg.OIDC.ClientID == "" || cfg.OIDC.ClientSecret == "":
		return nil, errors.New("portal: the OpenID issuer, client id and secret are required")
	}
	if u, err := url.Parse(cfg.BaseURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("portal: the base URL must be https://host[:port]")
	}
	cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.SessionMaxAge <= 0 {
		cfg.SessionMaxAge = 8 * time.Hour
	}
	if cfg.OIDC.UserClaim == "" {
		cfg.OIDC.UserClaim = "sub"
	}
	ck, err := newCookies(cfg.SessionKey, cfg.SessionMaxAge)
	if err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	p := &Portal{cfg: cfg, mux: http.NewServeMux(), cookies: ck, pages: pages}
	p.routes()
	// Every unsafe request (POST) must come from the portal's own pages.
	p.handler = http.NewCrossOriginProtection().Handler(p.mux)
	return p, nil
}

func (p *Portal) routes() {
	m := p.mux
	m.HandleFunc("GET /{$}", p.home)
	m.HandleFunc("GET /auth/login", p.login)
	m.HandleFunc("GET "+CallbackPath, p.callback)
	m.HandleFunc("POST /auth/logout", p.logout)
	m.Handle("GET /catalogue", p.signedIn(p.catalogue))
	m.Handle("GET /definitions/{id}", p.signedIn(p.submitForm))
	m.Handle("POST /definitions/{id}", p.signedIn(p.submit))
	m.Handle("GET /runs", p.signedIn(p.runs))
	m.Handle("GET /runs/{id}", p.signedIn(p.run))
	m.Handle("GET /runs/{id}/table.csv", p.signedIn(p.downloadCSV))
	m.Handle("GET /runs/{id}/table.arrow", p.signedIn(p.downloadArrow))
	static, _ := fs.Sub(staticFiles, "static")
	files := http.FileServerFS(static)
	m.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})))
	m.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, staticFiles, "static/nhsuk/assets/images/favicon.ico")
	})
}

// ServeHTTP serves the portal with its security headers: nothing on a
// page may load from elsewhere, run inline script, be framed or post
// anywhere but back to the portal.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	p.handler.ServeHTTP(w, r)
}

// oauth returns the OAuth 2 configuration and ID token verifier, reading
// the provider's discovery document the first time.
func (p *Portal) oauth(ctx context.Context) (*oauth2.Config, *oidc.IDTokenVerifier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.provider == nil {
		prov, err := oidc.NewProvider(oidc.ClientContext(ctx, p.cfg.HTTPClient), p.cfg.OIDC.Issuer)
		if err != nil {
			return nil, nil, err
		}
		p.provider = prov
	}
	conf := &oauth2.Config{ClientID: p.cfg.OIDC.ClientID, ClientSecret: p.cfg.OIDC.ClientSecret, Endpoint: p.provider.Endpoint(),
		RedirectURL: p.cfg.BaseURL + CallbackPath, Scopes: p.cfg.OIDC.Scopes}
	return conf, p.provider.Verifier(&oidc.Config{ClientID: p.cfg.OIDC.ClientID}), nil
}
