package portal

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/havenhealth/haven/coordinator/authn"
)

type ctxKey struct{}

// signedIn serves h to a signed-in person and sends anyone else to sign in,
// back to the page they asked for. A cookie that does not decode (forged,
// from another key, or past its age) is as good as none, and is cleared.
func (p *Portal) signedIn(h func(http.ResponseWriter, *http.Request, session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := p.cookies.readSession(r, time.Now())
		if err != nil {
			if _, none := r.Cookie(sessionCookie); none == nil { // one was sent, and refused
				p.cfg.Log.LogAttrs(r.Context(), slog.LevelInfo, "portal: session cookie refused", slog.String("path", r.URL.Path),
					slog.String("why", err.Error()))
				clearCookie(w, sessionCookie)
			}
			if r.Method != http.MethodGet {
				p.page(w, r, http.StatusUnauthorized, "error.html", nil, map[string]any{"Title": "Sign in again",
					"Message": "Your sign-in has ended. Sign in again and repeat what you were doing."})
				return
			}
			http.Redirect(w, r, "/auth/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)), s)
	})
}

// principal is the signed-in person as the commissioner API knows callers.
func (p *Portal) principal(s session) authn.Principal {
	return p.cfg.Principal(s.User, s.Org, s.Roles, "oidc")
}

func (p *Portal) home(w http.ResponseWriter, r *http.Request) {
	if _, err := p.cookies.readSession(r, time.Now()); err == nil {
		http.Redirect(w, r, "/catalogue", http.StatusSeeOther)
		return
	}
	p.page(w, r, http.StatusOK, "home.html", nil, map[string]any{"Title": "Sign in", "SignedOut": r.URL.Query().Has("signed-out")})
}

// localPath is a path on this site to return to after signing in: it
// must not lead elsewhere (//host, /\host, a scheme).
var localPath = regexp.MustCompile(`^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$`)

func safeNext(next string) string {
	if !localPath.MatchString(next) || strings.HasPrefix(next, "//") || len(next) > 512 {
		return "/catalogue"
	}
	return next
}

// login starts a sign-in: a fresh state, nonce and PKCE verifier, kept in
// a short-lived cookie for the callback, and the browser sent to the
// provider.
func (p *Portal) login(w http.ResponseWriter, r *http.Request) {
	conf, _, err := p.oauth(r.Context())
	if err != nil {
		p.cfg.Log.LogAttrs(r.Context(), slog.LevelError, "portal: OpenID discovery failed", slog.String("issuer", p.cfg.OIDC.Issuer),
			slog.String("error", err.Error()))
		p.page(w, r, http.StatusBadGateway, "error.html", nil, map[string]any{"Title": "Sign-in is unavailable",
			"Message": "The portal cannot reach the identity provider just now. Try again in a few minutes."})
		return
	}
	st := loginState{State: rand.Text(), Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier(), Next: safeNext(r.URL.Query().Get("next"))}
	if err := p.cookies.setLogin(w, st); err != nil {
		p.fail(w, r, "start sign-in", err)
		return
	}
	http.Redirect(w, r, conf.AuthCodeURL(st.State, oidc.Nonce(st.Nonce), oauth2.S256ChallengeOption(st.Verifier)), http.StatusFound)
}

// callback finishes a sign-in: the state must be the one this browser
// was sent with, the code is exchanged with its PKCE verifier, and the ID
// token must verify (issuer, audience, signature, expiry) and carry the
// nonce. Its claims give the session's user, organisation and roles.
func (p *Portal) callback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	refuse := func(why string, attrs ...slog.Attr) {
		p.cfg.Log.LogAttrs(ctx, slog.LevelWarn, "portal: sign-in refused", append(attrs, slog.String("why", why))...)
		p.page(w, r, http.StatusForbidden, "error.html", nil, map[string]any{"Title": "Sign-in failed", "Message": why, "Retry": true})
	}
	st, err := p.cookies.readLogin(r)
	clearCookie(w, loginCookie)
	if err != nil {
		refuse("This sign-in was not started here, or took longer than 10 minutes.")
		return
	}
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(st.State)) != 1 {
		refuse("The identity provider's answer does not belong to this sign-in.")
		return
	}
	if e := q.Get("error"); e != "" {
		refuse("The identity provider refused the sign-in.", slog.String("error", e), slog.String("description", q.Get("error_description")))
		return
	}
	conf, verifier, err := p.oauth(ctx)
	if err != nil {
		p.fail(w, r, "reach the identity provider", err)
		return
	}
	octx := oidc.ClientContext(ctx, p.cfg.HTTPClient)
	tok, err := conf.Exchange(octx, q.Get("code"), oauth2.VerifierOption(st.Verifier))
	if err != nil {
		refuse("The identity provider would not confirm the sign-in.", slog.String("error", err.Error()))
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := verifier.Verify(octx, raw)
	if err != nil {
		refuse("The identity provider's token did not verify.", slog.String("error", err.Error()))
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		refuse("The identity provider's token was not issued for this sign-in.")
		return
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		refuse("The identity provider's token is unreadable.", slog.String("error", err.Error()))
		return
	}
	s, why := p.sessionOf(idt.Subject, claims)
	if why != "" {
		refuse(why, slog.String("subject", idt.Subject))
		return
	}
	s.Expires = time.Now().Add(p.cfg.SessionMaxAge).Unix()
	if err := p.cookies.setSession(w, s); err != nil {
		p.fail(w, r, "start the session", err)
		return
	}
	p.cfg.Log.LogAttrs(ctx, slog.LevelInfo, "portal: signed in", slog.String("user", s.User), slog.String("org", s.Org),
		slog.Any("roles", s.Roles))
	http.Redirect(w, r, st.Next, http.StatusSeeOther)
}

// idPattern is what a user id and an organisation code from a claim must
// look like, as in the coordinator's configuration.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// sessionOf reads who signed in from the ID token's claims, mapping roles
// through the configured role map; why says, for the person, what is
// missing when they cannot be signed in.
func (p *Portal) sessionOf(subject string, claims map[string]any) (s session, why string) {
	o := p.cfg.OIDC
	if o.UserClaim == "sub" {
		s.User = subject
	} else {
		s.User, _ = claims[o.UserClaim].(string)
	}
	s.Name, _ = claims[o.NameClaim].(string)
	if !idPattern.MatchString(s.User) {
		return s, fmt.Sprintf("Your account has no usable user id (claim %s).", o.UserClaim)
	}
	// Each role the provider states, with the names it may go by in the
	// role map (for CIS2, its whole code and its R code).
	var roles [][]string
	if o.SelectedRoleClaim != "" {
		org, code, why := selectedRole(claims, o.RolesClaim, o.SelectedRoleClaim)
		if why != "" {
			return s, why
		}
		s.Org = org
		names := []string{code}
		if i := strings.LastIndexByte(code, ':'); i >= 0 {
			names = append(names, code[i+1:])
		}
		roles = append(roles, names)
	} else {
		s.Org, _ = claims[o.OrgClaim].(string)
		switch v := claims[o.RolesClaim].(type) {
		case string:
			for _, r := range strings.Fields(v) {
				roles = append(roles, []string{r})
			}
		case []any:
			for _, r := range v {
				if name, ok := r.(string); ok {
					roles = append(roles, []string{name})
				}
			}
		}
	}
	if !idPattern.MatchString(s.Org) {
		claim := o.OrgClaim
		if o.SelectedRoleClaim != "" {
			claim = o.RolesClaim + ", the selected role's org_code"
		}
		return s, fmt.Sprintf("Your account names no organisation (claim %s), so the portal cannot tell whose runs you may see.", claim)
	}
	for _, names := range roles {
		r := names[0]
		if o.RoleMap != nil {
			r = ""
			for _, n := range names {
				if r = o.RoleMap[n]; r != "" {
					break
				}
			}
			if r == "" {
				continue
			}
		}
		if idPattern.MatchString(r) && !slices.Contains(s.Roles, r) {
			s.Roles = append(s.Roles, r)
		}
	}
	if len(s.Roles) == 0 {
		return s, fmt.Sprintf("Your account has no role that Haven knows (claim %s).", o.RolesClaim)
	}
	slices.Sort(s.Roles)
	if len(s.Name) > 128 {
		s.Name = s.Name[:128]
	}
	return s, ""
}

// selectedRole finds, in CIS2's list of role objects (claim list), the
// one claim selected names by its person_roleid, and returns its
// organisation (org_code) and role code (role_code); why says what is
// missing for the person.
func selectedRole(claims map[string]any, list, selected string) (org, code, why string) {
	id, _ := claims[selected].(string)
	if id == "" {
		return "", "", fmt.Sprintf("Your sign-in names no selected role (claim %s): choose a role when you sign in.", selected)
	}
	objs, _ := claims[list].([]any)
	for _, o := range objs {
		role, ok := o.(map[string]any)
		if !ok || role["person_roleid"] != id {
			continue
		}
		org, _ = role["org_code"].(string)
		code, _ = role["role_code"].(string)
		if code == "" {
			return "", "", fmt.Sprintf("Your selected role has no role code (claim %s).", list)
		}
		return org, code, ""
	}
	return "", "", fmt.Sprintf("Your selected role is not among your roles (claim %s).", list)
}

// logout ends the session here. The provider's own session, if it keeps
// one, is the provider's.
func (p *Portal) logout(w http.ResponseWriter, r *http.Request) {
	clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/?signed-out", http.StatusSeeOther)
}
