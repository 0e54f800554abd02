// Package pgtest starts throwaway PostgreSQL servers for tests: a new
// cluster in a temporary directory, listening on a free loopback port and a
// private socket directory, removed when the test (or test binary) ends.
//
// The PostgreSQL server binaries must be installed; scripts/setup-postgres.sh
// installs them and `make test` runs it. Without them a test fails in CI
// (CI=true) and is skipped elsewhere, saying which.
//
// One server per test:
//
//	dsn := pgtest.Start(t)
//
// One server for a package's tests, each getting a database of its own:
//
//	var pg pgtest.Shared
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		pg.Stop()
//		os.Exit(code)
//	}
//
//	func TestX(t *testing.T) { dsn := pg.DSN(t) }
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the cluster's superuser; connections on
// loopback need no password.
const Superuser = "haven"

// startTimeout bounds initdb plus the server's start.
const startTimeout = 60 * time.Second

// ErrNoBinaries means the PostgreSQL server binaries were not found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres, pg_ctl) not found; " +
	"run scripts/setup-postgres.sh (make test runs it)")

// Start starts a server for t alone and returns the DSN of its postgres
// database. The server is stopped and removed when t ends.
func Start(t testing.TB) string {
	t.Helper()
	s, err := StartServer(t.Context())
	if err != nil {
		fail(t, err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s.DSN()
}

// fail skips for missing binaries outside CI and fails otherwise.
func fail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNoBinaries) && !inCI() {
		t.Skipf("pgtest: %v (skipped because CI is not set; in CI this fails)", err)
	}
	t.Fatalf("pgtest: %v", err)
}

func inCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Shared is one server started on first use and shared by a package's
// tests, each of which gets a fresh database. The zero Shared is ready to
// use; TestMain calls Stop after the tests.
type Shared struct {
	mu   sync.Mutex
	srv  *Server
	err  error
	next int
}

// DSN returns the DSN of a new, empty database on the shared server,
// starting the server if this is the first call.
func (s *Shared) DSN(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil && s.err == nil {
		s.srv, s.err = StartServer(context.Background())
	}
	if s.err != nil {
		fail(t, s.err)
	}
	s.next++
	dsn, err := s.srv.CreateDatabase(t.Context(), fmt.Sprintf("test_%d", s.next))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// Stop stops the shared server, if it was started.
func (s *Shared) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Stop()
	s.srv = nil
	return err
}

// Server is a running throwaway cluster.
type Server struct {
	dir  string // holds data/, the socket and the server log
	port int
	bin  string
	uid  *user.User // the postgres system user when running as root
	cmd  *exec.Cmd
	done chan struct{} // closed when the server process has exited

	stopOnce sync.Once
	stopErr  error
}

// StartServer creates a cluster in a new temporary directory and starts
// it. It returns an error wrapping ErrNoBinaries if PostgreSQL is not
// installed.
func StartServer(ctx context.Context) (*Server, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		if s.uid, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("running as root needs the postgres system user to run the server "+
				"(scripts/setup-postgres.sh installs it): %w", err)
		}
	}
	if s.dir, err = os.MkdirTemp("", "haven-pgtest-"); err != nil {
		return nil, err
	}
	if err := s.chown(s.dir); err != nil {
		s.removeDir()
		return nil, err
	}
	if out, err := s.command(ctx, "initdb", "-D", s.dataDir(), "-U", Superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		s.removeDir()
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// A free port can be taken between finding and binding it, so try a
	// few.
	for attempt := 0; ; attempt++ {
		err = s.start(ctx)
		if err == nil {
			return s, nil
		}
		if attempt == 2 || ctx.Err() != nil {
			s.removeDir()
			return nil, err
		}
	}
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

// DSN returns the URL of the server's postgres database.
func (s *Server) DSN() string { return s.dsn("postgres") }

func (s *Server) dsn(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, s.port, db)
}

// CreateDatabase creates the database name and returns its DSN.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return s.dsn(name), nil
}

// start runs the server on a free port and waits until it takes
// connections.
func (s *Server) start(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	logFile, err := os.Create(filepath.Join(s.dir, "server.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := s.command(context.Background(), "postgres", "-D", s.dataDir(), "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-k", s.dir,
		// Durability is worth nothing to a throwaway cluster.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies, take the server with it. runuser passes
	// SIGTERM on to postgres, whose clients are gone by then.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	for {
		conn, err := pgx.Connect(ctx, s.DSN())
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited while starting:\n%s", s.logTail())
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("postgres did not start: %w\n%s", ctx.Err(), s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop shuts the server down and removes its directory. It is safe to call
// more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := s.command(ctx, "pg_ctl", "stop", "-D", s.dataDir(), "-m", "fast", "-w").CombinedOutput()
		if err != nil {
			s.stopErr = fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
			s.kill()
		}
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.kill()
			<-s.done
		}
		s.removeDir()
	})
	return s.stopErr
}

func (s *Server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
}

func (s *Server) removeDir() { os.RemoveAll(s.dir) }

// command runs a PostgreSQL program, as the postgres user when the test
// runs as root.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, name)
	if s.uid != nil {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", s.uid.Username, "--", path}, args...)...)
	}
	return exec.CommandContext(ctx, path, args...)
}

// chown gives dir to the postgres user when running as root, so that it
// can create the cluster and its socket there.
func (s *Server) chown(dir string) error {
	if s.uid == nil {
		return nil
	}
	uid, err1 := strconv.Atoi(s.uid.Uid)
	gid, err2 := strconv.Atoi(s.uid.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("postgres user ids: %w", err)
	}
	return os.Chown(dir, uid, gid)
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// findBinaries returns the directory holding initdb, postgres and pg_ctl:
// from PATH, or Debian's /usr/lib/postgresql/<version>/bin, newest first.
func findBinaries() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(debian, func(a, b string) int { return versionOf(b) - versionOf(a) })
	dirs = append(dirs, debian...)
	for _, d := range dirs {
		if hasAll(d, "initdb", "postgres", "pg_ctl") {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(strings.Split(filepath.Base(filepath.Dir(binDir)), ".")[0])
	return v
}

func hasAll(dir string, names ...string) bool {
	for _, n := range names {
		if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
