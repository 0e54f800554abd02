// Package demo runs a whole Haven network on one machine, as separate
// processes, for `haven demo` and `make demo`: the connector plugins built
// from source, the small synthetic network (8 practices, 2 trusts) made by
// `haven synth`, a network CA and a certificate for every party, the
// reference governance bundle signed with a board key made for the demo, a
// coordinator and one node per site, each its own `haven` process with its
// log in a file, and one aggregate-mode and one linkage-mode run submitted
// as a commissioner.
//
//	res, err := demo.Run(ctx, demo.Options{Dir: ".demo", Haven: exe, Stdout: os.Stdout, Stderr: os.Stderr})
//
// Start brings the same network up and hands it back running, for tests
// that break it: a Network submits runs as the commissioner and stops,
// kills (SIGKILL to the process group, as a power cut), restarts and
// freezes (SIGSTOP of the connector plugin, as a database that stops
// answering) its parts one at a time. Options.SitesPerNode serves several
// sites from each node process (`haven node run` with --config once per
// site), for networks at ICB scale on a small machine.
//
// Everything the demo writes lives under Options.Dir:
//
//	bin/                      connector plugins (and haven, when built here)
//	net/                      the synthetic network (haven synth)
//	pki/                      network CA, coordinator, node and commissioner certificates,
//	                          the coordinator's release signing key (release-signing.key, .pub)
//	board/, bundle/           the demo board's key pair and the signed copy of policy/bundle
//	linkage.key               the network linkage secret every node shares (0600)
//	perturbation.key          the network perturbation secret for record keys (0600)
//	coordinator/              coordinator.yaml, and data/ with the job store and audit log
//	nodes/<ODS>/              node.yaml, state/ and audit/ of each site's node
//	logs/                     one log file per process
//
// Every child is started in a process group of its own, so that stopping
// it (SIGTERM, then SIGKILL to the group after a grace period) also stops
// the connector plugin it started; on Linux a child also gets SIGTERM if
// the demo process dies without stopping it. Run stops every child before
// it returns, whether the demo succeeded, failed or was interrupted.
//
// The demo needs the Go toolchain and the module's source (it builds the
// plugins with `go build`, and the DuckDB plugin needs cgo); it installs
// nothing. With Options.Postgres it also needs PostgreSQL's server binaries
// (scripts/setup-postgres.sh).
package demo
