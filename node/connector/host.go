package connector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
)

// Defaults for LaunchConfig's timeouts.
const (
	DefaultStartTimeout    = 30 * time.Second
	DefaultDescribeTimeout = 30 * time.Second
	DefaultQueryTimeout    = 30 * time.Minute
)

// LaunchConfig says which plugin binary to run and how.
type LaunchConfig struct {
	// Path is the plugin binary.
	Path string
	// SHA256 is the binary's expected SHA-256 checksum in hex, from the
	// node's configuration. A binary that does not match is not started.
	SHA256 string
	// Args are the plugin's command-line arguments: its settings. They
	// are logged (go-plugin does, at debug); secrets belong in Env.
	Args []string
	// Env is the plugin's whole environment, as KEY=VALUE. The node's own
	// environment is not passed on, so a plugin sees only what its
	// configuration names (and go-plugin's handshake variables).
	Env []string
	// Logger receives the plugin's log lines, go-plugin's own, and the
	// plugin's stray output. Nil means slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds starting the plugin and the handshake;
	// DescribeTimeout each Describe; QueryTimeout each Query, from the
	// call to the end of its result. Zero means the default. A negative
	// DescribeTimeout or QueryTimeout means none: the call's ctx alone
	// bounds it.
	StartTimeout    time.Duration
	DescribeTimeout time.Duration
	QueryTimeout    time.Duration

	// afterCheck, when set, runs once the bytes to run have been checked
	// and before the process starts: the window in which an attacker would
	// swap the file at Path. Only tests set it (export_test.go), to swap
	// it there deterministically.
	afterCheck func()
}

func (c *LaunchConfig) checkAndSetDefaults() error {
	if c.Path == "" {
		return errors.New("no plugin path")
	}
	sum, err := hex.DecodeString(c.SHA256)
	if err != nil || len(sum) != sha256.Size {
		return fmt.Errorf("plugin %s: sha256 %q is not a hex SHA-256 checksum", c.Path, c.SHA256)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.StartTimeout, DefaultStartTimeout}, {&c.DescribeTimeout, DefaultDescribeTimeout}, {&c.QueryTimeout, DefaultQueryTimeout}} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			*d.v = 0
		}
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = DefaultStartTimeout // go-plugin needs one
	}
	return nil
}

// Host is a running connector plugin, seen from the node. It is a
// Connector, safe for concurrent use.
type Host struct {
	path      string
	client    *plugin.Client
	conn      *grpcClient
	closeOnce sync.Once
}

// Launch checks the plugin binary against its checksum, starts it, and
// completes the go-plugin handshake: gRPC only, with automatic mutual TLS
// on the private socket between the two processes. The plugin lives until
// Close, or until the node calls CleanupPlugins as it exits. ctx's
// deadline, if sooner than StartTimeout, bounds the start.
func Launch(ctx context.Context, cfg LaunchConfig) (*Host, error) {
	if err := cfg.checkAndSetDefaults(); err != nil {
		return nil, fmt.Errorf("launch connector: %w", err)
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("launch connector %s: %w", cfg.Path, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("launch connector %s: %w", path, err)
	}
	sum, _ := hex.DecodeString(cfg.SHA256) // checked above
	// Run a private copy, never the file at path: whoever can write path
	// could otherwise replace it between the checksum and the exec.
	dir, bin, err := privateCopy(path, sum)
	if err != nil {
		return nil, fmt.Errorf("launch connector: %w", err)
	}
	// Once the process has started it keeps the file open; the copy's name
	// is needed by nothing after that, whatever happens.
	defer os.RemoveAll(dir)
	if cfg.afterCheck != nil {
		cfg.afterCheck()
	}
	start := cfg.StartTimeout
	if dl, ok := ctx.Deadline(); ok {
		start = min(start, time.Until(dl))
	}
	cmd := exec.Command(bin, cfg.Args...)
	cmd.Env = append([]string{}, cfg.Env...)
	logger := cfg.Logger.With("connector", filepath.Base(path))
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  HandshakeConfig(),
		VersionedPlugins: versionedPlugins(nil, nil),
		Cmd:              cmd,
		SkipHostEnv:      true,
		// The copy is checked again, by go-plugin, just before it runs.
		SecureConfig:     &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Managed:          true,
		StartTimeout:     start,
		Logger:           newHCLogAdapter(logger),
		// Lines on the plugin's stderr reach Logger through go-plugin's
		// parser; keep no raw copy. What the plugin writes to its
		// redirected stdout and stderr after the handshake is logged.
		Stderr:     io.Discard,
		SyncStdout: &lineLogger{log: func(l string) { logger.Info(l, "stream", "stdout") }},
		SyncStderr: &lineLogger{log: func(l string) { logger.Info(l, "stream", "stderr") }},
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, fmt.Errorf("launch connector %s: %w: want sha256 %s", path, ErrChecksumMismatch, cfg.SHA256)
		}
		if exitedWithin(client, exitGrace) {
			return nil, fmt.Errorf("launch connector %s: %w during start-up (its log lines say why): %v", path, ErrPluginExited, err)
		}
		return nil, fmt.Errorf("launch connector %s: %w", path, err)
	}
	if v := client.NegotiatedVersion(); v != ProtocolVersion {
		client.Kill()
		return nil, fmt.Errorf("launch connector %s: plugin speaks protocol version %d, want %d", path, v, ProtocolVersion)
	}
	raw, err := rpc.Dispense(pluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("launch connector %s: %w", path, err)
	}
	conn, ok := raw.(*grpcClient)
	if !ok {
		client.Kill()
		return nil, fmt.Errorf("launch connector %s: plugin gave a %T, not a connector", path, raw)
	}
	conn.describeTimeout = cfg.DescribeTimeout
	conn.queryTimeout = cfg.QueryTimeout
	if rc := client.ReattachConfig(); rc != nil {
		logger.Debug("connector plugin started", "pid", rc.Pid)
	}
	return &Host{path: path, client: client, conn: conn}, nil
}

// Describe asks the plugin what it reads.
func (h *Host) Describe(ctx context.Context) (Description, error) {
	if h.client.Exited() {
		return Description{}, fmt.Errorf("connector describe: %w", ErrPluginExited)
	}
	return h.conn.Describe(ctx)
}

// Query runs q in the plugin. The result streams in as the caller reads
// it; cancelling ctx or closing the result stops the query in the plugin.
func (h *Host) Query(ctx context.Context, q Query) (*Result, error) {
	if h.client.Exited() {
		return nil, fmt.Errorf("connector query: %w", ErrPluginExited)
	}
	return h.conn.Query(ctx, q)
}

// Exited reports whether the plugin process has ended.
func (h *Host) Exited() bool { return h.client.Exited() }

// Close ends the plugin process: gracefully if it answers, by force if
// not. It is safe to call more than once.
func (h *Host) Close() error {
	h.closeOnce.Do(h.client.Kill)
	return nil
}

// exitedWithin reports whether the plugin process ends within d.
// go-plugin offers no channel for this, so it polls.
func exitedWithin(c *plugin.Client, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !c.Exited() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// CleanupPlugins kills every plugin process Launch started that is still
// running. A node defers it in main, so that no plugin outlives the node
// even when a Host was never closed.
func CleanupPlugins() { plugin.CleanupClients() }

// privateCopy copies the plugin binary at path into a new directory that
// only this user can write, hashing the bytes as it writes them, and checks
// that they have the checksum want (go-plugin then checks the copy as it
// lies on disk, just before it runs it). It returns the directory (the
// caller removes it) and the copy's path. What runs is then the bytes that
// were checked: the file at path may change afterwards without effect.
func privateCopy(path string, want []byte) (dir, bin string, err error) {
	src, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer src.Close()
	// Of the file opened, not of the name, which may have changed since.
	if fi, err := src.Stat(); err != nil {
		return "", "", err
	} else if !fi.Mode().IsRegular() {
		return "", "", fmt.Errorf("%s: not a regular file", path)
	}
	tmp, err := os.MkdirTemp("", "haven-connector-") // mode 0700
	if err != nil {
		return "", "", fmt.Errorf("copy %s to run it: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	bin = filepath.Join(tmp, filepath.Base(path))
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o700)
	if err != nil {
		return "", "", fmt.Errorf("copy %s to run it: %w", path, err)
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(dst, h), src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fmt.Errorf("copy %s to run it: %w", path, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return "", "", fmt.Errorf("%s: %w: it has sha256 %x, want %x", path, ErrChecksumMismatch, got, want)
	}
	if err := os.Chmod(bin, 0o500); err != nil {
		return "", "", fmt.Errorf("copy %s to run it: %w", path, err)
	}
	return tmp, bin, nil
}

// FileSHA256 returns the hex SHA-256 checksum of the file at path, the
// form LaunchConfig.SHA256 takes.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
