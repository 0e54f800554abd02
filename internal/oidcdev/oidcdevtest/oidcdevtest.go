// Package oidcdevtest runs the development OpenID provider
// (internal/oidcdev) for a test, on a free loopback port over plain HTTP,
// the way net/http/httptest runs a server.
package oidcdevtest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/havenhealth/haven/internal/oidcdev"
)

// Start serves a provider for cfg until tb ends and returns its issuer
// URL.
func Start(tb testing.TB, cfg *oidcdev.Config) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	issuer := "http://" + lis.Addr().String()
	h, err := oidcdev.New(cfg, issuer, nil)
	if err != nil {
		lis.Close()
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("OIDC provider: %v", err)
		}
	})
	return issuer
}
