package dirlock

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHeldByAnotherProcess takes the lock in a child process (this test
// binary re-run as a helper), so the refusal is the kernel's, across
// processes, as between two haven daemons.
func TestHeldByAnotherProcess(t *testing.T) {
	if os.Getenv("DIRLOCK_HOLD") != "" {
		holdAndWait()
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHeldByAnotherProcess$")
	cmd.Env = append(os.Environ(), "DIRLOCK_HOLD="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	// The child prints "locked" once it holds the lock.
	buf := make([]byte, 64)
	n, _ := stdout.Read(buf)
	if !strings.Contains(string(buf[:n]), "locked") {
		t.Fatalf("child did not take the lock: %q", buf[:n])
	}

	_, err = Acquire(dir)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire: %v, want a HeldError", err)
	}
	if held.PID != cmd.Process.Pid || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("error %q does not name the holder's pid %d", err, cmd.Process.Pid)
	}

	// When the holder exits the kernel drops its lock.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := Acquire(dir)
		if err == nil {
			l.Release()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock not free after the holder exited: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func holdAndWait() {
	l, err := Acquire(os.Getenv("DIRLOCK_HOLD"))
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		os.Exit(2)
	}
	os.Stdout.WriteString("locked\n")
	buf := make([]byte, 1)
	os.Stdin.Read(buf) // until the parent closes our stdin
	l.Release()
	os.Exit(0)
}

func TestReleaseThenReacquire(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	l2, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	defer l2.Release()
}

func TestMissingDirectory(t *testing.T) {
	_, err := Acquire(t.TempDir() + "/absent")
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("Acquire of a missing directory: %v", err)
	}
}
