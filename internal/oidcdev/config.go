// Package oidcdev is a small, real OpenID Connect provider for Haven's
// demo and tests, built on github.com/zitadel/oidc/v3's op package (with a
// storage of its own here, not the library's example storage, whose users
// and clients are fixed in its code). It speaks the same protocol as NHS
// Care Identity Service 2 does to the portal: discovery, the authorization
// code flow with PKCE (S256, required), confidential clients, ID tokens
// signed with ES256 and carrying the user's organisation (ODS code) and
// roles as claims.
//
// Users and clients are read from a YAML file (Config). Everything else
// lives in memory: a restart signs in everyone afresh. It is not an
// identity service: passwords are in the file in clear, so it is for
// synthetic demo users only.
package oidcdev

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Claim names the provider puts in ID tokens and userinfo, besides the
// standard sub and name. The portal's configuration names them
// (portal.oidc.claims), as it would name CIS2's.
const (
	ClaimOrg   = "haven_org"
	ClaimRoles = "haven_roles"
)

// Config is the provider's users and clients.
type Config struct {
	// Clients are the relying parties allowed to sign users in.
	Clients []Client `yaml:"clients"`
	// Users are the people who may sign in.
	Users []User `yaml:"users"`
}

// Client is a confidential client (a web application such as the portal).
type Client struct {
	ID string `yaml:"id"`
	// Secret is the client secret in clear; SecretFile, a file holding
	// it (trailing white space ignored). Exactly one is set.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
	// RedirectURIs are the only addresses codes are sent back to, each
	// matched exactly.
	RedirectURIs []string `yaml:"redirect_uris"`
	// PostLogoutRedirectURIs are where end_session may send users back.
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
}

// User is a demo user.
type User struct {
	// ID is the subject (sub) and the user id Haven records.
	ID string `yaml:"id"`
	// Username and Password are what the login form asks for.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Name is shown on the portal.
	Name string `yaml:"name"`
	// Org is the user's organisation, an ODS code.
	Org string `yaml:"org"`
	// Roles are the user's roles as the portal's role mapping reads them.
	Roles []string `yaml:"roles"`
}

// Load reads a configuration file strictly (an unknown field is an error),
// resolves secret files against its directory, and checks it.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read OIDC provider config: %w", err)
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("OIDC provider config %s: %w", path, err)
	}
	for i := range cfg.Clients {
		if f := cfg.Clients[i].SecretFile; f != "" && !filepath.IsAbs(f) {
			cfg.Clients[i].SecretFile = filepath.Join(filepath.Dir(path), f)
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("OIDC provider config %s:\n%w", path, err)
	}
	return &cfg, nil
}

var name = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// Validate reports every problem with c, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(c.Clients) == 0 {
		bad("clients", "at least one client is required")
	}
	clients := map[string]bool{}
	for i, cl := range c.Clients {
		f := fmt.Sprintf("clients[%d]", i)
		if !name.MatchString(cl.ID) {
			bad(f+".id", "%q: want letters, digits and . _ @ -", cl.ID)
		} else if clients[cl.ID] {
			bad(f+".id", "%q appears twice", cl.ID)
		}
		clients[cl.ID] = true
		switch {
		case (cl.Secret == "") == (cl.SecretFile == ""):
			bad(f, "set exactly one of secret and secret_file")
		case cl.SecretFile != "":
			if _, err := cl.secret(); err != nil {
				bad(f+".secret_file", "%v", err)
			}
		case len(cl.Secret) < 16:
			bad(f+".secret", "%d characters; want a secret of at least 16", len(cl.Secret))
		}
		if len(cl.RedirectURIs) == 0 {
			bad(f+".redirect_uris", "at least one is required")
		}
		for j, u := range append(append([]string(nil), cl.RedirectURIs...), cl.PostLogoutRedirectURIs...) {
			if p, err := url.Parse(u); err != nil || p.Scheme != "https" || p.Host == "" || p.Fragment != "" {
				bad(fmt.Sprintf("%s.redirect_uris[%d]", f, j), "%q: want an absolute https URL without a fragment", u)
			}
		}
	}
	ids, usernames := map[string]bool{}, map[string]bool{}
	for i, u := range c.Users {
		f := fmt.Sprintf("users[%d]", i)
		if !name.MatchString(u.ID) {
			bad(f+".id", "%q: want letters, digits and . _ @ -", u.ID)
		} else if ids[u.ID] {
			bad(f+".id", "%q appears twice", u.ID)
		}
		ids[u.ID] = true
		if !name.MatchString(u.Username) {
			bad(f+".username", "%q: want letters, digits and . _ @ -", u.Username)
		} else if usernames[u.Username] {
			bad(f+".username", "%q appears twice", u.Username)
		}
		usernames[u.Username] = true
		if u.Password == "" {
			bad(f+".password", "required")
		}
		if !name.MatchString(u.Org) {
			bad(f+".org", "%q: want an ODS code", u.Org)
		}
		if len(u.Roles) == 0 {
			bad(f+".roles", "at least one role is required")
		}
		for j, r := range u.Roles {
			if !name.MatchString(r) {
				bad(fmt.Sprintf("%s.roles[%d]", f, j), "%q is not a role name", r)
			}
		}
	}
	return errors.Join(errs...)
}

// secret is the client's secret, from the file if it names one.
func (c Client) secret() (string, error) {
	if c.SecretFile == "" {
		return c.Secret, nil
	}
	b, err := os.ReadFile(c.SecretFile)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("%s holds %d characters; want a secret of at least 16", c.SecretFile, len(s))
	}
	return s, nil
}
