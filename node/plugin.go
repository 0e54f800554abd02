package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/havenhealth/haven/node/connector"
	"github.com/havenhealth/haven/node/runner"
	"github.com/havenhealth/haven/node/sqlgen"
)

// plugin keeps the connector plugin running: it launches it on first use,
// and again on the next use after it crashed, so that a plugin that dies
// fails the task it was running and nothing else. It is the runner's
// Source.
type plugin struct {
	cfg connector.LaunchConfig
	log *slog.Logger

	mu       sync.Mutex
	host     *connector.Host
	desc     connector.Description
	launches int
	closed   bool

	// last is the last description, readable without waiting for a
	// launch in progress (the status file is written from the session's
	// state changes).
	last atomic.Pointer[connector.Description]
}

var _ runner.Source = (*plugin)(nil)

func newPlugin(cfg connector.LaunchConfig, log *slog.Logger) *plugin {
	return &plugin{cfg: cfg, log: log}
}

// get returns the running plugin and its description, launching it if it
// is not running.
func (p *plugin) get(ctx context.Context) (*connector.Host, connector.Description, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, connector.Description{}, errors.New("connector plugin: node is stopping")
	}
	if p.host != nil && !p.host.Exited() {
		return p.host, p.desc, nil
	}
	if p.host != nil {
		p.log.Warn("connector plugin exited; starting it again")
		p.host.Close()
		p.host = nil
	}
	h, err := connector.Launch(ctx, p.cfg)
	if err != nil {
		return nil, connector.Description{}, err
	}
	d, err := h.Describe(ctx)
	if err != nil {
		h.Close()
		return nil, connector.Description{}, err
	}
	p.host, p.desc = h, d
	p.last.Store(&d)
	p.launches++
	p.log.Info("connector plugin started", "dialect", string(d.Dialect), "plugin_version", d.PluginVersion, "tables", len(d.Tables), "launches", p.launches)
	return h, d, nil
}

// Describe returns the plugin's description, launching it if need be.
func (p *plugin) Describe(ctx context.Context) (connector.Description, error) {
	_, d, err := p.get(ctx)
	return d, err
}

// Dialect is the SQL dialect of the connector.
func (p *plugin) Dialect(ctx context.Context) (sqlgen.Dialect, error) {
	_, d, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	return sqlgen.ParseDialect(string(d.Dialect))
}

// HasTable reports whether the connector exposes a CDM table.
func (p *plugin) HasTable(ctx context.Context, name string) (bool, error) {
	_, d, err := p.get(ctx)
	if err != nil {
		return false, err
	}
	_, ok := d.Table(name)
	return ok, nil
}

// Query runs q in the plugin.
func (p *plugin) Query(ctx context.Context, q connector.Query) (runner.Records, error) {
	h, _, err := p.get(ctx)
	if err != nil {
		return nil, err
	}
	res, err := h.Query(ctx, q)
	if err != nil {
		if errors.Is(err, connector.ErrPluginExited) {
			p.log.Error("connector plugin crashed during a query; it will be started again for the next one")
		}
		return nil, err
	}
	return res, nil
}

// Close stops the plugin for good.
func (p *plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.host == nil {
		return nil
	}
	err := p.host.Close()
	p.host = nil
	if err != nil {
		return fmt.Errorf("stop connector plugin: %w", err)
	}
	return nil
}

// lastDescription is the description the plugin last gave, if any,
// without starting it.
func (p *plugin) lastDescription() (connector.Description, bool) {
	if d := p.last.Load(); d != nil {
		return *d, true
	}
	return connector.Description{}, false
}
