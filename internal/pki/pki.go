// Package pki issues and reads the certificates of a Haven network: one
// network certificate authority, a server certificate for the coordinator,
// a client certificate for each node (naming its site's ODS code) and one
// for each commissioner or operator (naming their id, organisation and
// roles).
//
// Identity lives in a URI subject alternative name, haven://node/<ODS> or
// haven://user/<id>, so that a certificate says unambiguously what kind of
// peer it is for; the coordinator reads it with IdentityOf and never trusts
// a common name alone. Keys are ECDSA P-256, written with mode 0600.
//
// Nothing here shells out to openssl: crypto/x509 does all of it.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Kind is the sort of peer a certificate is for.
type Kind string

// Certificate kinds.
const (
	KindNode   Kind = "node"   // a site's node, client auth, names an ODS code
	KindUser   Kind = "user"   // a commissioner or operator, client auth
	KindServer Kind = "server" // the coordinator, server auth
)

// Identity is who a client certificate speaks for.
type Identity struct {
	Kind  Kind
	ODS   string   // for nodes: the site's ODS code
	ID    string   // for users: their id
	Org   string   // for users: their organisation
	Roles []string // for users: their roles, sorted
}

func (id Identity) String() string {
	switch id.Kind {
	case KindNode:
		return "node " + id.ODS
	case KindUser:
		return fmt.Sprintf("user %s (%s; %s)", id.ID, id.Org, strings.Join(id.Roles, ","))
	}
	return string(id.Kind)
}

const uriScheme = "haven"

var (
	// ODS codes are upper-case letters and digits, 3 to 10 characters.
	odsPattern = regexp.MustCompile(`^[A-Z0-9]{3,10}$`)
	// User ids, organisations and roles: a conservative token set, so they
	// are safe in a URI path, a log line and a policy input.
	tokenPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)
)

// CheckODS reports whether s is a well-formed ODS code.
func CheckODS(s string) error {
	if !odsPattern.MatchString(s) {
		return fmt.Errorf("ODS code %q: want 3-10 upper-case letters and digits", s)
	}
	return nil
}

func checkToken(what, s string) error {
	if !tokenPattern.MatchString(s) {
		return fmt.Errorf("%s %q: want letters, digits and . _ @ - (at most 128, starting with a letter or digit)", what, s)
	}
	return nil
}

// Request says what certificate to issue.
type Request struct {
	Kind     Kind
	ODS      string        // KindNode
	ID       string        // KindUser
	Org      string        // KindUser
	Roles    []string      // KindUser
	Hosts    []string      // KindServer: DNS names and IP addresses
	Validity time.Duration // zero: DefaultValidity(Kind)
}

// DefaultValidity is how long a certificate of kind k lasts unless asked.
// Client certificates are short enough that rotation is a habit, not an
// emergency.
func DefaultValidity(k Kind) time.Duration {
	switch k {
	case KindServer:
		return 397 * 24 * time.Hour
	case KindNode:
		return 365 * 24 * time.Hour
	}
	return 90 * 24 * time.Hour
}

// CAValidity is how long a network CA lasts.
const CAValidity = 10 * 365 * 24 * time.Hour

func (r Request) check() error {
	switch r.Kind {
	case KindNode:
		return CheckODS(r.ODS)
	case KindUser:
		if err := checkToken("user id", r.ID); err != nil {
			return err
		}
		if err := checkToken("organisation", r.Org); err != nil {
			return err
		}
		if len(r.Roles) == 0 {
			return errors.New("a user certificate needs at least one role")
		}
		for _, role := range r.Roles {
			if err := checkToken("role", role); err != nil {
				return err
			}
		}
	case KindServer:
		if len(r.Hosts) == 0 {
			return errors.New("a server certificate needs at least one host name or IP address")
		}
		for _, h := range r.Hosts {
			if net.ParseIP(h) == nil && !validHostname(h) {
				return fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
			}
		}
	default:
		return fmt.Errorf("unknown certificate kind %q: want node, user or server", r.Kind)
	}
	if r.Validity < 0 {
		return fmt.Errorf("validity %v is negative", r.Validity)
	}
	return nil
}

var hostnamePattern = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

func validHostname(h string) bool { return len(h) <= 253 && hostnamePattern.MatchString(h) }

// CA is a loaded certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
	now  func() time.Time
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates a self-signed network CA named name.
func NewCA(name string, now time.Time) (*CA, []byte, []byte, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Haven network"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return &CA{Cert: cert, key: key, now: time.Now}, encodeCert(der), keyPEM, nil
}

// LoadCA reads a CA certificate and key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := ReadCert(certFile)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate", certFile)
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load CA: key %s does not belong to certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, key: key, now: time.Now}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// Issue creates a certificate and key for req, signed by the CA. It returns
// the parsed certificate and both in PEM.
func (ca *CA) Issue(req Request) (cert *x509.Certificate, certPEM, keyPEM []byte, err error) {
	if err := req.check(); err != nil {
		return nil, nil, nil, fmt.Errorf("issue %s certificate: %w", req.Kind, err)
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultValidity(req.Kind)
	}
	now := ca.now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, nil, nil, fmt.Errorf("issue %s certificate: it would outlive the CA (CA expires %s)", req.Kind, ca.Cert.NotAfter.Format(time.DateOnly))
	}
	key, err := newKey()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch req.Kind {
	case KindNode:
		tmpl.Subject = pkix.Name{CommonName: req.ODS, OrganizationalUnit: []string{"haven-node"}}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{{Scheme: uriScheme, Host: string(KindNode), Path: "/" + req.ODS}}
	case KindUser:
		tmpl.Subject = pkix.Name{CommonName: req.ID, Organization: []string{req.Org}, OrganizationalUnit: req.Roles}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{{Scheme: uriScheme, Host: string(KindUser), Path: "/" + req.ID}}
	case KindServer:
		tmpl.Subject = pkix.Name{CommonName: req.Hosts[0], OrganizationalUnit: []string{"haven-coordinator"}}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range req.Hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("sign %s certificate: %w", req.Kind, err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return cert, encodeCert(der), keyPEM, nil
}

// IdentityOf reads the Haven identity a verified client certificate names.
// The caller must have verified the chain against the network CA first
// (crypto/tls does, with RequireAndVerifyClientCert).
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == uriScheme {
			found = append(found, u)
		}
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("certificate %q names %d Haven identities; want exactly one", cert.Subject.CommonName, len(found))
	}
	u := found[0]
	name := strings.TrimPrefix(u.Path, "/")
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return Identity{}, fmt.Errorf("certificate %q is not for client authentication", cert.Subject.CommonName)
	}
	switch Kind(u.Host) {
	case KindNode:
		if err := CheckODS(name); err != nil {
			return Identity{}, fmt.Errorf("node certificate: %w", err)
		}
		if cert.Subject.CommonName != name {
			return Identity{}, fmt.Errorf("node certificate: common name %q and identity %q disagree", cert.Subject.CommonName, name)
		}
		return Identity{Kind: KindNode, ODS: name}, nil
	case KindUser:
		if err := checkToken("user id", name); err != nil {
			return Identity{}, fmt.Errorf("user certificate: %w", err)
		}
		if len(cert.Subject.Organization) != 1 {
			return Identity{}, errors.New("user certificate: want exactly one organisation")
		}
		// Roles are a set; DER encoding may reorder them, so sort.
		roles := slices.Clone(cert.Subject.OrganizationalUnit)
		slices.Sort(roles)
		return Identity{Kind: KindUser, ID: name, Org: cert.Subject.Organization[0], Roles: roles}, nil
	}
	return Identity{}, fmt.Errorf("certificate names unknown identity kind %q", u.Host)
}

// Fingerprint is the hex SHA-256 of a certificate's DER bytes, as operators
// compare them.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return fmt.Sprintf("%x", sum)
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ReadCert reads the first certificate in a PEM file.
func ReadCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("read certificate %s: no PEM CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read certificate %s: %w", path, err)
	}
	return c, nil
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read key %s: no PEM PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read key %s: %T cannot sign", path, k)
	}
	return s, nil
}

// WriteFiles writes a certificate and its key as <dir>/<name>.crt and
// <dir>/<name>.key. The key is created with mode 0600 and never
// overwritten: replacing a key by accident locks a site out.
func WriteFiles(dir, name string, certPEM, keyPEM []byte) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("write %s: %w", name, err)
	}
	certPath = filepath.Join(dir, name+".crt")
	keyPath = filepath.Join(dir, name+".key")
	kf, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", "", fmt.Errorf("%s already exists; remove it first to issue a new key", keyPath)
		}
		return "", "", fmt.Errorf("write key: %w", err)
	}
	if _, err := kf.Write(keyPEM); err != nil {
		kf.Close()
		return "", "", fmt.Errorf("write key %s: %w", keyPath, err)
	}
	if err := kf.Close(); err != nil {
		return "", "", fmt.Errorf("write key %s: %w", keyPath, err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("write certificate: %w", err)
	}
	return certPath, keyPath, nil
}
