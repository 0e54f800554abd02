// Package portaltest signs a person in to the commissioners' portal as a
// browser does, through the development OpenID provider's sign-in form
// (internal/oidcdev), for tests that then look at the portal's pages
// over plain HTTP. Tests that need a real browser use internal/browsertest.
package portaltest

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/havenhealth/haven/internal/pki"
)

// Site is where a portal and its OpenID provider are.
type Site struct {
	// URL is the portal's address, without a trailing slash.
	URL string
	// Issuer is the development OpenID provider's issuer.
	Issuer string
	// CAFile is the CA certificate the portal's certificate chains to.
	CAFile string
	// ServerName, if set, is the name checked in the portal's
	// certificate instead of URL's host.
	ServerName string
}

// User is an HTTP client holding a portal session cookie.
type User struct {
	tb   testing.TB
	Base string
	c    *http.Client
}

// SignIn signs username in with password and returns a client with the
// session cookie. It fails the test if the sign-in does not end on the
// portal's runs page.
func SignIn(tb testing.TB, s Site, username, password string) *User {
	tb.Helper()
	pool, err := pki.CertPool(s.CAFile)
	if err != nil {
		tb.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: s.ServerName, MinVersion: tls.VersionTLS12}}}
	u := &User{tb: tb, Base: s.URL, c: c}
	// The portal sends the browser to the provider, which shows its form.
	resp, err := c.Get(u.Base + "/auth/login?next=/runs")
	if err != nil {
		tb.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="id" value="([^"]+)"`).FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil || !strings.HasPrefix(resp.Request.URL.String(), s.Issuer+"/login") {
		tb.Fatalf("sign-in did not reach the provider's form: %s %s\n%s", resp.Status, resp.Request.URL, page)
	}
	resp, err = c.PostForm(s.Issuer+"/login", url.Values{"id": {string(m[1])}, "username": {username}, "password": {password}})
	if err != nil {
		tb.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.String() != u.Base+"/runs" {
		tb.Fatalf("signing in as %s ended at %s with %s:\n%s", username, resp.Request.URL, resp.Status, page)
	}
	return u
}

// Do sends a request and returns the status, headers and body; it does
// not follow redirects, so a redirect to sign in is seen as one.
func (u *User) Do(req *http.Request) (int, http.Header, string) {
	u.tb.Helper()
	c := *u.c
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		u.tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// Get gets the portal's page at path.
func (u *User) Get(path string) (int, string) {
	u.tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.Base+path, nil)
	code, _, body := u.Do(req)
	return code, body
}

// Client is the signed-in HTTP client, cookie jar and all.
func (u *User) Client() *http.Client { return u.c }

// Anonymous is a client of the same portal with no session: what a
// browser that has not signed in sends.
func (u *User) Anonymous() *User {
	return &User{tb: u.tb, Base: u.Base, c: &http.Client{Transport: u.c.Transport, Timeout: u.c.Timeout}}
}
