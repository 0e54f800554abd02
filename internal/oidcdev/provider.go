package oidcdev

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// loginPath is the provider's own sign-in page; the op package sends the
// browser there with the auth request's id.
const loginPath = "/login"

// New returns the provider's HTTP handler for issuer, the URL it is
// reached at (scheme, host and port; no path). An http issuer is allowed
// only on a loopback address, for tests and a demo on one machine.
func New(cfg *Config, issuer string, log *slog.Logger) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("issuer %q: want scheme://host:port with no path", issuer)
	}
	opts := []op.Option{}
	switch u.Scheme {
	case "https":
	case "http":
		if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("issuer %q: plain http is allowed only on a loopback address; give a TLS certificate", issuer)
		}
		opts = append(opts, op.WithAllowInsecure())
	default:
		return nil, fmt.Errorf("issuer %q: want https (or http on loopback)", issuer)
	}
	// The op package logs to slog's default logger; log is this
	// package's own (sign-ins).
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	st, err := newStorage(cfg, key)
	if err != nil {
		return nil, err
	}
	// CryptoKey encrypts the op package's opaque tokens; it lives as long
	// as the process, like everything else here.
	var crypto [32]byte
	rand.Read(crypto[:])
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:          crypto,
		CodeMethodS256:     true,
		SupportedUILocales: []language.Tag{language.BritishEnglish},
	}, st, op.StaticIssuer(issuer), opts...)
	if err != nil {
		return nil, fmt.Errorf("OpenID provider: %w", err)
	}
	l := &loginPage{st: st, callback: op.AuthCallbackURL(provider), log: log}
	mux := http.NewServeMux()
	// The sign-in form is protected against cross-site posts as the
	// portal's forms are.
	mux.Handle("GET "+loginPath, http.HandlerFunc(l.show))
	mux.Handle("POST "+loginPath, http.NewCrossOriginProtection().Handler(
		op.NewIssuerInterceptor(provider.IssuerFromRequest).HandlerFunc(l.submit)))
	mux.Handle("/", provider)
	// The sign-in form's post ends in a redirect to a client, and
	// browsers hold redirects after a form to its form-action too.
	formAction := []string{"'self'"}
	for _, c := range cfg.Clients {
		for _, r := range c.RedirectURIs {
			if u, err := url.Parse(r); err == nil && !slices.Contains(formAction, u.Scheme+"://"+u.Host) {
				formAction = append(formAction, u.Scheme+"://"+u.Host)
			}
		}
	}
	return headers(mux, strings.Join(formAction, " ")), nil
}

// headers adds what every answer carries: nothing of the provider's may
// be framed (clickjacking of the sign-in form) or sniffed, and its form
// may post only to itself and lead only to its clients.
func headers(h http.Handler, formAction string) http.Handler {
	csp := "default-src 'none'; style-src 'unsafe-inline'; form-action " + formAction + "; frame-ancestors 'none'; base-uri 'none'"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", csp)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

type loginPage struct {
	st       *storage
	callback func(context.Context, string) string
	log      *slog.Logger
}

var loginTemplate = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en-GB">
<head><meta charset="utf-8"><title>Sign in – Haven development identity provider</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: Arial, sans-serif; margin: 0; color: #212b32; background: #f0f4f5; }
header { background: #005eb8; color: #fff; padding: 16px 24px; font-weight: bold; }
main { max-width: 420px; margin: 32px auto; background: #fff; padding: 24px; }
label { display: block; font-weight: bold; margin: 16px 0 4px; }
input { font-size: 1.1em; width: 100%; box-sizing: border-box; padding: 6px; border: 2px solid #4c6272; }
button { margin-top: 24px; font-size: 1.1em; background: #007f3b; color: #fff; border: 0; padding: 10px 18px; }
.error { color: #d5281b; font-weight: bold; border-left: 4px solid #d5281b; padding-left: 12px; }
p.note { color: #4c6272; font-size: 0.9em; }
</style></head>
<body><header>Haven development identity provider</header>
<main>
<h1>Sign in</h1>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<input type="hidden" name="id" value="{{.ID}}">
<label for="username">Username</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button>
</form>
<p class="note">For demonstrations and tests only: the users are synthetic and listed in this provider's configuration.</p>
</main></body></html>
`))

func (l *loginPage) render(w http.ResponseWriter, status int, id, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	loginTemplate.Execute(w, map[string]string{"ID": id, "Error": msg})
}

func (l *loginPage) show(w http.ResponseWriter, r *http.Request) {
	l.render(w, http.StatusOK, r.URL.Query().Get("id"), "")
}

func (l *loginPage) submit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, user := r.PostForm.Get("id"), r.PostForm.Get("username")
	if err := l.st.login(id, user, r.PostForm.Get("password")); err != nil {
		l.log.Info("sign-in refused", "username", user)
		l.render(w, http.StatusUnauthorized, id, err.Error())
		return
	}
	l.log.Info("signed in", "username", user)
	http.Redirect(w, r, l.callback(r.Context(), id), http.StatusFound)
}
