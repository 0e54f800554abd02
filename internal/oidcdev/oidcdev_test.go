package oidcdev_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/havenhealth/haven/internal/oidcdev"
	"github.com/havenhealth/haven/internal/oidcdev/oidcdevtest"
)

const redirect = "https://portal.test/auth/callback"

func testConfig() *oidcdev.Config {
	return &oidcdev.Config{
		Clients: []oidcdev.Client{{ID: "haven-portal", Secret: "portal-secret-0123456789", RedirectURIs: []string{redirect}}},
		Users:   []oidcdev.User{{ID: "ana", Username: "ana", Password: "ana-pw", Name: "Ana Analyst", Org: "QHM", Roles: []string{"analyst"}}},
	}
}

// noRedirects is a client that shows each redirect instead of following it,
// so the test walks the flow a browser would.
var noRedirects = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// login walks a browser through the provider from authURL: the redirect to
// the sign-in page, the form posted with the password, the redirect back to
// the client. It returns the callback URL with its query, or the sign-in
// page's status when the provider refused.
func login(t *testing.T, issuer, authURL, password string) (*url.URL, int) {
	t.Helper()
	resp, err := noRedirects.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	if resp.StatusCode != http.StatusFound || loc == nil {
		return loc, resp.StatusCode
	}
	if !strings.HasPrefix(loc.Path, "/login") {
		return loc, resp.StatusCode
	}
	form := url.Values{"id": {loc.Query().Get("id")}, "username": {"ana"}, "password": {password}}
	req, _ := http.NewRequest(http.MethodPost, issuer+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", issuer)
	if resp, err = noRedirects.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return nil, resp.StatusCode
	}
	loc, _ = resp.Location()
	// The provider's own callback, which issues the code.
	if resp, err = noRedirects.Get(loc.String()); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ = resp.Location()
	return loc, resp.StatusCode
}

// TestCodeFlowWithPKCE signs in as a relying party does, with
// golang.org/x/oauth2 and go-oidc: discovery, the authorization code flow
// with PKCE, the ID token verified with the provider's published key and
// carrying the user's organisation and roles. The code is good once, and
// only with the verifier it was asked for with.
func TestCodeFlowWithPKCE(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	issuer := oidcdevtest.Start(t, testConfig())
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var disc struct {
		Methods []string `json:"code_challenge_methods_supported"`
	}
	if err := provider.Claims(&disc); err != nil || !slices.Contains(disc.Methods, "S256") {
		t.Errorf("discovery: code_challenge_methods_supported %v (%v)", disc.Methods, err)
	}
	conf := oauth2.Config{ClientID: "haven-portal", ClientSecret: "portal-secret-0123456789", Endpoint: provider.Endpoint(),
		RedirectURL: redirect, Scopes: []string{oidc.ScopeOpenID, "profile"}}
	verifier := oauth2.GenerateVerifier()
	cb, code := login(t, issuer, conf.AuthCodeURL("state-1", oidc.Nonce("nonce-1"), oauth2.S256ChallengeOption(verifier)), "ana-pw")
	if code != http.StatusFound || cb == nil || !strings.HasPrefix(cb.String(), redirect+"?") {
		t.Fatalf("the flow ended with %d at %v", code, cb)
	}
	if cb.Query().Get("state") != "state-1" {
		t.Errorf("state %q came back", cb.Query().Get("state"))
	}
	authCode := cb.Query().Get("code")

	tok, err := conf.Exchange(ctx, authCode, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "haven-portal"}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("verify the ID token: %v", err)
	}
	var claims struct {
		Nonce string   `json:"nonce"`
		Name  string   `json:"name"`
		Org   string   `json:"haven_org"`
		Roles []string `json:"haven_roles"`
	}
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if idt.Subject != "ana" || claims.Nonce != "nonce-1" || claims.Org != "QHM" || !slices.Equal(claims.Roles, []string{"analyst"}) || claims.Name != "Ana Analyst" {
		t.Errorf("ID token: sub %q, claims %+v", idt.Subject, claims)
	}
	if _, err := conf.Exchange(ctx, authCode, oauth2.VerifierOption(verifier)); err == nil {
		t.Error("a code was exchanged twice")
	}
	if _, err := (&oauth2.Config{ClientID: "haven-portal", ClientSecret: "wrong", Endpoint: provider.Endpoint(), RedirectURL: redirect}).
		Exchange(ctx, "whatever", oauth2.VerifierOption(verifier)); err == nil {
		t.Error("a wrong client secret was accepted")
	}
	cb, _ = login(t, issuer, conf.AuthCodeURL("state-2", oidc.Nonce("nonce-2"), oauth2.S256ChallengeOption(verifier)), "ana-pw")
	if _, err := conf.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil {
		t.Error("a code was exchanged with another PKCE verifier")
	}
}

// TestRefusals: no PKCE, a redirect URI not registered, a wrong password,
// and a sign-in form posted from another site are all refused.
func TestRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	issuer := oidcdevtest.Start(t, testConfig())
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	conf := oauth2.Config{ClientID: "haven-portal", Endpoint: provider.Endpoint(), RedirectURL: redirect, Scopes: []string{oidc.ScopeOpenID}}
	if cb, _ := login(t, issuer, conf.AuthCodeURL("s"), "ana-pw"); cb == nil || cb.Query().Get("error") != "invalid_request" {
		t.Errorf("without PKCE the flow ended at %v; want an invalid_request error", cb)
	}
	pkce := oauth2.S256ChallengeOption(oauth2.GenerateVerifier())
	other := conf
	other.RedirectURL = "https://evil.test/cb"
	if cb, status := login(t, issuer, other.AuthCodeURL("s", pkce), "ana-pw"); status == http.StatusFound && cb != nil && cb.Host == "evil.test" {
		t.Errorf("a code was sent to an unregistered redirect URI: %v", cb)
	}
	if _, status := login(t, issuer, conf.AuthCodeURL("s", pkce), "wrong"); status != http.StatusUnauthorized {
		t.Errorf("a wrong password answered %d", status)
	}
	form := url.Values{"id": {"x"}, "username": {"ana"}, "password": {"ana-pw"}}
	req, _ := http.NewRequest(http.MethodPost, issuer+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.test")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site sign-in post answered %d", resp.StatusCode)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "secret"), []byte("a-long-enough-secret\n"), 0o600)
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{name: "good", yaml: `clients: [{id: p, secret_file: secret, redirect_uris: ["https://x/cb"]}]
users: [{id: ana, username: ana, password: pw, org: QHM, roles: [analyst]}]`},
		{name: "unknown field", yaml: "clients: []\nuser: []\n", want: []string{"field user not found"}},
		{name: "bad", yaml: `clients: [{id: p, secret: s, secret_file: secret, redirect_uris: ["http://x/cb"]}]
users: [{id: ana, username: ana, org: QHM, roles: []}, {id: ana, username: bob, password: pw, org: "", roles: [a]}]`,
			want: []string{"clients[0]: set exactly one of secret and secret_file", `clients[0].redirect_uris[0]: "http://x/cb": want an absolute https URL`,
				"users[0].password: required", "users[0].roles: at least one role", `users[1].id: "ana" appears twice`, `users[1].org: "": want an ODS code`}},
		{name: "short secret", yaml: `clients: [{id: p, secret: short, redirect_uris: ["https://x/cb"]}]`, want: []string{"clients[0].secret: 5 characters"}},
		{name: "missing secret file", yaml: `clients: [{id: p, secret_file: nope, redirect_uris: ["https://x/cb"]}]`, want: []string{"clients[0].secret_file:", "nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			os.WriteFile(path, []byte(tc.yaml), 0o600)
			_, err := oidcdev.Load(path)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	if _, err := oidcdev.New(testConfig(), "http://192.0.2.1:5556", nil); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("plain http off loopback: %v", err)
	}
}
