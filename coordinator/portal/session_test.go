package portal

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

var testKey = []byte("a test session key of at least thirty-two bytes")

// cookieFrom returns the cookie named name that w set.
func cookieFrom(t *testing.T, w *httptest.ResponseRecorder, name string) *http.Cookie {
	t.Helper()
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cookie %s set", name)
	return nil
}

// The session cookie is Secure, HttpOnly, SameSite=Lax and expiring, and
// only a cookie this portal made, unaltered and in date, is a session.
func TestSessionCookie(t *testing.T) {
	c, err := newCookies(testKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := session{User: "ana", Org: "QHM", Roles: []string{"analyst"}, Expires: now.Add(time.Hour).Unix()}
	w := httptest.NewRecorder()
	if err := c.setSession(w, good); err != nil {
		t.Fatal(err)
	}
	ck := cookieFrom(t, w, sessionCookie)
	if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.MaxAge != 3600 || ck.Path != "/" || ck.Domain != "" {
		t.Errorf("cookie attributes: %+v", ck)
	}
	if strings.Contains(ck.Value, "QHM") || strings.Contains(ck.Value, "analyst") {
		t.Error("the cookie's value is readable")
	}
	other, _ := newCookies([]byte("another key, also at least thirty-two bytes long"), time.Hour)
	wOther := httptest.NewRecorder()
	other.setSession(wOther, good)
	wLogin := httptest.NewRecorder()
	c.setLogin(wLogin, loginState{State: "s", Nonce: "n", Verifier: "v", Next: "/"})
	wExpired := httptest.NewRecorder()
	c.setSession(wExpired, session{User: "ana", Org: "QHM", Roles: []string{"analyst"}, Expires: now.Add(-time.Minute).Unix()})
	tampered := []byte(ck.Value)
	tampered[len(tampered)/2] ^= 1

	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{name: "good", value: ck.Value, ok: true},
		{name: "none"},
		{name: "forged", value: "eyJ1IjoiYW5hIiwibyI6IlFITSJ9"},
		{name: "tampered", value: string(tampered)},
		{name: "another key", value: cookieFrom(t, wOther, sessionCookie).Value},
		{name: "login cookie as session", value: cookieFrom(t, wLogin, loginCookie).Value},
		{name: "expired", value: cookieFrom(t, wExpired, sessionCookie).Value},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/catalogue", nil)
			if tc.value != "" {
				r.AddCookie(&http.Cookie{Name: sessionCookie, Value: tc.value})
			}
			s, err := c.readSession(r, now)
			if tc.ok != (err == nil) {
				t.Fatalf("readSession: %+v, %v", s, err)
			}
			if tc.ok && (s.User != "ana" || s.Org != "QHM" || !slices.Equal(s.Roles, []string{"analyst"})) {
				t.Errorf("session %+v", s)
			}
		})
	}
	if _, err := newCookies([]byte("short"), time.Hour); err == nil {
		t.Error("a short key was taken")
	}
}

// sessionOf reads the configured claims, maps roles and refuses an
// identity without a user, an organisation or a known role.
func TestSessionOf(t *testing.T) {
	base := OIDC{UserClaim: "sub", OrgClaim: "haven_org", RolesClaim: "haven_roles", NameClaim: "name"}
	mapped := base
	mapped.UserClaim, mapped.RoleMap = "uid", map[string]string{"R8000": "analyst", "R8008": "commissioner"}
	// CIS2 as it states roles: a list of role objects and the selected one.
	cis2 := mapped
	cis2.RolesClaim, cis2.SelectedRoleClaim = "nhsid_nrbac_roles", "selected_roleid"
	cis2Roles := []any{
		map[string]any{"person_roleid": "555021935107", "org_code": "RX8", "role_code": "S8000:G8000:R8000", "role_name": "Clinical Practitioner"},
		map[string]any{"person_roleid": "555021935108", "org_code": "QHM", "role_code": "S8002:G8003:R8008", "role_name": "Commissioner"},
	}
	for _, tc := range []struct {
		name   string
		oidc   OIDC
		sub    string
		claims map[string]any
		want   session
		why    string
	}{
		{name: "array of roles", oidc: base, sub: "ana", claims: map[string]any{"haven_org": "QHM", "haven_roles": []any{"operator", "analyst"}, "name": "Ana"},
			want: session{User: "ana", Org: "QHM", Roles: []string{"analyst", "operator"}, Name: "Ana"}},
		{name: "space-separated roles", oidc: base, sub: "ana", claims: map[string]any{"haven_org": "QHM", "haven_roles": "analyst analyst"},
			want: session{User: "ana", Org: "QHM", Roles: []string{"analyst"}}},
		{name: "mapped", oidc: mapped, sub: "opaque", claims: map[string]any{"uid": "555000111", "haven_org": "QHM", "haven_roles": []any{"R8000", "R9999"}},
			want: session{User: "555000111", Org: "QHM", Roles: []string{"analyst"}}},
		{name: "no organisation", oidc: base, sub: "ana", claims: map[string]any{"haven_roles": []any{"analyst"}}, why: "names no organisation"},
		{name: "bad organisation", oidc: base, sub: "ana", claims: map[string]any{"haven_org": "Q H M", "haven_roles": []any{"analyst"}}, why: "names no organisation"},
		{name: "no known role", oidc: mapped, sub: "x", claims: map[string]any{"uid": "1", "haven_org": "QHM", "haven_roles": []any{"R9999"}}, why: "no role"},
		{name: "CIS2 selected role", oidc: cis2, sub: "x", claims: map[string]any{"uid": "555000111", "nhsid_nrbac_roles": cis2Roles, "selected_roleid": "555021935108"},
			want: session{User: "555000111", Org: "QHM", Roles: []string{"commissioner"}}},
		{name: "CIS2 other role selected", oidc: cis2, sub: "x", claims: map[string]any{"uid": "555000111", "nhsid_nrbac_roles": cis2Roles, "selected_roleid": "555021935107"},
			want: session{User: "555000111", Org: "RX8", Roles: []string{"analyst"}}},
		{name: "CIS2 no selected role", oidc: cis2, sub: "x", claims: map[string]any{"uid": "1", "nhsid_nrbac_roles": cis2Roles}, why: "no selected role"},
		{name: "CIS2 selected role not held", oidc: cis2, sub: "x", claims: map[string]any{"uid": "1", "nhsid_nrbac_roles": cis2Roles, "selected_roleid": "999"},
			why: "not among your roles"},
		{name: "CIS2 flat organisation claim ignored", oidc: cis2, sub: "x",
			claims: map[string]any{"uid": "1", "haven_org": "QHM", "nhsid_nrbac_roles": []any{map[string]any{"person_roleid": "7", "role_code": "R8008"}}, "selected_roleid": "7"},
			why:    "names no organisation"},
		{name: "no user", oidc: mapped, sub: "x", claims: map[string]any{"haven_org": "QHM", "haven_roles": []any{"R8000"}}, why: "no usable user id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Portal{cfg: Config{OIDC: tc.oidc}}
			s, why := p.sessionOf(tc.sub, tc.claims)
			if tc.why != "" {
				if !strings.Contains(why, tc.why) {
					t.Errorf("why %q, want %q", why, tc.why)
				}
				return
			}
			if why != "" || s.User != tc.want.User || s.Org != tc.want.Org || s.Name != tc.want.Name || !slices.Equal(s.Roles, tc.want.Roles) {
				t.Errorf("session %+v (%s), want %+v", s, why, tc.want)
			}
		})
	}
}
