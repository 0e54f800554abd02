package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
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
		RootCAs:      pool,
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// PeerIdentity returns the identity named by the verified client
// certificate of a TLS connection, or an error if it offered none.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, fmt.Errorf("no verified client certificate")
	}
	return IdentityOf(cs.VerifiedChains[0][0])
}
