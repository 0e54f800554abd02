package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/release"
	"github.com/spf13/cobra"
)

func newPKICmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the network CA and issue node, user and server certificates",
		Long: `The network's certificate authority vouches for every peer: the coordinator's
server certificate, each node's client certificate (which names its site's ODS
code) and each commissioner's (which names their id, organisation and roles).

Private keys are written with mode 0600 and are never overwritten.`,
		Example: `  haven pki init --dir ./pki
  haven pki issue server --dir ./pki --host coordinator.example.nhs.uk --host 127.0.0.1
  haven pki issue node --dir ./pki --ods A81001
  haven pki issue user --dir ./pki --id ana --org QHM --role commissioner
  haven pki signing-key --dir ./pki`,
	}
	cmd.AddCommand(newPKIInitCmd(a), newPKIIssueCmd(a), newPKISigningKeyCmd(a))
	return cmd
}

func newPKIInitCmd(a *app) *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:     "init",
		Short:   "Create a new network certificate authority",
		Example: "  haven pki init --dir ./pki --name 'North East ICB Haven CA'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, certPEM, keyPEM, err := pki.NewCA(name, time.Now())
			if err != nil {
				return err
			}
			certPath, keyPath, err := pki.WriteFiles(dir, "ca", certPEM, keyPEM)
			if err != nil {
				return fmt.Errorf("pki init: %w", err)
			}
			fmt.Fprintf(a.stdout, "created network CA %q\n  certificate %s\n  key         %s (keep it offline)\n  expires     %s\n  sha256      %s\n",
				name, certPath, keyPath, ca.Cert.NotAfter.Format(time.DateOnly), pki.Fingerprint(ca.Cert))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "pki", "directory to write ca.crt and ca.key into")
	cmd.Flags().StringVar(&name, "name", "Haven network CA", "common name of the CA")
	return cmd
}

func newPKIIssueCmd(a *app) *cobra.Command {
	var (
		dir, out string
		validity time.Duration
	)
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Issue a certificate signed by the network CA",
		Long: `Issue a certificate signed by the CA in --dir. The certificate and key are
written to --out (default: --dir) as <kind>-<name>.crt and <kind>-<name>.key.`,
		Example: `  haven pki issue node --dir ./pki --ods A81001
  haven pki issue user --dir ./pki --id ana --org QHM --role commissioner --validity 720h`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "pki", "directory holding ca.crt and ca.key")
	cmd.PersistentFlags().StringVar(&out, "out", "", "directory to write the certificate and key into (default: --dir)")
	cmd.PersistentFlags().DurationVar(&validity, "validity", 0, "how long the certificate lasts (default: node 8760h, user 2160h, server 9528h)")

	issue := func(req pki.Request, name string) error {
		ca, err := pki.LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
		if err != nil {
			return fmt.Errorf("pki issue: %w", err)
		}
		req.Validity = validity
		cert, certPEM, keyPEM, err := ca.Issue(req)
		if err != nil {
			return err
		}
		dst := out
		if dst == "" {
			dst = dir
		}
		certPath, keyPath, err := pki.WriteFiles(dst, name, certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("pki issue: %w", err)
		}
		what := string(req.Kind)
		if id, err := pki.IdentityOf(cert); err == nil {
			what = id.String()
		}
		fmt.Fprintf(a.stdout, "issued %s certificate\n  certificate %s\n  key         %s\n  expires     %s (%d days)\n  sha256      %s\n",
			what, certPath, keyPath, cert.NotAfter.Format(time.DateOnly),
			int(time.Until(cert.NotAfter).Hours()/24+0.5), pki.Fingerprint(cert))
		return nil
	}

	var ods string
	node := &cobra.Command{
		Use:     "node",
		Short:   "Issue a node's client certificate, naming its site's ODS code",
		Example: "  haven pki issue node --dir ./pki --ods A81001",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return issue(pki.Request{Kind: pki.KindNode, ODS: ods}, "node-"+ods)
		},
	}
	node.Flags().StringVar(&ods, "ods", "", "ODS code of the site the node serves (required)")
	node.MarkFlagRequired("ods")

	var id, org string
	var roles []string
	user := &cobra.Command{
		Use:     "user",
		Short:   "Issue a commissioner's or operator's client certificate",
		Example: "  haven pki issue user --dir ./pki --id ana --org QHM --role commissioner",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return issue(pki.Request{Kind: pki.KindUser, ID: id, Org: org, Roles: roles}, "user-"+id)
		},
	}
	user.Flags().StringVar(&id, "id", "", "user id (required)")
	user.Flags().StringVar(&org, "org", "", "organisation, e.g. an ICB's ODS code (required)")
	user.Flags().StringArrayVar(&roles, "role", nil, "role the governance policy knows, e.g. commissioner (repeatable, at least one)")
	user.MarkFlagRequired("id")
	user.MarkFlagRequired("org")

	var hosts []string
	server := &cobra.Command{
		Use:     "server",
		Short:   "Issue the coordinator's server certificate",
		Example: "  haven pki issue server --dir ./pki --host coordinator.example.nhs.uk --host 127.0.0.1",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name := "server"
			if len(hosts) > 0 {
				name = "server-" + hosts[0]
			}
			return issue(pki.Request{Kind: pki.KindServer, Hosts: hosts}, name)
		},
	}
	server.Flags().StringArrayVar(&hosts, "host", nil, "DNS name or IP address clients dial (repeatable, at least one)")

	cmd.AddCommand(node, user, server)
	return cmd
}

func newPKISigningKeyCmd(a *app) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "signing-key",
		Short: "Create the coordinator's release signing key (ed25519)",
		Long: `Create the key the coordinator signs every released table with. Name the
private key in the coordinator's configuration (releases.signing_key) and give
the public key to everyone who checks tables with haven query verify.`,
		Example: "  haven pki signing-key --dir ./pki",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, key, err := ed25519.GenerateKey(nil)
			if err != nil {
				return err
			}
			priv, pub, err := release.MarshalKeys(key)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("pki signing-key: %w", err)
			}
			keyPath, pubPath := filepath.Join(dir, "release-signing.key"), filepath.Join(dir, "release-signing.pub")
			kf, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("pki signing-key: %s already exists; remove it first to make a new key", keyPath)
			} else if err != nil {
				return fmt.Errorf("pki signing-key: %w", err)
			}
			if _, err := kf.Write(priv); err != nil {
				kf.Close()
				return fmt.Errorf("pki signing-key: write %s: %w", keyPath, err)
			}
			if err := kf.Close(); err != nil {
				return fmt.Errorf("pki signing-key: write %s: %w", keyPath, err)
			}
			if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
				return fmt.Errorf("pki signing-key: %w", err)
			}
			fmt.Fprintf(a.stdout, "created release signing key %s\n  private key %s (releases.signing_key in the coordinator's configuration)\n  public key  %s (for haven query verify --public-key)\n",
				release.KeyID(key.Public().(ed25519.PublicKey)), keyPath, pubPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "pki", "directory to write release-signing.key and release-signing.pub into")
	return cmd
}
