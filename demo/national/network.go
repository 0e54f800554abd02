package national

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator/sitesim"
	"github.com/havenhealth/haven/demo"
	"github.com/havenhealth/haven/internal/pki"
	"github.com/havenhealth/haven/policy/catalog"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/release"
)

// heartbeat is the links' heartbeat interval, as deployed.
const heartbeat = 15 * time.Second

// site is one site of the simulated network.
type site struct {
	ods        string
	kind       cdm.SiteKind
	index      int   // practice or trust index in the population
	population int64 // registered population (practices)
	activity   int64 // hospital activity records (trusts)
}

// network is one coordinator process, the files it runs from and the
// simulated sites linked to it.
type network struct {
	dir, addr, configPath, caFile string
	ca                            *pki.CA
	userCert, userKey             string
	cat                           *catalog.Catalog
	pop                           *population
	sites                         []site
	nodes                         []*sitesim.Site
	dials                         []func() (*grpc.ClientConn, error)
	coord                         *coordinatorProc
	haven                         string
	statins, t2dm                 *catalog.Definition
	statinBands, t2dmBands        []string
}

// netOptions shape one network.
type netOptions struct {
	deadline time.Duration
	maxRows  int64
	budget   string
	limit    string   // memory_limit
	args     []string // extra arguments of coordinator run
	// configure adjusts each simulated site before it links.
	configure func(s site, st *sitesim.Site)
}

// setUp writes a network's files under dir for pop, starts its
// coordinator and makes a simulated site for every site of the network;
// nothing is linked yet.
func (o *Options) setUp(ctx context.Context, dir string, pop *population, no netOptions) (*network, error) {
	w := &network{dir: dir, pop: pop, haven: o.Haven}
	for p := range o.Practices {
		w.sites = append(w.sites, site{ods: fmt.Sprintf("N%05d", p+1), kind: cdm.KindGP, index: p, population: pop.listSize(p)})
	}
	activity := make([]int64, o.Trusts)
	var g errgroup.Group
	g.SetLimit(runtime.NumCPU())
	for t := range o.Trusts {
		g.Go(func() error { activity[t] = pop.trustRowCount(t); return nil })
	}
	_ = g.Wait()
	for t := range o.Trusts {
		w.sites = append(w.sites, site{ods: fmt.Sprintf("RN%03d", t+1), kind: cdm.KindTrust, index: t, activity: activity[t]})
	}
	if err := w.writeFiles(ctx, o.BundleSource, no); err != nil {
		return nil, err
	}
	var err error
	if w.statinBands, err = ageBands(w.statins); err != nil {
		return nil, err
	}
	if w.t2dmBands, err = ageBands(w.t2dm); err != nil {
		return nil, err
	}
	if err := w.makeSites(o.gate, no.configure); err != nil {
		return nil, err
	}
	if w.coord, err = startCoordinator(ctx, o.Haven, w.configPath, w.addr, filepath.Join(dir, "coordinator.log"), no.args...); err != nil {
		return nil, err
	}
	return w, nil
}

// writeFiles writes the network's PKI, signed bundle and coordinator
// configuration.
func (w *network) writeFiles(ctx context.Context, bundleSource string, no netOptions) error {
	pkiDir := filepath.Join(w.dir, "pki")
	ca, caPEM, caKey, err := pki.NewCA("Haven national simulation CA", time.Now())
	if err != nil {
		return err
	}
	w.ca = ca
	if w.caFile, _, err = pki.WriteFiles(pkiDir, "ca", caPEM, caKey); err != nil {
		return err
	}
	if _, err := w.issue("server", pki.Request{Kind: pki.KindServer, Hosts: []string{"127.0.0.1", "localhost"}}); err != nil {
		return err
	}
	user, err := w.issue("user-ana-QHM", pki.Request{Kind: pki.KindUser, ID: "ana", Org: "QHM", Roles: []string{"analyst"}})
	if err != nil {
		return err
	}
	w.userCert, w.userKey = user[0], user[1]
	_, signingKey, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	signPriv, _, err := release.MarshalKeys(signingKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pkiDir, "release-signing.key"), signPriv, 0o600); err != nil {
		return err
	}
	// The simulated sites send exact tables without cell keys, so the
	// board's copy switches cell-key perturbation off; every other rule
	// of the reference bundle holds.
	bundle := filepath.Join(w.dir, "bundle")
	noPerturbation := demo.EditData(func(data map[string]any) error {
		d, err := demo.Object(data, "disclosure")
		if err != nil {
			return err
		}
		p, err := demo.Object(d, "perturbation")
		if err != nil {
			return err
		}
		p["enabled"] = false
		return nil
	})
	if err := demo.SignBundle(bundleSource, bundle, filepath.Join(w.dir, "board.key"), filepath.Join(w.dir, "board.pub.pem"), noPerturbation); err != nil {
		return err
	}
	if w.cat, err = catalog.Load(os.DirFS(bundle)); err != nil {
		return fmt.Errorf("the signed bundle's catalogue: %w", err)
	}
	var ok1, ok2 bool
	w.statins, ok1 = w.cat.Get("statins-chd")
	w.t2dm, ok2 = w.cat.Get("t2dm-emergency-admissions")
	if !ok1 || !ok2 {
		return errors.New("the bundle lacks statins-chd or t2dm-emergency-admissions")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	w.addr = lis.Addr().String()
	lis.Close()

	var sites bytes.Buffer
	for _, s := range w.sites {
		fmt.Fprintf(&sites, "    - {ods: %s, kind: %s, population: %d}\n", s.ods, s.kind, s.population)
	}
	extra := ""
	if no.maxRows > 0 {
		extra += fmt.Sprintf("uploads: {max_rows: %d}\n", no.maxRows)
	}
	if no.budget != "" {
		extra += fmt.Sprintf("linkage: {memory_budget: %q}\n", no.budget)
	}
	if no.limit != "" {
		extra += fmt.Sprintf("memory_limit: %q\n", no.limit)
	}
	yml := fmt.Sprintf(`# Written by haven bench national.
listen: %s
tls: {cert: pki/server.crt, key: pki/server.key, ca: pki/ca.crt}
governance: {bundle: bundle, public_key: board.pub.pem, reload_interval: 0s}
releases: {signing_key: pki/release-signing.key}
data_dir: data
runs: {deadline: %s, heartbeat_interval: %s}
operator_roles: [operator]
%snetwork:
  sites:
%s`, w.addr, no.deadline, heartbeat, extra, sites.String())
	w.configPath = filepath.Join(w.dir, "coordinator.yaml")
	return os.WriteFile(w.configPath, []byte(yml), 0o600)
}

// issue issues a certificate into the network's pki directory.
func (w *network) issue(name string, req pki.Request) ([2]string, error) {
	_, certPEM, keyPEM, err := w.ca.Issue(req)
	if err != nil {
		return [2]string{}, fmt.Errorf("issue %s: %w", name, err)
	}
	c, k, err := pki.WriteFiles(filepath.Join(w.dir, "pki"), name, certPEM, keyPEM)
	return [2]string{c, k}, err
}

// makeSites issues every site's node certificate and makes its simulated
// site, answering from the population.
func (w *network) makeSites(gate chan struct{}, configure func(site, *sitesim.Site)) error {
	w.nodes = make([]*sitesim.Site, len(w.sites))
	w.dials = make([]func() (*grpc.ClientConn, error), len(w.sites))
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(runtime.NumCPU())
	for i, s := range w.sites {
		g.Go(func() error {
			cert, err := w.issue("node-"+s.ods, pki.Request{Kind: pki.KindNode, ODS: s.ods})
			if err != nil {
				return err
			}
			tc, err := pki.ClientTLS(cert[0], cert[1], w.caFile, "")
			if err != nil {
				return err
			}
			creds := credentials.NewTLS(tc)
			dial := func() (*grpc.ClientConn, error) {
				return grpc.NewClient(w.addr, grpc.WithTransportCredentials(creds))
			}
			st := sitesim.New(s.ods, s.kind, s.population, w.cat, dial)
			st.Gate = gate
			st.Activity = s.activity
			if s.kind == cdm.KindGP {
				st.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
					if task.GetDefinitionId() == w.t2dm.ID {
						return w.pop.practiceRows(s.index, schema, w.t2dmBands, task.GetRunId()), nil
					}
					return w.pop.statinRows(s.index, schema, w.statinBands)
				}
			} else {
				st.Answer = func(task *havenv1.Task, schema *arrow.Schema) ([]arrow.Record, error) {
					return w.pop.trustRows(s.index, schema, task.GetRunId()), nil
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if configure != nil {
				configure(s, st) // one at a time: it may count what it does
			}
			w.nodes[i], w.dials[i] = st, dial
			return nil
		})
	}
	return g.Wait()
}

// renew replaces every simulated site by a fresh one, as after the
// coordinator restarts.
func (w *network) renew() {
	for i, st := range w.nodes {
		n := sitesim.New(st.ODS, st.Kind, st.Population, w.cat, w.dials[i])
		n.Gate, n.Activity, n.Answer = st.Gate, st.Activity, st.Answer
		w.nodes[i] = n
	}
}

// closeLinks ends every site's link.
func (w *network) closeLinks() {
	for _, st := range w.nodes {
		st.Close()
	}
}

// stop ends the links and stops the coordinator.
func (w *network) stop() error {
	w.closeLinks()
	return w.coord.stop()
}

// client connects as the network's commissioner.
func (w *network) client() (*client.Client, error) {
	return client.Dial(client.Config{Addr: w.addr, CAFile: w.caFile, CertFile: w.userCert, KeyFile: w.userKey, Program: "haven bench national"})
}

// coordinatorProc is the coordinator process.
type coordinatorProc struct {
	cmd    *exec.Cmd
	exited chan error // receives Wait's result once
	log    string
}

func (c *coordinatorProc) pid() int { return c.cmd.Process.Pid }

// startCoordinator runs `haven coordinator run` on configPath and waits
// until it listens on addr.
func startCoordinator(ctx context.Context, haven, configPath, addr, logPath string, args ...string) (*coordinatorProc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(haven, append([]string{"--log-format", "text", "coordinator", "run", "--config", configPath}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start the coordinator: %w", err)
	}
	c := &coordinatorProc{cmd: cmd, exited: make(chan error, 1), log: logPath}
	go func() { c.exited <- cmd.Wait(); log.Close() }()
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return c, nil
		}
		select {
		case err := <-c.exited:
			return nil, fmt.Errorf("the coordinator exited (%v); its log is %s", err, logPath)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("the coordinator did not listen on %s: %w; its log is %s", addr, ctx.Err(), logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop stops the coordinator as an operator does, with SIGTERM, and
// waits for it to exit.
func (c *coordinatorProc) stop() error {
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop the coordinator: %w", err)
	}
	if err := <-c.exited; err != nil {
		return fmt.Errorf("the coordinator stopped with %v; its log is %s", err, c.log)
	}
	return nil
}

// kill ends the coordinator at once, when the simulation fails.
func (c *coordinatorProc) kill() {
	if c != nil {
		_ = c.cmd.Process.Kill() // an error means it has gone already
	}
}
