package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

var shared Shared

func TestMain(m *testing.M) {
	code := m.Run()
	if err := shared.Stop(); err != nil {
		println("pgtest: stop:", err.Error())
		code = 1
	}
	os.Exit(code)
}

func TestStartServesQueries(t *testing.T) {
	ctx := t.Context()
	s, err := StartServer(ctx)
	if err != nil {
		fail(t, err)
	}
	conn, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("SELECT = %d, %v", n, err)
	}
	conn.Close(ctx)
	dir := s.dir
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster directory left behind: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := pgx.Connect(context.Background(), s.DSN()); err == nil {
		t.Error("server still answers after Stop")
	}
}

func TestSharedGivesEachTestItsOwnDatabase(t *testing.T) {
	ctx := t.Context()
	a, b := shared.DSN(t), shared.DSN(t)
	if a == b {
		t.Fatalf("two calls gave one database: %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	if _, err := cb.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Errorf("the second database already had the first one's table: %v", err)
	}
}

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "": false, "false": false, "yes": false} {
		t.Setenv("CI", v)
		if got := inCI(); got != want {
			t.Errorf("CI=%q: inCI() = %v", v, got)
		}
	}
}
