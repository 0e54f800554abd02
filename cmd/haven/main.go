// Command haven is the one binary of a Haven network: the coordinator, the
// node that runs at each GP practice and hospital trust, the commissioner's
// query client, the governance board's policy tools and the synthetic data
// generator are all subcommands of it. Run "haven --help" for the list.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
