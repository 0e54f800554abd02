package main

import (
	"context"
	"crypto/tls"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow/go/v17/arrow/flight"
	"github.com/apache/arrow/go/v17/arrow/ipc"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/havenhealth/haven/coordinator/authn"
	"github.com/havenhealth/haven/coordinator/release"
	"github.com/havenhealth/haven/internal/pki"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
)

// queryFlags say how to reach the coordinator and who is asking.
type queryFlags struct {
	addr, ca, cert, key, tokenFile, serverName string
}

// fromEnv fills each flag the user did not give from its environment
// variable.
func (f *queryFlags) fromEnv(cmd *cobra.Command) {
	for flag, p := range map[string]*string{
		"coordinator": &f.addr, "ca": &f.ca, "cert": &f.cert, "key": &f.key,
		"token-file": &f.tokenFile, "server-name": &f.serverName,
	} {
		if !cmd.Flags().Changed(flag) {
			if v := os.Getenv(envName(flag)); v != "" {
				*p = v
			}
		}
	}
}

func envName(flag string) string {
	return "HAVEN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// dial connects to the coordinator with a client certificate or, failing
// that, a bearer token.
func (f *queryFlags) dial() (*grpc.ClientConn, error) {
	if f.addr == "" {
		return nil, errors.New("--coordinator is required (or set HAVEN_COORDINATOR), e.g. coordinator.example.nhs.uk:7443")
	}
	if f.ca == "" {
		return nil, errors.New("--ca is required (or set HAVEN_CA): the network CA certificate the coordinator's is checked against")
	}
	var opts []grpc.DialOption
	switch {
	case f.cert != "" || f.key != "":
		if f.cert == "" || f.key == "" {
			return nil, errors.New("--cert and --key go together")
		}
		// Say why a certificate would be refused before the coordinator
		// can only say that the handshake failed.
		id, err := pki.CheckClientCert(f.cert, f.ca, time.Now())
		if err != nil {
			return nil, err
		}
		if id.Kind != pki.KindUser {
			return nil, fmt.Errorf("certificate %s is a %s certificate (%s); haven query needs a user certificate", f.cert, id.Kind, id)
		}
		tc, err := pki.ClientTLS(f.cert, f.key, f.ca, f.serverName)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	case f.tokenFile != "":
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("token file %s is empty", f.tokenFile)
		}
		pool, err := pki.CertPool(f.ca)
		if err != nil {
			return nil, err
		}
		opts = append(opts,
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: f.serverName, MinVersion: tls.VersionTLS13})),
			grpc.WithPerRPCCredentials(authn.BearerToken(token)))
	default:
		return nil, errors.New("say who you are: --cert and --key (a network user certificate) or --token-file (or HAVEN_CERT, HAVEN_KEY, HAVEN_TOKEN_FILE)")
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	conn, err := grpc.NewClient(f.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("coordinator %s: %w", f.addr, err)
	}
	return conn, nil
}

// rpcError turns a coordinator error into one a person can act on.
func rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if cause := pki.HandshakeCause(err); cause != "" && st.Code() == codes.Unavailable {
		return fmt.Errorf("the coordinator refused the TLS handshake: %s (%s)", cause, st.Message())
	}
	label := map[codes.Code]string{
		codes.InvalidArgument:    "invalid request",
		codes.NotFound:           "not found",
		codes.PermissionDenied:   "not permitted",
		codes.Unauthenticated:    "not authenticated",
		codes.FailedPrecondition: "not possible now",
		codes.Unavailable:        "coordinator unavailable",
		codes.DeadlineExceeded:   "timed out",
		codes.ResourceExhausted:  "too much",
	}[st.Code()]
	if label == "" {
		label = strings.ToLower(st.Code().String())
	}
	return fmt.Errorf("%s: %s", label, st.Message())
}

func newQueryCmd(a *app) *cobra.Command {
	f := &queryFlags{}
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Browse the approved catalogue, submit runs and fetch released tables",
		Long: `The commissioner's client. It talks to the coordinator with a network user
certificate (--cert, --key) or a bearer token (--token-file), checking the
coordinator's certificate against the network CA (--ca). Every flag can come
from the environment instead: HAVEN_COORDINATOR, HAVEN_CA, HAVEN_CERT,
HAVEN_KEY, HAVEN_TOKEN_FILE, HAVEN_SERVER_NAME.

A run asks every site the approved plan needs; only a disclosure-controlled
table comes back. Withheld values are shown with the reason they were
withheld.`,
		Example: `  export HAVEN_COORDINATOR=coordinator.example.nhs.uk:7443 HAVEN_CA=ca.crt HAVEN_CERT=ana.crt HAVEN_KEY=ana.key
  haven query list
  haven query show t2dm-emergency-admissions
  haven query submit t2dm-emergency-admissions --param index_date=2024-04-01 --purpose commissioning --wait
  haven query fetch run-ABC123 --format csv > table.csv`,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if p := cmd.Root(); p.PersistentPreRunE != nil {
				if err := p.PersistentPreRunE(cmd, args); err != nil {
					return err
				}
			}
			f.fromEnv(cmd)
			return nil
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.addr, "coordinator", "", "coordinator address, host:port ($HAVEN_COORDINATOR)")
	pf.StringVar(&f.ca, "ca", "", "network CA certificate ($HAVEN_CA)")
	pf.StringVar(&f.cert, "cert", "", "your network user certificate ($HAVEN_CERT)")
	pf.StringVar(&f.key, "key", "", "its private key ($HAVEN_KEY)")
	pf.StringVar(&f.tokenFile, "token-file", "", "file holding a bearer token, instead of a certificate ($HAVEN_TOKEN_FILE)")
	pf.StringVar(&f.serverName, "server-name", "", "name to check the coordinator's certificate for, if not the address's host ($HAVEN_SERVER_NAME)")

	cmd.AddCommand(
		newQueryListCmd(a, f), newQueryShowCmd(a, f), newQuerySubmitCmd(a, f), newQueryStatusCmd(a, f),
		newQueryFetchCmd(a, f), newQueryRunsCmd(a, f), newQueryCancelCmd(a, f), newQueryVerifyCmd(a),
	)
	return cmd
}

// withClient dials, runs fn and closes the connection.
func (f *queryFlags) withClient(fn func(*grpc.ClientConn, havenv1.CoordinatorClient) error) error {
	conn, err := f.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(conn, havenv1.NewCoordinatorClient(conn))
}

func newQueryListCmd(a *app, f *queryFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the approved query definitions",
		Example: "  haven query list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withClient(func(_ *grpc.ClientConn, c havenv1.CoordinatorClient) error {
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tVERSION\tMODE\tAPPROVED UNTIL\tTITLE")
				token := ""
				for {
					resp, err := c.ListDefinitions(cmd.Context(), &havenv1.ListDefinitionsRequest{PageToken: token})
					if err != nil {
						return rpcError(err)
					}
					for _, d := range resp.GetDefinitions() {
						until := "not approved"
						if e := d.GetApproval().GetExpiresAt(); e != nil {
							until = e.AsTime().Format(time.DateOnly)
						}
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", d.GetId(), d.GetVersion(), modeName(d.GetMode()), until, d.GetTitle())
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				return tw.Flush()
			})
		},
	}
}

func modeName(m havenv1.PlanMode) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "PLAN_MODE_"))
}

func stateName(s havenv1.RunState) string {
	return strings.TrimPrefix(s.String(), "RUN_STATE_")
}

func siteStateName(s havenv1.SiteState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SITE_STATE_"))
}

func valueString(v *havenv1.ParameterValue) string {
	switch x := v.GetValue().(type) {
	case *havenv1.ParameterValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *havenv1.ParameterValue_DateValue:
		return x.DateValue
	case *havenv1.ParameterValue_EnumValue:
		return x.EnumValue
	case *havenv1.ParameterValue_CodelistName:
		return x.CodelistName
	}
	return ""
}

func newQueryShowCmd(a *app, f *queryFlags) *cobra.Command {
	var source bool
	cmd := &cobra.Command{
		Use:     "show DEFINITION",
		Short:   "Show a definition: what it answers, its parameters, approval and plan",
		Example: "  haven query show statins-chd\n  haven query show statins-chd --source",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.withClient(func(_ *grpc.ClientConn, c havenv1.CoordinatorClient) error {
				resp, err := c.GetDefinition(cmd.Context(), &havenv1.GetDefinitionRequest{Id: args[0]})
				if err != nil {
					return rpcError(err)
				}
				if source {
					_, err := io.WriteString(a.stdout, resp.GetSource())
					return err
				}
				d := resp.GetDefinition()
				w := a.stdout
				fmt.Fprintf(w, "%s (version %d): %s\n\n%s\n\n", d.GetId(), d.GetVersion(), d.GetTitle(), d.GetDescription())
				fmt.Fprintf(w, "mode        %s\nsha256      %s\n", modeName(d.GetMode()), d.GetSha256())
				if ap := d.GetApproval(); ap != nil {
					fmt.Fprintf(w, "approved    by %s, until %s\npurposes    %s\n", ap.GetApprover(),
						ap.GetExpiresAt().AsTime().Format(time.DateOnly), strings.Join(ap.GetAllowedPurposes(), ", "))
				} else {
					fmt.Fprintf(w, "approved    no: the governance board has not approved this version\n")
				}
				fmt.Fprintf(w, "group by    %s\nmeasures    %s\n\nparameters:\n", strings.Join(d.GetGroupBy(), ", "), strings.Join(d.GetMeasures(), ", "))
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				for _, p := range d.GetParameters() {
					var rng []string
					if p.GetMin() != nil {
						rng = append(rng, "min "+valueString(p.GetMin()))
					}
					if p.GetMax() != nil {
						rng = append(rng, "max "+valueString(p.GetMax()))
					}
					if len(p.GetAllowedValues()) > 0 {
						rng = append(rng, "one of "+strings.Join(p.GetAllowedValues(), ", "))
					}
					if g := p.GetApprovedGrid(); g != "" {
						rng = append(rng, "approved: "+g)
					}
					def := "required"
					if p.GetDefaultValue() != nil {
						def = "default " + valueString(p.GetDefaultValue())
					}
					fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.GetName(), paramTypeName(p.GetType()), strings.Join(rng, ", "), def, p.GetDescription())
				}
				tw.Flush()
				if cls := resp.GetCodelists(); len(cls) > 0 {
					fmt.Fprintf(w, "\ncodelists:\n")
					for _, cl := range cls {
						fmt.Fprintf(w, "  %s (%d codes, sha256 %s)\n", cl.GetName(), cl.GetCodeCount(), cl.GetSha256())
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&source, "source", false, "print the definition's YAML as the board signed it")
	return cmd
}

func paramTypeName(t havenv1.ParameterType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "PARAMETER_TYPE_"))
}

// parseParams turns --param name=value flags into typed values, using the
// definition's declared parameter types.
func parseParams(d *havenv1.DefinitionSummary, raw []string) (map[string]*havenv1.ParameterValue, error) {
	specs := map[string]*havenv1.ParameterSpec{}
	for _, p := range d.GetParameters() {
		specs[p.GetName()] = p
	}
	known := slices.Sorted(maps.Keys(specs))
	out := map[string]*havenv1.ParameterValue{}
	var problems []string
	for _, kv := range raw {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			problems = append(problems, fmt.Sprintf("--param %q: want name=value", kv))
			continue
		}
		spec, ok := specs[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("unknown parameter %q: %s takes %s", name, d.GetId(), strings.Join(known, ", ")))
			continue
		}
		if _, dup := out[name]; dup {
			problems = append(problems, fmt.Sprintf("parameter %s is given twice", name))
			continue
		}
		switch spec.GetType() {
		case havenv1.ParameterType_PARAMETER_TYPE_INT:
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				problems = append(problems, fmt.Sprintf("parameter %s: %q is not a whole number", name, value))
				continue
			}
			out[name] = &havenv1.ParameterValue{Value: &havenv1.ParameterValue_IntValue{IntValue: n}}
		case havenv1.ParameterType_PARAMETER_TYPE_DATE:
			if _, err := time.Parse(time.DateOnly, value); err != nil {
				problems = append(problems, fmt.Sprintf("parameter %s: %q is not a date (YYYY-MM-DD)", name, value))
				continue
			}
			out[name] = &havenv1.ParameterValue{Value: &havenv1.ParameterValue_DateValue{DateValue: value}}
		case havenv1.ParameterType_PARAMETER_TYPE_ENUM:
			out[name] = &havenv1.ParameterValue{Value: &havenv1.ParameterValue_EnumValue{EnumValue: value}}
		case havenv1.ParameterType_PARAMETER_TYPE_CODELIST:
			out[name] = &havenv1.ParameterValue{Value: &havenv1.ParameterValue_CodelistName{CodelistName: value}}
		default:
			problems = append(problems, fmt.Sprintf("parameter %s has a type this client does not know", name))
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return out, nil
}

func newQuerySubmitCmd(a *app, f *queryFlags) *cobra.Command {
	var (
		params          []string
		purpose, client string
		wait            bool
	)
	cmd := &cobra.Command{
		Use:   "submit DEFINITION --purpose PURPOSE [--param name=value]... [--wait]",
		Short: "Submit a run of an approved definition",
		Long: `Submit a run. Parameters left out take their defaults. The coordinator checks
the values against the definition and the governance board's policy; a run
the policy refuses is recorded and its reasons are printed.

With --wait the command follows the run, with a progress line on stderr
(sites answered of those asked), until it finishes, and exits 0 only if a
table was released.`,
		Example: `  haven query submit t2dm-emergency-admissions --param index_date=2024-04-01 \
      --param followup_days=365 --purpose commissioning --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if purpose == "" {
				return errors.New("--purpose is required: why the run is needed, one of the purposes its approval allows (see haven query show)")
			}
			return f.withClient(func(_ *grpc.ClientConn, c havenv1.CoordinatorClient) error {
				ctx := cmd.Context()
				def, err := c.GetDefinition(ctx, &havenv1.GetDefinitionRequest{Id: args[0]})
				if err != nil {
					return rpcError(err)
				}
				values, err := parseParams(def.GetDefinition(), params)
				if err != nil {
					return err
				}
				resp, err := c.SubmitRun(ctx, &havenv1.SubmitRunRequest{DefinitionId: args[0], Parameters: values,
					Purpose: purpose, ClientRequestId: client})
				if err != nil {
					return rpcError(err)
				}
				run := resp.GetRun()
				fmt.Fprintf(a.stdout, "run %s: %s\n", run.GetId(), stateName(run.GetState()))
				if err := runOutcome(run); err != nil || !wait {
					return err
				}
				run, err = follow(ctx, c, run.GetId(), a.stderr)
				if err != nil {
					return err
				}
				printRun(a.stdout, run)
				return runOutcome(run)
			})
		},
	}
	cmd.Flags().StringArrayVar(&params, "param", nil, "parameter as name=value (repeatable)")
	cmd.Flags().StringVar(&purpose, "purpose", "", "purpose of the run, one its approval allows")
	cmd.Flags().StringVar(&client, "client-request-id", "", "id that makes retrying this submission return the same run")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the run until it finishes")
	return cmd
}

// runOutcome is nil for a run that is released or still going, and an
// error saying why otherwise.
func runOutcome(run *havenv1.Run) error {
	switch run.GetState() {
	case havenv1.RunState_RUN_STATE_REFUSED:
		var b strings.Builder
		fmt.Fprintf(&b, "run %s was refused by policy:", safeText(run.GetId()))
		for _, r := range run.GetPolicyReasons() {
			fmt.Fprintf(&b, "\n  %s: %s", safeText(r.GetCode()), safeText(r.GetMessage()))
		}
		return errors.New(b.String())
	case havenv1.RunState_RUN_STATE_FAILED, havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED:
		return fmt.Errorf("run %s is %s: %s", safeText(run.GetId()), stateName(run.GetState()), safeText(run.GetError()))
	}
	return nil
}

// follow watches a run to its end, drawing a progress line on w.
func follow(ctx context.Context, c havenv1.CoordinatorClient, runID string, w io.Writer) (*havenv1.Run, error) {
	tty := isTerminal(w)
	var last string
	for {
		stream, err := c.WatchRun(ctx, &havenv1.WatchRunRequest{RunId: runID})
		if err != nil {
			return nil, rpcError(err)
		}
		for {
			ev, err := stream.Recv()
			if status.Code(err) == codes.ResourceExhausted {
				break // fell behind; watch again from a fresh snapshot
			}
			if err != nil {
				if tty {
					fmt.Fprintln(w)
				}
				return nil, rpcError(err)
			}
			run := ev.GetRun()
			cov := run.GetCoverage()
			line := fmt.Sprintf("%s %-9s sites %d/%d answered", runID, stateName(run.GetState()), cov.GetSitesAnswered(), cov.GetSitesExpected())
			if cov.GetPopulationExpected() > 0 {
				line += fmt.Sprintf(", population %.1f%%", 100*float64(cov.GetPopulationAnswered())/float64(cov.GetPopulationExpected()))
			}
			if cov.GetTrustsExpected() > 0 {
				line += fmt.Sprintf(", trusts %d/%d", cov.GetTrustsAnswered(), cov.GetTrustsExpected())
			}
			if line != last {
				if tty {
					fmt.Fprintf(w, "\r%s\x1b[K", line)
				} else {
					fmt.Fprintln(w, line)
				}
				last = line
			}
			if isFinal(run.GetState()) {
				if tty {
					fmt.Fprintln(w)
				}
				return run, nil
			}
		}
	}
}

func isFinal(s havenv1.RunState) bool {
	switch s {
	case havenv1.RunState_RUN_STATE_RELEASED, havenv1.RunState_RUN_STATE_REFUSED, havenv1.RunState_RUN_STATE_FAILED,
		havenv1.RunState_RUN_STATE_CANCELLED, havenv1.RunState_RUN_STATE_INTERRUPTED:
		return true
	}
	return false
}

// printRun describes a run and its sites.
func printRun(w io.Writer, run *havenv1.Run) {
	names := slices.Sorted(maps.Keys(run.GetParameters()))
	var ps []string
	for _, n := range names {
		ps = append(ps, safeText(n)+"="+safeText(valueString(run.GetParameters()[n])))
	}
	fmt.Fprintf(w, "run         %s\nstate       %s\ndefinition  %s v%d (%s)\nparameters  %s\npurpose     %s\nrequester   %s (%s)\n",
		safeText(run.GetId()), stateName(run.GetState()), safeText(run.GetDefinitionId()), run.GetDefinitionVersion(), modeName(run.GetMode()),
		strings.Join(ps, " "), safeText(run.GetPurpose()), safeText(run.GetRequester().GetId()), safeText(run.GetRequester().GetOrg()))
	fmt.Fprintf(w, "submitted   %s\n", run.GetSubmittedAt().AsTime().Format(time.RFC3339))
	if p := run.GetQueuePosition(); p > 0 {
		fmt.Fprintf(w, "queued      position %d: waiting for a slot (organisations take turns); the deadline starts when it leaves the queue\n", p)
	}
	if run.GetDeadline() != nil {
		fmt.Fprintf(w, "deadline    %s\n", run.GetDeadline().AsTime().Format(time.RFC3339))
	}
	if run.GetFinishedAt() != nil {
		fmt.Fprintf(w, "finished    %s\n", run.GetFinishedAt().AsTime().Format(time.RFC3339))
	}
	cov := run.GetCoverage()
	if cov.GetSitesExpected() > 0 {
		fmt.Fprintf(w, "coverage    %d of %d sites, %d of %d people\n", cov.GetSitesAnswered(), cov.GetSitesExpected(),
			cov.GetPopulationAnswered(), cov.GetPopulationExpected())
	}
	if cov.GetTrustsExpected() > 0 {
		fmt.Fprintf(w, "trusts      %d of %d, %s\n", cov.GetTrustsAnswered(), cov.GetTrustsExpected(),
			activityShare(cov.GetActivityAnswered(), cov.GetActivityExpected()))
		for _, s := range cov.GetSites() {
			if s.GetKind() == havenv1.SiteKind_SITE_KIND_TRUST && s.GetState() != havenv1.SiteState_SITE_STATE_DONE {
				fmt.Fprintf(w, "missing     trust %s (%s): the table leaves out the hospital activity it holds\n",
					s.GetSiteOds(), siteStateName(s.GetState()))
			}
		}
	}
	for _, r := range run.GetPolicyReasons() {
		fmt.Fprintf(w, "reason      %s: %s\n", safeText(r.GetCode()), safeText(r.GetMessage()))
	}
	if run.GetError() != "" {
		fmt.Fprintf(w, "error       %s\n", safeText(run.GetError()))
	}
	if rel := run.GetRelease(); rel != nil {
		rule := fmt.Sprintf("counts under %d withheld, rounded to %d", rel.GetMinCellCount(), rel.GetRoundingBase())
		if p := rel.GetPerturbationTable(); p != "" {
			rule = fmt.Sprintf("counts perturbed by %s, sums rounded to %d", safeText(p), rel.GetRoundingBase())
		}
		fmt.Fprintf(w, "released    %d rows, %d values released, %d withheld (%s)\n",
			rel.GetRows(), rel.GetCellsReleased(), rel.GetCellsWithheld(), rule)
	}
	if sites := cov.GetSites(); len(sites) > 0 {
		fmt.Fprintln(w, "sites:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range sites {
			detail := s.GetError()
			for _, r := range s.GetReasons() {
				detail = strings.TrimSpace(detail + " " + r.GetCode() + ": " + r.GetMessage())
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d rows\t%s\n", safeText(s.GetSiteOds()), strings.ToLower(strings.TrimPrefix(s.GetKind().String(), "SITE_KIND_")),
				siteStateName(s.GetState()), s.GetRows(), safeText(detail))
		}
		tw.Flush()
	}
}

func checkRunArg(id string) error {
	if err := havenv1.CheckID(id); err != nil {
		return fmt.Errorf("run id: %w", err)
	}
	return nil
}

func newQueryStatusCmd(a *app, f *queryFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "status RUN",
		Short:   "Show a run: its state, coverage and each site's part",
		Example: "  haven query status run-ABC123",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRunArg(args[0]); err != nil {
				return err
			}
			return f.withClient(func(_ *grpc.ClientConn, c havenv1.CoordinatorClient) error {
				resp, err := c.GetRun(cmd.Context(), &havenv1.GetRunRequest{RunId: args[0]})
				if err != nil {
					return rpcError(err)
				}
				printRun(a.stdout, resp.GetRun())
				return nil
			})
		},
	}
}

func newQueryCancelCmd(a *app, f *queryFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     "cancel RUN",
		Short:   "Cancel a run in progress; its sites are told to stop",
		Example: "  haven query cancel run-ABC123 --reason 'wrong index date'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRunArg(args[0]); err != nil {
				return err
			}
			return f.withClient(func(_ *grpc.ClientConn, c havenv1.CoordinatorClient) error {
				resp, err := c.CancelRun(cmd.Context(), &havenv1.CancelRunRequest{RunId: args[0], Reason: reason})
				if err != nil {
					return rpcError(err)
				}
				fmt.Fprintf(a.stdout, "run %s: %s\n", args[0], stateName(resp.GetRun().GetState()))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the run register")
	return cmd
}

func newQueryRunsCmd(a *app, f *queryFlags) *cobra.Command {
	var (
		states     []string
		definition string
		limit      int
	)
	cmd := &cobra.Command{
		Use:     "runs",
		Short:   "List runs, newest first",
		Example: "  haven query runs\n  haven query runs --state released --definition statins-chd",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var want []havenv1.RunState
			for _, s := range states {
				v, ok := havenv1.RunState_value["RUN_STATE_"+strings.ToUpper(s)]
				if !ok || v == 0 {
					return fmt.Errorf("--state %q: want pending, running, linking, released, refused, failed, cancelled or interrupted", s)
				}
				want = append(want, havenv1.RunState(v))
			}
			if limit < 1 {
				return errors.New("--limit must be at least 1")
			}
			return f.withClient(func(_ *grpc.ClientConn, c havenv1.CoordinatorClient) error {
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "RUN\tDEFINITION\tSTATE\tSUBMITTED\tREQUESTER\tSITES\tPURPOSE")
				token, n := "", 0
				for n < limit {
					resp, err := c.ListRuns(cmd.Context(), &havenv1.ListRunsRequest{States: want, DefinitionId: definition,
						PageToken: token, PageSize: int32(min(limit-n, 500))})
					if err != nil {
						return rpcError(err)
					}
					for _, r := range resp.GetRuns() {
						cov := r.GetCoverage()
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", safeText(r.GetId()), safeText(r.GetDefinitionId()), stateName(r.GetState()),
							r.GetSubmittedAt().AsTime().Format(time.RFC3339), safeText(r.GetRequester().GetId()),
							cov.GetSitesAnswered(), cov.GetSitesExpected(), safeText(r.GetPurpose()))
						n++
					}
					if token = resp.GetNextPageToken(); token == "" {
						break
					}
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringSliceVar(&states, "state", nil, "only runs in these states (repeatable)")
	cmd.Flags().StringVar(&definition, "definition", "", "only runs of this definition")
	cmd.Flags().IntVar(&limit, "limit", 50, "most runs to list")
	return cmd
}

func newQueryFetchCmd(a *app, f *queryFlags) *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "fetch RUN [--format table|csv|json|arrow]",
		Short: "Fetch a run's released table",
		Long: `Fetch the released table of a run you submitted. Withheld values are shown
with the reason disclosure control withheld them: low_count (a count under the
threshold), few_contributors, dominance (one patient would dominate a sum),
secondary (withheld so another withheld value cannot be worked out). Margin
rows total over the other dimensions; the total row over everything.

Formats: table (for reading), csv and json (values, and a <measure>__withheld
column with the reason), arrow (the Arrow IPC stream as released, signed by the
coordinator; check it with haven query verify). Every format carries the
release's provenance: the run, definition id, version and hash, parameters,
purpose, bundle revision, disclosure rules, coverage, node versions and times;
json in the document, arrow in the schema metadata, and csv written with --out
in a sidecar file <out>.provenance.json.`,
		Example: "  haven query fetch run-ABC123\n  haven query fetch run-ABC123 --format csv --out table.csv",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRunArg(args[0]); err != nil {
				return err
			}
			switch format {
			case "table", "csv", "json", "arrow":
			default:
				return fmt.Errorf("--format %q: want table, csv, json or arrow", format)
			}
			return f.withClient(func(conn *grpc.ClientConn, _ havenv1.CoordinatorClient) error {
				tkt, err := havenv1.NewTableTicket(args[0])
				if err != nil {
					return err
				}
				stream, err := flight.NewFlightServiceClient(conn).DoGet(cmd.Context(), tkt)
				if err != nil {
					return rpcError(err)
				}
				rdr, err := flight.NewRecordReader(stream)
				if err != nil {
					return rpcError(err)
				}
				defer rdr.Release()
				w := a.stdout
				if out != "" {
					file, err := os.Create(out)
					if err != nil {
						return err
					}
					defer file.Close()
					w = file
				}
				if format == "arrow" {
					iw := ipc.NewWriter(w, ipc.WithSchema(rdr.Schema()))
					for rdr.Next() {
						if err := iw.Write(rdr.Record()); err != nil {
							return err
						}
					}
					if err := rdr.Err(); err != nil && !errors.Is(err, io.EOF) {
						return rpcError(err)
					}
					return iw.Close()
				}
				tab, err := release.Read(rdr)
				if err != nil {
					return rpcError(err)
				}
				switch format {
				case "csv":
					if out != "" {
						if err := writeSidecar(out+".provenance.json", tab); err != nil {
							return err
						}
					}
					return writeCSV(w, tab)
				case "json":
					return writeJSON(w, tab)
				}
				writeTable(w, tab)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table, csv, json or arrow")
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of standard output")
	return cmd
}

// maxVerifyBytes bounds the table file haven query verify reads: a
// released table is small (one row per cell, margin and total).
const maxVerifyBytes = 256 << 20

func newQueryVerifyCmd(a *app) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "verify --key COORDINATOR.pub FILE",
		Short: "Check a fetched Arrow table's signature and provenance",
		Long: `Check that FILE, a table written by haven query fetch --format arrow, is
exactly what the coordinator released: the coordinator's ed25519 signature
covers every value of every row and the provenance in the schema metadata (run,
definition id, version and hash, parameters, purpose, bundle revision,
disclosure rules, coverage, columns). A table that is unsigned, signed by
another key, or altered is refused, naming what failed. Needs no connection.`,
		Example: "  haven query fetch run-ABC123 --format arrow --out table.arrow\n  haven query verify --key release-signing.pub table.arrow",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return errors.New("--key: required: the coordinator's release public key (PEM)")
			}
			pub, err := release.LoadPublicKey(keyFile)
			if err != nil {
				return err
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			b, err := io.ReadAll(io.LimitReader(f, maxVerifyBytes+1))
			if err != nil {
				return fmt.Errorf("read %s: %w", args[0], err)
			}
			if len(b) > maxVerifyBytes {
				return fmt.Errorf("%s: over %d bytes; not a released table", args[0], maxVerifyBytes)
			}
			tab, err := release.Verify(b, pub)
			if err != nil {
				return fmt.Errorf("%s: REFUSED: %w", args[0], err)
			}
			m := tab.Meta
			fmt.Fprintf(a.stdout, "%s: signature good (key %s)\nrun %s: %s v%d (sha256 %s), purpose %s, bundle %s, released %s\n",
				safeText(args[0]), release.KeyID(pub), safeText(m.RunID), safeText(m.DefinitionID), m.DefinitionVersion,
				safeText(m.DefinitionHash), safeText(m.Purpose), safeText(m.BundleRevision), m.ReleasedAt.UTC().Format(time.RFC3339))
			writeTable(a.stdout, tab)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "the coordinator's release public key (PEM), from haven pki signing-key")
	return cmd
}

// activityShare says how much of the asked trusts' hospital activity
// answered.
func activityShare(answered, expected int64) string {
	if expected <= 0 {
		return "hospital activity not reported"
	}
	return fmt.Sprintf("hospital activity %d of %d records (%.1f%%)", answered, expected, 100*float64(answered)/float64(expected))
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// formatDisplay is formatValue for people reading a table: whole numbers as
// they are, fractions (means, rates) to 4 significant figures. CSV, JSON and
// Arrow keep the released value exactly.
func formatDisplay(v float64) string {
	if v == math.Trunc(v) {
		return formatValue(v)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// keyCells are a row's dimension values for people: a margin or the total
// says what it spans.
func keyCells(tab *release.Table, r release.Row) []string {
	out := make([]string, len(tab.Dims))
	for d := range tab.Dims {
		switch {
		case r.Kind == release.RowTotal:
			out[d] = "(total)"
		case r.Kind == release.RowMargin && d != r.MarginDim:
			out[d] = "(all)"
		default:
			out[d] = r.Key[d]
		}
	}
	return out
}

func writeTable(w io.Writer, tab *release.Table) {
	m := tab.Meta
	fmt.Fprintf(w, "run %s: %s v%d, purpose %s, released %s\n", m.RunID, m.DefinitionID, m.DefinitionVersion, m.Purpose,
		m.ReleasedAt.Format(time.RFC3339))
	var sub string
	if !m.SubmittedAt.IsZero() {
		sub = ", submitted " + m.SubmittedAt.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "definition sha256 %s, bundle %s%s\n", m.DefinitionHash, m.BundleRevision, sub)
	if len(m.Parameters) > 0 {
		var ps []string
		for _, k := range slices.Sorted(maps.Keys(m.Parameters)) {
			ps = append(ps, k+"="+m.Parameters[k])
		}
		fmt.Fprintf(w, "parameters %s\n", strings.Join(ps, " "))
	}
	if m.Perturbed() {
		// Perturbed counts are neither rounded nor withheld as small: say
		// so, or a reader takes 0 or 10 for an exact or rounded count.
		fmt.Fprintf(w, "coverage %d of %d sites, %d of %d people; counts perturbed by %s (key range %d; the same people give the same value in every run), other values rounded to %d\n",
			m.SitesAnswered, m.SitesExpected, m.PopulationAnswered, m.PopulationExpected, m.PerturbationTable, m.PerturbationKeyRange, m.RoundingBase)
	} else {
		fmt.Fprintf(w, "coverage %d of %d sites, %d of %d people; counts under %d withheld, values rounded to %d\n",
			m.SitesAnswered, m.SitesExpected, m.PopulationAnswered, m.PopulationExpected, m.MinCellCount, m.RoundingBase)
	}
	if m.TrustsExpected > 0 {
		fmt.Fprintf(w, "trusts %d of %d, %s\n", m.TrustsAnswered, m.TrustsExpected, activityShare(m.ActivityAnswered, m.ActivityExpected))
	}
	if m.DominanceN > 0 {
		fmt.Fprintf(w, "dominance rule (%d, %g) on the measures policy names\n", m.DominanceN, m.DominanceK)
	}
	if len(m.NodeVersions) > 0 {
		var vs []string
		for _, k := range slices.Sorted(maps.Keys(m.NodeVersions)) {
			vs = append(vs, k+"="+m.NodeVersions[k])
		}
		fmt.Fprintf(w, "node versions %s\n", strings.Join(vs, " "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := slices.Clone(tab.Dims)
	for _, ms := range tab.Measures {
		header = append(header, ms.Name)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	reasons := map[string]bool{}
	for _, r := range tab.Rows {
		cells := keyCells(tab, r)
		for _, v := range r.Values {
			switch {
			case v.Released:
				cells = append(cells, formatDisplay(v.Value))
			case v.Withheld():
				cells = append(cells, "withheld ("+string(v.Reason)+")")
				reasons[string(v.Reason)] = true
			default:
				cells = append(cells, "n/a")
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	if len(reasons) > 0 {
		fmt.Fprintln(w)
		for _, code := range slices.Sorted(maps.Keys(reasons)) {
			fmt.Fprintf(w, "withheld (%s): %s\n", code, reasonText(code))
		}
	}
}

func reasonText(code string) string {
	switch code {
	case "low_count":
		return "the count is under the threshold"
	case "few_contributors":
		return "too few patients contribute to the value"
	case "dominance":
		return "one patient's value makes up most of it"
	case "secondary":
		return "withheld so that another withheld value cannot be worked out from the totals"
	case "min_max_disclosive":
		return "a minimum or maximum is one patient's own value"
	case "attribute_disclosure":
		return "the group has too few patients: its values would say something about each of them"
	}
	return "withheld by disclosure control"
}

// writeSidecar writes a CSV table's provenance beside it: CSV has no place
// for it that every reader skips.
func writeSidecar(path string, tab *release.Table) error {
	b, err := json.MarshalIndent(provenance(tab), "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the provenance sidecar: %w", err)
	}
	return nil
}

func writeCSV(w io.Writer, tab *release.Table) error {
	cw := csv.NewWriter(w)
	header := append([]string{release.RowKindField}, tab.Dims...)
	for _, m := range tab.Measures {
		header = append(header, m.Name, m.Name+release.WithheldSuffix)
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	for _, r := range tab.Rows {
		rec := append([]string{string(r.Kind)}, r.Key...)
		for _, v := range r.Values {
			if v.Released {
				rec = append(rec, formatValue(v.Value), "")
			} else {
				rec = append(rec, "", string(v.Reason))
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// provenance is a table's provenance as a JSON document: the fields of
// haven query fetch --format json, and the CSV sidecar.
func provenance(tab *release.Table) map[string]any {
	m := tab.Meta
	doc := map[string]any{
		"run_id": m.RunID, "definition": m.DefinitionID, "definition_version": m.DefinitionVersion,
		"definition_sha256": m.DefinitionHash, "purpose": m.Purpose, "bundle_revision": m.BundleRevision,
		"released_at": m.ReleasedAt, "submitted_at": nil,
		"min_cell_count": m.MinCellCount, "rounding_base": m.RoundingBase,
		"dominance": map[string]any{"n": m.DominanceN, "k": m.DominanceK}, "perturbation": nil,
		"coverage": map[string]int64{"sites_expected": m.SitesExpected, "sites_answered": m.SitesAnswered,
			"population_expected": m.PopulationExpected, "population_answered": m.PopulationAnswered,
			"trusts_expected": m.TrustsExpected, "trusts_answered": m.TrustsAnswered,
			"activity_expected": m.ActivityExpected, "activity_answered": m.ActivityAnswered},
		"parameters": m.Parameters, "node_versions": m.NodeVersions, "dims": tab.Dims, "measures": tab.Measures,
	}
	if !m.SubmittedAt.IsZero() {
		doc["submitted_at"] = m.SubmittedAt
	}
	if m.Perturbed() {
		doc["perturbation"] = map[string]any{"table": m.PerturbationTable, "key_range": m.PerturbationKeyRange}
	}
	return doc
}

func writeJSON(w io.Writer, tab *release.Table) error {
	doc := provenance(tab)
	rows := make([]map[string]any, 0, len(tab.Rows))
	for _, r := range tab.Rows {
		row := map[string]any{release.RowKindField: r.Kind}
		for d, name := range tab.Dims {
			if r.Kind == release.RowCell || (r.Kind == release.RowMargin && d == r.MarginDim) {
				row[name] = r.Key[d]
			} else {
				row[name] = nil
			}
		}
		for j, ms := range tab.Measures {
			v := r.Values[j]
			if v.Released {
				row[ms.Name] = v.Value
				row[ms.Name+release.WithheldSuffix] = nil
			} else {
				row[ms.Name] = nil
				row[ms.Name+release.WithheldSuffix] = v.Reason
			}
		}
		rows = append(rows, row)
	}
	doc["rows"] = rows
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
