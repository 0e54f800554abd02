package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// CertPool reads a PEM file of CA certificates into a pool.
func CertPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("read CA %s: no certificates found", caFile)
	}
	return pool, nil
}

// ServerTLS is the coordinator's TLS configuration: its own certificate,
// and client certificates verified against the network CA when offered.
// Nodes must present one (the coordinator checks per RPC); commissioners may
// instead present a bearer token, so the handshake cannot demand one.
func ServerTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %s: %w", certFile, err)
	}
	pool, err := CertPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// ClientTLS is a node's or user's TLS configuration for dialling the
// coordinator: its own certificate, and the coordinator's verified against
// the network CA. serverName overrides the host name checked, if set.
func ClientTLS(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load client certificate %s: %w", certFile, err)
	}
	pool, err := CertPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// Always offer the certificate. By default a TLS client offers
		// none that the server's CA list does not name, and a certificate
		// from another CA then reaches the coordinator as no certificate
		// at all, with a misleading "present a certificate" error; offered,
		// it is refused in the handshake with the cause named on both
		// sides (unknown authority, expired).
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		RootCAs:              pool,
		ServerName:           serverName,
		MinVersion:           tls.VersionTLS13,
	}, nil
}

// CheckClientCert reads a client certificate and says in words why a
// coordinator of the network whose CA is in caFile would refuse it: issued
// by another CA, expired or not yet valid, not a client certificate, or
// naming no Haven identity. Otherwise it returns the identity it names.
func CheckClientCert(certFile, caFile string, now time.Time) (Identity, error) {
	cert, err := ReadCert(certFile)
	if err != nil {
		return Identity{}, err
	}
	pool, err := CertPool(caFile)
	if err != nil {
		return Identity{}, err
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &x509.UnknownAuthorityError{}):
		return Identity{}, fmt.Errorf("certificate %s (%s) was issued by %q, not by the network CA in %s",
			certFile, cert.Subject, cert.Issuer, caFile)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && now.Before(cert.NotBefore):
		return Identity{}, fmt.Errorf("certificate %s (%s) is not valid until %s", certFile, cert.Subject, cert.NotBefore.UTC().Format(time.RFC3339))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return Identity{}, fmt.Errorf("certificate %s (%s) expired at %s; ask the network operator for a new one",
			certFile, cert.Subject, cert.NotAfter.UTC().Format(time.RFC3339))
	case err != nil:
		return Identity{}, fmt.Errorf("certificate %s (%s): %w", certFile, cert.Subject, err)
	}
	id, err := IdentityOf(cert)
	if err != nil {
		return Identity{}, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	return id, nil
}

// HandshakeCause names, in words, why a TLS handshake with a client
// certificate failed, from either side's error: the client certificate is
// from another CA, or expired, or was otherwise refused. It returns "" for
// an error that is none of these.
func HandshakeCause(err error) string {
	if err == nil {
		return ""
	}
	var invalid x509.CertificateInvalidError
	msg := err.Error()
	switch {
	case errors.As(err, &x509.UnknownAuthorityError{}), strings.Contains(msg, "tls: unknown certificate authority"):
		return "the client certificate was not issued by this network's CA"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired, strings.Contains(msg, "tls: expired certificate"):
		return "the client certificate has expired or is not yet valid"
	case strings.Contains(msg, "tls: bad certificate"), strings.Contains(msg, "failed to verify certificate"):
		return "the client certificate was refused"
	}
	return ""
}

// PeerIdentity returns the identity named by the verified client
// certificate of a TLS connection, or an error if it offered none.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, fmt.Errorf("no verified client certificate")
	}
	return IdentityOf(cs.VerifiedChains[0][0])
}
