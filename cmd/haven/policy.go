package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/havenhealth/haven/policy"
	"github.com/havenhealth/haven/policy/catalog"
	"github.com/spf13/cobra"
)

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Lint, test, hash, sign and try out the governance bundle",
		Long: `Tools for the governance board. The bundle (policy/bundle in this repository)
holds the Rego decisions haven/submit, haven/participate and haven/disclose,
their tests, data.json (approvals, roles, purposes, disclosure thresholds,
restricted codelists), the query definitions and their codelists. The board
approves a definition by putting its hash in data.json, signs the whole bundle,
and gives coordinator and nodes the public key; they refuse anything else.

A usual round: edit, then
  haven policy lint policy/bundle
  haven policy test policy/bundle
  haven policy hash policy/bundle/definitions/NEW/definition.yaml   (paste into data.json)
  haven policy sign policy/bundle --key board.pem --out bundle.tar.gz`,
		Example: `  haven policy keygen --out board.pem
  haven policy lint policy/bundle
  haven policy sign policy/bundle --key board.pem
  haven policy verify policy/bundle --key board.pub.pem`,
	}
	cmd.AddCommand(
		newPolicyLintCmd(a),
		newPolicyTestCmd(a),
		newPolicyHashCmd(a),
		newPolicyKeygenCmd(a),
		newPolicySignCmd(a),
		newPolicyVerifyCmd(a),
		newPolicyEvalCmd(a),
		newPolicyPTableCmd(a),
	)
	return cmd
}

func newPolicyLintCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "lint PATH...",
		Short: "Check bundles and query definitions, reporting every mistake with its position",
		Long: `Check each PATH: a bundle (directory or .tar.gz) or a single definition
(BUNDLE/definitions/ID/definition.yaml, checked against the codelists of the
bundle it sits in).

For a bundle: every Rego file parses and compiles, the three decisions exist,
data.json and .manifest parse, every definition and codelist checks, and every
approval names its definition's current hash, known purposes and roles, and a
range for each parameter. Problems print one per line as file:line:column or
file and field; the exit status is 1 if there are any.`,
		Example: `  haven policy lint policy/bundle
  haven policy lint policy/bundle/definitions/t2dm-prevalence/definition.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			problems := 0
			for _, p := range args {
				var err error
				if strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml") {
					_, err = policy.DefinitionFile(p)
				} else {
					err = policy.Lint(cmd.Context(), p)
				}
				var list catalog.ErrorList
				switch {
				case err == nil:
					fmt.Fprintf(a.stdout, "ok   %s\n", p)
				case errors.As(err, &list):
					for _, e := range list {
						fmt.Fprintln(a.stdout, inBundle(p, e))
					}
					problems += len(list)
				default:
					fmt.Fprintf(a.stdout, "%s: %v\n", p, err)
					problems++
				}
			}
			if problems > 0 {
				return fmt.Errorf("policy lint: %d problem%s", problems, plural(problems))
			}
			return nil
		},
	}
}

func newPolicyTestCmd(a *app) *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "test DIR",
		Short: "Run the bundle's Rego tests and lint its catalogue",
		Long: `Run every test_* rule of the bundle in DIR (or a .tar.gz) with OPA's tester,
as "opa test -b" would, then lint the bundle as "haven policy lint" does.
Failures print with their location; the exit status is 1 on any failure.`,
		Example: `  haven policy test policy/bundle
  haven policy test -v policy/bundle`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := policy.RunTests(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			for _, r := range rep.Results {
				if verbose || !r.Pass() {
					where := ""
					if r.Location != nil {
						where = fmt.Sprintf("%s:%d: ", bundlePath(args[0], r.Location.File), r.Location.Row)
					}
					fmt.Fprintf(a.stdout, "%s%s\n", where, strings.TrimSpace(r.String()))
				}
				if r.Error != nil {
					fmt.Fprintf(a.stdout, "  %v\n", r.Error)
				}
			}
			total := len(rep.Results)
			fmt.Fprintf(a.stdout, "rego: PASS %d/%d", rep.Passed, total)
			if rep.Failed > 0 {
				fmt.Fprintf(a.stdout, ", FAIL %d", rep.Failed)
			}
			if rep.Errored > 0 {
				fmt.Fprintf(a.stdout, ", ERROR %d", rep.Errored)
			}
			if rep.Skipped > 0 {
				fmt.Fprintf(a.stdout, ", SKIPPED %d", rep.Skipped)
			}
			fmt.Fprintln(a.stdout)

			lintErr := policy.Lint(cmd.Context(), args[0])
			var list catalog.ErrorList
			switch {
			case lintErr == nil:
				fmt.Fprintln(a.stdout, "lint: ok")
			case errors.As(lintErr, &list):
				for _, e := range list {
					fmt.Fprintln(a.stdout, inBundle(args[0], e))
				}
				fmt.Fprintf(a.stdout, "lint: %d problem%s\n", len(list), plural(len(list)))
			default:
				return lintErr
			}
			if !rep.OK() || lintErr != nil {
				return errors.New("policy test: failed")
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list every test, not just the failures")
	return cmd
}

func newPolicyHashCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "hash FILE...",
		Short: "Print the canonical hash of query definitions, to paste into an approval",
		Long: `Print the canonical SHA-256 of each definition FILE and its id. The hash
covers the definition's meaning (not its layout or comments) and the contents
of every codelist it may use, read from the codelists directory of the bundle
the file sits in. Approvals in data.json name this hash, so editing a
definition or one of its codelists withdraws its approval until the board
approves the new hash.`,
		Example: `  haven policy hash policy/bundle/definitions/t2dm-emergency-admissions/definition.yaml`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, p := range args {
				d, err := policy.DefinitionFile(p)
				if err != nil {
					return fmt.Errorf("policy hash: %w", err)
				}
				fmt.Fprintf(a.stdout, "%s  %s\n", d.Hash(), d.ID)
			}
			return nil
		},
	}
}

func newPolicyKeygenCmd(a *app) *cobra.Command {
	var out, pub string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --out KEY.pem",
		Short: "Create an ECDSA P-256 key pair for signing bundles (ES256)",
		Long: `Create a key pair for the board: the private key (PKCS #8 PEM, mode 0600) at
--out and the public key (PKIX PEM) at --pub, which defaults to the private
key's name with .pub.pem. Coordinator and nodes are given the public key
only. An existing key is never overwritten unless --force is given.`,
		Example: `  haven policy keygen --out board.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pub == "" {
				pub = strings.TrimSuffix(out, ".pem") + ".pub.pem"
			}
			priv, pubPEM, err := policy.GenerateKey()
			if err != nil {
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			if err := writeNew(out, priv, 0o600, flags); err != nil {
				return fmt.Errorf("policy keygen: %w", err)
			}
			if err := writeNew(pub, pubPEM, 0o644, flags); err != nil {
				return fmt.Errorf("policy keygen: %w", err)
			}
			fmt.Fprintf(a.stdout, "private key %s (mode 0600; keep it with the board)\npublic key  %s (give it to the coordinator and nodes)\n", out, pub)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the private key to (required)")
	cmd.Flags().StringVar(&pub, "pub", "", "file to write the public key to (default: KEY.pub.pem)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func writeNew(name string, data []byte, perm os.FileMode, flags int) error {
	f, err := os.OpenFile(name, flags, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil { // the umask may have narrowed it; never widened
		f.Close()
		return err
	}
	return f.Close()
}

func newPolicySignCmd(a *app) *cobra.Command {
	var key, alg, keyID, out string
	cmd := &cobra.Command{
		Use:   "sign DIR --key KEY.pem",
		Short: "Sign every file of a bundle directory, writing DIR/.signatures.json",
		Long: `Sign every file of the bundle in DIR - Rego, data.json, .manifest, query
definitions, codelists and anything else there - with the board's private key,
in OPA's bundle-signing format: DIR/.signatures.json holds one JWT listing each
file's SHA-256. File names are relative to DIR, as in an OPA bundle file, so
the signature holds wherever the directory is copied, and a bundle packed with
--out is accepted by "opa build -b FILE --verification-key PUB.pem
--signing-alg ES256".

Any later change to any file, an added file or a removed one makes
verification fail, naming the file.`,
		Example: `  haven policy sign policy/bundle --key board.pem
  haven policy sign policy/bundle --key board.pem --key-id board-2026 --out bundle.tar.gz`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			keyPEM, err := os.ReadFile(key)
			if err != nil {
				return fmt.Errorf("policy sign: %w", err)
			}
			if err := policy.Sign(dir, keyPEM, alg, keyID); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "signed %s\n", filepath.Join(dir, ".signatures.json"))
			if out == "" {
				return nil
			}
			var buf bytes.Buffer
			if err := policy.Pack(dir, &buf); err != nil {
				return err
			}
			if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
				return fmt.Errorf("policy sign: %w", err)
			}
			fmt.Fprintf(a.stdout, "packed %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the board's private key, PEM (required)")
	cmd.Flags().StringVar(&alg, "alg", "", "JWS algorithm: ES256, ES384, ES512 or RS256 (default: the one that goes with the key, which is what verifiers expect)")
	cmd.Flags().StringVar(&keyID, "key-id", "haven-board", `"kid" recorded in the signature; a label, since verifiers trust the key they were given`)
	cmd.Flags().StringVar(&out, "out", "", "also write the signed bundle to this .tar.gz")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func newPolicyVerifyCmd(a *app) *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "verify PATH --key PUB.pem",
		Short: "Check a bundle's signature and every file against it",
		Long: `Check that the bundle at PATH (directory or .tar.gz) is signed with the
private key matching PUB.pem and that every file in it is listed in the
signature with a matching digest, with none missing. Exit status 0 means
exactly the signed bundle; 1 names the first file that differs.`,
		Example: `  haven policy verify policy/bundle --key board.pub.pem
  haven policy verify bundle.tar.gz --key board.pub.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := os.ReadFile(key)
			if err != nil {
				return fmt.Errorf("policy verify: %w", err)
			}
			if err := policy.Verify(args[0], pub); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "verified %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the board's public key, PEM (required)")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func newPolicyEvalCmd(a *app) *cobra.Command {
	var (
		input, bundlePath, key string
		siteModules            []string
		insecure, asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "eval DECISION --input FILE",
		Short: "Evaluate submit, participate or disclose on an input file and print the decision",
		Long: `Evaluate one decision - submit, participate or disclose - on the JSON input in
FILE ("-" for standard input), as coordinator and nodes do: the bundle's
signature is checked with --key, site modules are loaded beside it, and any
policy failure denies. --insecure-unsigned skips the signature check, for a
board drafting policy; never use it on a coordinator or node.

The input is the decision's input document; see the Rego files for its
fields. Times (now) are RFC 3339.`,
		Example: `  haven policy eval submit --input request.json --key board.pub.pem
  haven policy eval participate --input task.json --bundle /etc/haven/bundle.tar.gz --key board.pub.pem --site-module /etc/haven/site.rego
  haven policy eval disclose --input table.json --insecure-unsigned --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" && !insecure {
				return errors.New("policy eval: give --key PUB.pem, or --insecure-unsigned to evaluate an unsigned draft")
			}
			var body []byte
			var err error
			if input == "-" {
				body, err = io.ReadAll(cmd.InOrStdin())
			} else {
				body, err = os.ReadFile(input)
			}
			if err != nil {
				return fmt.Errorf("policy eval: %w", err)
			}
			if !json.Valid(body) {
				return fmt.Errorf("policy eval: %s is not JSON", input)
			}
			cfg := policy.Config{BundlePath: bundlePath, InsecureSkipVerify: insecure, SiteModules: siteModules, Logger: a.logger}
			if key != "" {
				if cfg.PublicKeyPEM, err = os.ReadFile(key); err != nil {
					return fmt.Errorf("policy eval: %w", err)
				}
				cfg.InsecureSkipVerify = false
			}
			e, err := policy.Load(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			d, raw, evalErr := e.Eval(cmd.Context(), args[0], body)
			if evalErr != nil && d.ID == "" {
				return evalErr // not a decision at all: an unknown name
			}
			if asJSON {
				out := map[string]any{}
				for k, v := range raw {
					out[k] = v
				}
				out["allow"], out["reasons"] = d.Allow, d.Reasons
				out["decision_id"], out["bundle_revision"] = d.ID, d.Revision
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				verdict := "deny"
				if d.Allow {
					verdict = "allow"
				}
				fmt.Fprintf(a.stdout, "%s\n", verdict)
				for _, r := range d.Reasons {
					src := ""
					if r.Source != "" {
						src = " (" + r.Source + ")"
					}
					fmt.Fprintf(a.stdout, "  %s%s: %s\n", r.Code, src, r.Message)
				}
				if t, ok := raw["thresholds"]; ok && d.Allow {
					b, _ := json.Marshal(t)
					fmt.Fprintf(a.stdout, "thresholds %s\n", b)
				}
				fmt.Fprintf(a.stdout, "bundle revision %s, decision %s\n", d.Revision, d.ID)
			}
			if evalErr != nil {
				return fmt.Errorf("policy eval: denied because policy failed: %w", evalErr)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", `the decision's input, a JSON file ("-" for standard input) (required)`)
	f.StringVar(&bundlePath, "bundle", "policy/bundle", "the governance bundle, a directory or .tar.gz")
	f.StringVar(&key, "key", "", "the board's public key, PEM, to verify the bundle")
	f.BoolVar(&insecure, "insecure-unsigned", false, "evaluate without checking the signature (drafting only)")
	f.StringArrayVar(&siteModules, "site-module", nil, "a site's own Rego file or directory, under package haven.site (repeatable)")
	f.BoolVar(&asJSON, "json", false, "print the decision as JSON")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

// inBundle makes a problem's file name relative to the working directory
// rather than the bundle, so that editors can jump to it.
func inBundle(bundle string, e *catalog.Error) *catalog.Error {
	c := *e
	if c.Pos.File != "" {
		c.Pos.File = bundlePath(bundle, c.Pos.File)
	}
	return &c
}

// bundlePath is the path of a bundle's file from the working directory,
// when the bundle is a directory.
func bundlePath(bundle, file string) string {
	file = strings.TrimPrefix(file, "/")
	if fi, err := os.Stat(bundle); err == nil && fi.IsDir() {
		return filepath.Join(bundle, file)
	}
	return file
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
