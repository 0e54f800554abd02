package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Portal is the commissioners' web portal: the catalogue, submitting runs,
// following them and reading their released tables in a browser. It is
// served over HTTPS with the coordinator's certificate, and people sign in
// with OpenID Connect (NHS CIS2, or `haven oidc-dev` for a demo); what a
// signed-in person may do is exactly what the commissioner API lets the
// same organisation, user and roles do.
type Portal struct {
	// Listen is its address, host:port; empty serves no portal.
	Listen string `yaml:"listen"`
	// URL is the address people reach the portal at (https://host:port,
	// no path). The OpenID redirect URI registered with the provider is
	// URL + "/auth/callback". Default https://localhost:<listen port>.
	URL string `yaml:"url"`
	// OIDC is the OpenID provider and how its claims map to Haven's
	// organisation, user and roles.
	OIDC PortalOIDC `yaml:"oidc"`
	// Session is the portal's sign-in session.
	Session PortalSession `yaml:"session"`
}

// PortalOIDC names the OpenID provider, the portal's client registration
// with it, and the claims of its ID tokens that say who signed in.
type PortalOIDC struct {
	// Issuer is the provider's issuer URL; its discovery document is read
	// at start.
	Issuer string `yaml:"issuer"`
	// ClientID and ClientSecretFile are the portal's registration; the
	// file holds the secret (trailing white space ignored).
	ClientID         string `yaml:"client_id"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// Scopes asked for; openid is always among them.
	Scopes []string `yaml:"scopes"`
	// Claims names the ID token claims read.
	Claims PortalClaims `yaml:"claims"`
	// RoleMap maps a role as the provider's claim names it (a CIS2 role
	// code, say) to a Haven role. Empty, the claim's roles are Haven's
	// as they are; set, roles it does not list are dropped.
	RoleMap map[string]string `yaml:"role_map"`
}

// PortalClaims names ID token claims. Organisation must be a string
// claim; Roles a string or an array of strings.
type PortalClaims struct {
	User         string `yaml:"user"`
	Organisation string `yaml:"organisation"`
	Roles        string `yaml:"roles"`
	Name         string `yaml:"name"`
	// SelectedRole, when set, reads roles as NHS Care Identity Service 2
	// states them: Roles names a list of role objects (CIS2's
	// nhsid_nrbac_roles) and this claim (CIS2's selected_roleid) the one
	// the person chose at sign-in, by its person_roleid. The organisation
	// is that role's org_code (Organisation is not read) and the role its
	// role_code, looked up in role_map whole and by its last part after a
	// colon (the job role's R code, e.g. R8000).
	SelectedRole string `yaml:"selected_role"`
}

// PortalSession is the portal's session cookie: signed and encrypted with
// keys derived from the key file, so a person's organisation and roles
// cannot be forged or read from it.
type PortalSession struct {
	// KeyFile holds at least 32 bytes of secret (e.g.
	// `head -c 32 /dev/urandom | base64 > portal-session.key`). Changing
	// it signs everyone out.
	KeyFile string `yaml:"key_file"`
	// MaxAge is how long a sign-in lasts.
	MaxAge time.Duration `yaml:"max_age"`
}

// DefaultPortal is the portal's defaults; Default includes them.
func DefaultPortal() Portal {
	return Portal{
		OIDC: PortalOIDC{
			Scopes: []string{"openid", "profile"},
			Claims: PortalClaims{User: "sub", Organisation: "haven_org", Roles: "haven_roles", Name: "name"},
		},
		Session: PortalSession{MaxAge: 8 * time.Hour},
	}
}

// MinSessionKeyBytes is the least a portal session key file holds.
const MinSessionKeyBytes = 32

var claimName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_:.-]{0,127}$`)

// validate reports the portal's problems through bad; a portal that is not
// served is not checked.
func (p *Portal) validate(bad func(field, format string, args ...any)) {
	if p.Listen == "" {
		return
	}
	if p.URL != "" {
		if u, err := url.Parse(p.URL); err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			bad("portal.url", "%q: want https://host[:port] with no path", p.URL)
		}
	}
	switch u, err := url.Parse(p.OIDC.Issuer); {
	case p.OIDC.Issuer == "":
		bad("portal.oidc.issuer", "required (the OpenID provider's issuer URL)")
	case err != nil || u.Host == "":
		bad("portal.oidc.issuer", "%q is not an absolute URL", p.OIDC.Issuer)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		bad("portal.oidc.issuer", "%q: plain http is allowed only on a loopback address", p.OIDC.Issuer)
	case u.Scheme != "https" && u.Scheme != "http":
		bad("portal.oidc.issuer", "%q: want https", p.OIDC.Issuer)
	}
	if !tokenish.MatchString(p.OIDC.ClientID) {
		bad("portal.oidc.client_id", "%q: want letters, digits and . _ @ -", p.OIDC.ClientID)
	}
	if p.OIDC.ClientSecretFile == "" {
		bad("portal.oidc.client_secret_file", "required")
	} else if _, err := p.OIDC.ClientSecret(); err != nil {
		bad("portal.oidc.client_secret_file", "%v", err)
	}
	if !slices.Contains(p.OIDC.Scopes, "openid") {
		bad("portal.oidc.scopes", "%v: openid is required", p.OIDC.Scopes)
	}
	for field, v := range map[string]string{"user": p.OIDC.Claims.User, "organisation": p.OIDC.Claims.Organisation,
		"roles": p.OIDC.Claims.Roles, "name": p.OIDC.Claims.Name} {
		if !claimName.MatchString(v) {
			bad("portal.oidc.claims."+field, "%q is not a claim name", v)
		}
	}
	for from, to := range p.OIDC.RoleMap {
		if !tokenish.MatchString(from) || !tokenish.MatchString(to) {
			bad("portal.oidc.role_map", "%q: %q: want role names (letters, digits and . _ @ -)", from, to)
		}
	}
	if p.Session.KeyFile == "" {
		bad("portal.session.key_file", "required")
	} else if _, err := p.Session.Key(); err != nil {
		bad("portal.session.key_file", "%v", err)
	}
	if p.Session.MaxAge < 5*time.Minute || p.Session.MaxAge > 24*time.Hour {
		bad("portal.session.max_age", "%v: want from 5m to 24h", p.Session.MaxAge)
	}
}

func loopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// ClientSecret reads the client secret file.
func (o PortalOIDC) ClientSecret() (string, error) {
	b, err := os.ReadFile(o.ClientSecretFile)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", o.ClientSecretFile)
	}
	return s, nil
}

// Key reads the session key file.
func (s PortalSession) Key() ([]byte, error) {
	b, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return nil, err
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < MinSessionKeyBytes {
		return nil, fmt.Errorf("%s holds %d bytes; want at least %d", s.KeyFile, len(b), MinSessionKeyBytes)
	}
	return b, nil
}

// BaseURL is the portal's public address: URL, or https://localhost with
// the port of addr (the address it listens on) when URL is empty.
func (p *Portal) BaseURL(addr net.Addr) string {
	if p.URL != "" {
		return strings.TrimSuffix(p.URL, "/")
	}
	_, port, _ := net.SplitHostPort(addr.String())
	return "https://localhost:" + port
}
