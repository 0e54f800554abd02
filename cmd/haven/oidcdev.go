package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/havenhealth/haven/internal/oidcdev"
)

func newOIDCDevCmd(a *app) *cobra.Command {
	var path, listen, issuer, certFile, keyFile string
	cmd := &cobra.Command{
		Use:   "oidc-dev",
		Short: "Run a development OpenID Connect provider for the portal's demo logins",
		Long: `The commissioner portal signs people in with OpenID Connect: in the NHS, Care
Identity Service 2 (CIS2) is the provider. For a demo or a test there is no
CIS2, so this command runs a small but real OpenID provider (built on
github.com/zitadel/oidc) with synthetic users read from a YAML file:

  clients:                       # relying parties, e.g. the portal
    - id: haven-portal
      secret_file: portal-client.secret   # or secret: ... (at least 16 characters)
      redirect_uris: [https://localhost:8444/auth/callback]
      post_logout_redirect_uris: [https://localhost:8444/]
  users:
    - id: ana                    # the subject (sub): the user id Haven records
      username: ana
      password: demo-password    # in clear: synthetic users only
      name: Ana Analyst
      org: QHM                   # ODS code, claim "haven_org"
      roles: [analyst]           # claim "haven_roles"

It offers discovery (/.well-known/openid-configuration), the authorization
code flow with PKCE (S256, required of every client), a sign-in page, and
ID tokens signed with ES256 carrying the user's organisation and roles. The
portal's configuration names those claims (portal.oidc.claims) as it would
name CIS2's. Everything is kept in memory, the signing key included, which
is new at each start; sessions the portal already made are the portal's
and outlive a restart.

Without --tls-cert it serves plain HTTP, which is allowed only on a loopback
address. It is not an identity service; never put real people in its file.`,
		Example: `  # For a portal on this machine:
  haven oidc-dev --config oidc-users.yaml --listen 127.0.0.1:5556

  # Reached by others, over HTTPS:
  haven oidc-dev --config users.yaml --listen :5556 --issuer https://idp.example:5556 \
      --tls-cert idp.crt --tls-key idp.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return errors.New("--config is required")
			}
			cfg, err := oidcdev.Load(path)
			if err != nil {
				return err
			}
			if (certFile == "") != (keyFile == "") {
				return errors.New("--tls-cert and --tls-key go together")
			}
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			if issuer == "" {
				scheme := "http"
				if certFile != "" {
					scheme = "https"
				}
				issuer = scheme + "://" + lis.Addr().String()
			}
			h, err := oidcdev.New(cfg, issuer, a.logger)
			if err != nil {
				lis.Close()
				return err
			}
			if certFile != "" {
				cert, err := tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					lis.Close()
					return fmt.Errorf("TLS certificate: %w", err)
				}
				lis = tls.NewListener(lis, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
			}
			return serveUntilDone(cmd.Context(), &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, lis,
				func() {
					a.logger.Info("development OpenID provider serving", "issuer", issuer, "users", len(cfg.Users))
				})
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "config", "", "users and clients (YAML; see above)")
	f.StringVar(&listen, "listen", "127.0.0.1:5556", "address to listen on, host:port")
	f.StringVar(&issuer, "issuer", "", "the URL clients reach the provider at (default http(s)://<listen address>)")
	f.StringVar(&certFile, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	f.StringVar(&keyFile, "tls-key", "", "the certificate's private key (PEM)")
	return cmd
}

// serveUntilDone serves srv on lis until ctx ends, then shuts it down.
func serveUntilDone(ctx context.Context, srv *http.Server, lis net.Listener, started func()) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	started()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
