package portal

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/securecookie"
)

// Cookie names. The __Host- prefix makes browsers refuse them unless they
// are Secure, for this host only and for every path, so no other site or
// subdomain can set them.
const (
	sessionCookie = "__Host-haven-session"
	loginCookie   = "__Host-haven-login"
	// loginMaxAge bounds a sign-in in progress at the provider.
	loginMaxAge = 10 * time.Minute
)

// session is who is signed in, as the session cookie holds it.
type session struct {
	User    string   `json:"u"`
	Org     string   `json:"o"`
	Roles   []string `json:"r"`
	Name    string   `json:"n"`
	Expires int64    `json:"e"` // Unix seconds
}

// loginState is a sign-in in progress: what the callback must see again.
type loginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"x"`
}

// cookies encodes and decodes the portal's cookies, each signed (HMAC
// SHA-256) and encrypted (AES-256) with keys derived from the session
// secret, and timestamped so that an old cookie is refused even if a
// browser kept it past its expiry.
type cookies struct {
	session, login *securecookie.SecureCookie
	maxAge         time.Duration
}

func newCookies(secret []byte, maxAge time.Duration) (*cookies, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("portal: the session key is %d bytes; want at least 32", len(secret))
	}
	key := func(info string, n int) ([]byte, error) {
		return hkdf.Key(sha256.New, secret, nil, "haven portal "+info, n)
	}
	hashKey, err := key("cookie signing", 64)
	if err != nil {
		return nil, err
	}
	blockKey, err := key("cookie encryption", 32)
	if err != nil {
		return nil, err
	}
	mk := func(age time.Duration) *securecookie.SecureCookie {
		return securecookie.New(hashKey, blockKey).MaxAge(int(age.Seconds())).SetSerializer(securecookie.JSONEncoder{})
	}
	// Each cookie's name is signed with it, so a login cookie cannot be
	// passed off as a session.
	return &cookies{session: mk(maxAge), login: mk(loginMaxAge), maxAge: maxAge}, nil
}

func (c *cookies) set(w http.ResponseWriter, sc *securecookie.SecureCookie, name string, v any, age time.Duration) error {
	enc, err := sc.Encode(name, v)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: enc, Path: "/", MaxAge: int(age.Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	return nil
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// errNoSession is a request without a valid session: none, expired,
// forged or made with another key.
var errNoSession = errors.New("not signed in")

// readSession returns the request's session, or errNoSession.
func (c *cookies) readSession(r *http.Request, now time.Time) (session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, errNoSession
	}
	var s session
	if err := c.session.Decode(sessionCookie, ck.Value, &s); err != nil {
		return session{}, fmt.Errorf("%w: %v", errNoSession, err)
	}
	if now.Unix() >= s.Expires || s.User == "" || s.Org == "" {
		return session{}, errNoSession
	}
	return s, nil
}

func (c *cookies) setSession(w http.ResponseWriter, s session) error {
	return c.set(w, c.session, sessionCookie, s, c.maxAge)
}

func (c *cookies) readLogin(r *http.Request) (loginState, error) {
	ck, err := r.Cookie(loginCookie)
	if err != nil {
		return loginState{}, err
	}
	var l loginState
	err = c.login.Decode(loginCookie, ck.Value, &l)
	return l, err
}

func (c *cookies) setLogin(w http.ResponseWriter, l loginState) error {
	return c.set(w, c.login, loginCookie, l, loginMaxAge)
}
