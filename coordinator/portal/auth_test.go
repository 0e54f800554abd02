package portal

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/internal/oidcdev"
	"github.com/havenhealth/haven/internal/oidcdev/oidcdevtest"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

type noReleases struct{}

func (noReleases) Release(context.Context, authn.Principal, string) ([]byte, error) { return nil, nil }

// authPortal serves a portal, signing people in through a development
// OpenID provider; its API answers nothing (sign-in needs none).
func authPortal(t *testing.T) (base string, c *http.Client, issuer string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	base = "https://" + srv.Listener.Addr().String()
	issuer = oidcdevtest.Start(t, &oidcdev.Config{
		Clients: []oidcdev.Client{{ID: "haven-portal", Secret: "portal-secret-0123456789", RedirectURIs: []string{base + CallbackPath}}},
		Users:   []oidcdev.User{{ID: "ana", Username: "ana", Password: "pw", Org: "QHM", Roles: []string{"analyst"}}},
	})
	p, err := New(Config{API: havenv1.UnimplementedCoordinatorServer{}, Releases: noReleases{},
		Limit: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(ctx, req)
		},
		Principal: func(id, org string, roles []string, method string) authn.Principal {
			return authn.Principal{Kind: authn.KindUser, ID: id, Org: org, Roles: roles, Method: method}
		},
		OIDC: OIDC{Issuer: issuer, ClientID: "haven-portal", ClientSecret: "portal-secret-0123456789", Scopes: []string{"openid"},
			UserClaim: "sub", OrgClaim: oidcdev.ClaimOrg, RolesClaim: oidcdev.ClaimRoles, NameClaim: "name"},
		BaseURL: base, SessionKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = p
	srv.StartTLS()
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	c = srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return base, c, issuer
}

func get(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// startLogin begins a sign-in and signs in at the provider, returning the
// callback URL the provider sends the browser back to.
func startLogin(t *testing.T, base string, c *http.Client, issuer string) *url.URL {
	t.Helper()
	resp := get(t, c, base+"/auth/login?next=/runs")
	auth, _ := resp.Location()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(auth.String(), issuer) {
		t.Fatalf("sign-in start: %d %v", resp.StatusCode, auth)
	}
	q := auth.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" {
		t.Errorf("the authorization request lacks PKCE, state or nonce: %v", q)
	}
	resp = get(t, c, auth.String())
	form, _ := resp.Location()
	resp, err := c.PostForm(issuer+"/login", url.Values{"id": {form.Query().Get("id")}, "username": {"ana"}, "password": {"pw"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	next, _ := resp.Location()
	resp = get(t, c, next.String())
	cb, _ := resp.Location()
	if cb == nil || !strings.HasPrefix(cb.String(), base+CallbackPath) {
		t.Fatalf("the provider did not send the browser back: %d %v", resp.StatusCode, cb)
	}
	return cb
}

// The callback signs in only the browser that started the sign-in, with
// the state it was sent with; the session cookie lets it in, and signing
// out ends it.
func TestSignIn(t *testing.T) {
	t.Parallel()
	base, c, issuer := authPortal(t)
	if resp := get(t, c, base+"/runs"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/auth/login?next=") {
		t.Errorf("signed out, /runs answered %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	// A callback with another state is refused.
	cb := startLogin(t, base, c, issuer)
	bad := *cb
	q := bad.Query()
	q.Set("state", "not-the-state")
	bad.RawQuery = q.Encode()
	if resp := get(t, c, bad.String()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a callback with another state answered %d", resp.StatusCode)
	}
	// The login cookie is spent: the right callback now fails too.
	if resp := get(t, c, cb.String()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a callback after the sign-in was spent answered %d", resp.StatusCode)
	}

	// Another browser (no login cookie) cannot use a callback.
	cb = startLogin(t, base, c, issuer)
	other := *c
	other.Jar, _ = cookiejar.New(nil)
	if resp := get(t, &other, cb.String()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a callback in another browser answered %d", resp.StatusCode)
	}

	// The provider's error is shown, not followed.
	cb = startLogin(t, base, c, issuer)
	errCB := *cb
	q = url.Values{"state": {cb.Query().Get("state")}, "error": {"access_denied"}}
	errCB.RawQuery = q.Encode()
	if resp := get(t, c, errCB.String()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an error callback answered %d", resp.StatusCode)
	}

	// A good sign-in goes back where it started, signed in.
	cb = startLogin(t, base, c, issuer)
	resp := get(t, c, cb.String())
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/runs" {
		t.Fatalf("the callback answered %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = get(t, c, base+"/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/catalogue" {
		t.Errorf("signed in, / answered %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Signing out is a form post from the portal's own page.
	req, _ := http.NewRequest(http.MethodPost, base+"/auth/logout", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site sign-out: %v %v", resp.StatusCode, err)
	}
	req, _ = http.NewRequest(http.MethodPost, base+"/auth/logout", nil)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %v %v", resp, err)
	}
	if resp := get(t, c, base+"/"); resp.StatusCode != http.StatusOK {
		t.Errorf("after signing out, / answered %d", resp.StatusCode)
	}
}
