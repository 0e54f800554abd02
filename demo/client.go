package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/havenhealth/haven/cdm"
	"github.com/havenhealth/haven/client"
	"github.com/havenhealth/haven/coordinator/audit"
	havenv1 "github.com/havenhealth/haven/proto/haven/v1"
	"github.com/havenhealth/haven/wire"
)

// pollInterval is how often the demo looks at what it waits for.
const pollInterval = 100 * time.Millisecond

// waitListening waits until addr accepts TCP connections, failing early if
// the coordinator process exits.
func waitListening(ctx context.Context, addr string, p *proc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return p.exitError()
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("the coordinator did not listen on %s within %v; see its log %s:\n%s", addr, timeout, p.log, logTail(p.log, 8))
			}
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// linkEvent is the data of a coordinator audit entry of kind node.
type linkEvent struct {
	Event   string `json:"event"`
	Reason  string `json:"reason"`
	Kind    string `json:"kind"`
	Session string `json:"session"`
}

// siteLinks reads the coordinator's audit log after entry from and
// returns which sites have a live link now and, for sites refused, why. The audit log is the
// coordinator's own record of each Register it accepted; it is written
// after the link is in the registry that runs are planned from. A GP
// practice counts as up once the coordinator has also received its type 1
// opt-out list on that link: the list has then been relayed to every node
// ahead of any task (so a run submitted after sees every objection). A
// link's end counts only if it is the site's latest link: a node that
// reconnects has its new link accepted before the old one is logged as
// ended ("replaced by a newer link from the same site").
func siteLinks(auditLog string, from uint64) (up map[string]bool, rejected map[string]string, err error) {
	f, err := os.Open(auditLog)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	up, rejected = map[string]bool{}, map[string]string{}
	unpublished := map[string]bool{}
	session := map[string]string{} // each site's latest link
	_, err = audit.Scan(f, func(e audit.Entry) {
		if e.Seq <= from || e.Kind != audit.KindNode {
			return
		}
		var ev linkEvent
		if json.Unmarshal(e.Data, &ev) != nil {
			return
		}
		switch ev.Event {
		case "connected":
			session[e.Actor] = ev.Session
			if ev.Kind == string(cdm.KindGP) {
				unpublished[e.Actor] = true
				delete(up, e.Actor)
			} else {
				up[e.Actor] = true
			}
			delete(rejected, e.Actor)
		case "opt_out_list_received":
			if unpublished[e.Actor] {
				delete(unpublished, e.Actor)
				up[e.Actor] = true
			}
		case "disconnected":
			if ev.Session != session[e.Actor] {
				return // an older link, replaced
			}
			delete(up, e.Actor)
			delete(unpublished, e.Actor)
		case "rejected":
			rejected[e.Actor] = ev.Reason
		}
	})
	if be, ok := errors.AsType[*audit.BrokenError](err); ok && strings.Contains(be.Reason, "incomplete") {
		err = nil // the coordinator is writing the last entry; the rest stands
	}
	return up, rejected, err
}

// waitRegistered waits until every site in sites has a live link to the
// coordinator made after audit entry from, reporting the count on progress as it rises. It fails early
// if a child process exits, and on timeout names the sites missing and
// where their logs are.
func (d *demoRun) waitRegistered(ctx context.Context, sites []string, from uint64, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	shown := -1
	for {
		up, rejected, err := siteLinks(d.l.auditLog(), from)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read the coordinator's audit log: %w", err)
		}
		var missing []string
		for _, s := range sites {
			if !up[s] {
				missing = append(missing, s)
			}
		}
		if n := len(sites) - len(missing); n != shown {
			d.status("starting %d nodes… %d/%d registered", len(sites), n, len(sites))
			shown = n
		}
		if len(missing) == 0 {
			d.progressDone()
			return slices.Sorted(maps.Keys(up)), nil
		}
		for _, s := range missing {
			if why, ok := rejected[s]; ok {
				d.progressDone()
				return nil, fmt.Errorf("the coordinator refused node %s: %s; see %s", s, why, d.nodeLog(s))
			}
		}
		if p := d.procs.firstExited(); p != nil {
			d.progressDone()
			return nil, p.exitError()
		}
		select {
		case <-ctx.Done():
			d.progressDone()
			if ctx.Err() != context.DeadlineExceeded {
				return nil, ctx.Err()
			}
			var b strings.Builder
			fmt.Fprintf(&b, "%d of %d sites did not register with the coordinator within %v:", len(missing), len(sites), timeout)
			for _, s := range missing {
				fmt.Fprintf(&b, "\n  %s: log %s ends:\n%s", s, d.nodeLog(s), logTail(d.nodeLog(s), 4))
			}
			fmt.Fprintf(&b, "\n  coordinator log: %s", d.l.log(coordinatorName))
			return nil, errors.New(b.String())
		case <-time.After(pollInterval):
		}
	}
}

// dialCommissioner connects to the coordinator as the demo commissioner,
// with the user certificate the demo issued.
func dialCommissioner(addr string, p *pkiFiles) (*client.Client, error) {
	return client.Dial(client.Config{Addr: addr, CAFile: p.ca, CertFile: p.userCert, KeyFile: p.userKey, Program: "the demo"})
}

// paramList is a query's parameters as the name=value strings the client
// parses, in name order.
func paramList(raw map[string]string) []string {
	out := make([]string, 0, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		out = append(out, name+"="+raw[name])
	}
	return out
}

// submission is a query as the client submits it.
func submission(q Query) client.Submission {
	return client.Submission{Definition: q.Definition, Params: paramList(q.Parameters), Purpose: q.Purpose}
}

// submit runs one query as the commissioner: it submits the run, follows
// it to its end and, if a table was released, fetches it.
func (d *demoRun) submit(ctx context.Context, c *client.Client, q Query, timeout time.Duration) (RunResult, error) {
	res := RunResult{Query: q}
	def, err := c.Definition(ctx, q.Definition)
	if err != nil {
		return res, fmt.Errorf("definition %s: %w", q.Definition, err)
	}
	res.Definition = def.GetDefinition()
	began := time.Now()
	run, err := c.SubmitTo(ctx, def.GetDefinition(), submission(q))
	if err != nil {
		return res, fmt.Errorf("submit %s: %w", q.Definition, err)
	}
	if !wire.FinalRun(run.GetState()) {
		id := run.GetId()
		if run, err = d.follow(ctx, c, id, timeout); err != nil {
			return res, fmt.Errorf("run %s of %s: %w", id, q.Definition, err)
		}
	}
	res.Run, res.Elapsed = run, time.Since(began)
	if run.GetState() != havenv1.RunState_RUN_STATE_RELEASED {
		return res, nil
	}
	if res.Table, err = c.Fetch(ctx, run.GetId()); err != nil {
		return res, fmt.Errorf("fetch the table of run %s: %w", run.GetId(), err)
	}
	return res, nil
}

// follow watches a run until it reaches a final state, showing its
// progress on the status line. A watch that ends early (the link dropped)
// is started again, unless a child process has exited.
func (d *demoRun) follow(ctx context.Context, c *client.Client, runID string, timeout time.Duration) (*havenv1.Run, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer d.progressDone()
	var last string
	progress := func(r *havenv1.Run) {
		cov := r.GetCoverage()
		line := fmt.Sprintf("  %s %s: %d/%d sites answered", runID, client.StateLabel(r.GetState()), cov.GetSitesAnswered(), cov.GetSitesExpected())
		if line != last {
			d.status("%s", line)
			last = line
		}
	}
	for {
		run, err := c.Follow(ctx, runID, progress)
		if err == nil {
			return run, nil
		}
		if ctx.Err() == context.DeadlineExceeded {
			return nil, fmt.Errorf("not finished after %v; see the coordinator's log %s", timeout, d.l.log(coordinatorName))
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if p := d.procs.firstExited(); p != nil {
			return nil, p.exitError()
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
}
