package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// app carries what every subcommand shares: where output goes and how to
// log. It replaces package-level state so tests can run commands in parallel.
type app struct {
	stdout, stderr io.Writer
	logFormat      string
	logLevel       string
	logger         *slog.Logger
}

// exitError carries an exit status other than 1 out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// run executes the haven command line and returns the process exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "haven: %v\n", err)
	if ee, ok := errors.AsType[*exitError](err); ok {
		return ee.code
	}
	return 1
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "haven",
		Short: "Federated, disclosure-controlled queries across NHS providers",
		Long: `Haven answers aggregate questions across GP practices and hospital trusts
while patient records stay on the providers' own machines.

A node at each site runs only queries that the governance board approved and
signed; a coordinator links the nodes' pseudonymised partial results for one
run, in memory, and releases only tables that passed disclosure control.`,
		Example: `  # Generate a small synthetic network of 8 practices and 2 trusts
  haven synth --out ./net --scale small --seed 1

  # Print the version of this binary
  haven version`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			l, err := newLogger(a.stderr, a.logFormat, a.logLevel)
			if err != nil {
				return err
			}
			a.logger = l
			return nil
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&a.logFormat, "log-format", "auto", "log format: auto (text on a terminal, JSON otherwise), text or json")
	pf.StringVar(&a.logLevel, "log-level", "info", "least severe level logged: debug, info, warn or error")

	root.AddCommand(
		newVersionCmd(a),
		newSynthCmd(a),
		newPKICmd(a),
		newAuditCmd(a),
		newPolicyCmd(a),
		newNodeCmd(a),
		newCoordinatorCmd(a),
		newQueryCmd(a),
		newDemoCmd(a),
		newOIDCDevCmd(a),
		newBenchCmd(a),
	)
	return root
}

// newLogger builds the slog logger the flags ask for. "auto" picks text for
// a person at a terminal and JSON for a log collector.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "auto":
		if isTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want auto, text or json", format)
}

// isTerminal reports whether w is a terminal, for choosing log formats and
// whether to draw progress bars.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
