// Package dirlock gives one process at a time a directory of state: the
// coordinator's data directory, a node site's state directory. Two processes
// appending to one hash-chained audit log fork it, and two nodes sharing a
// task journal report each other's tasks as abandoned, so a second process
// must stop before it touches anything.
//
// The lock is an exclusive flock(2) on a file in the directory. The kernel
// drops it when the holder exits, however it exits, so a crash never leaves
// a stale lock behind; the pid written into the file only names the holder
// in the error a second process prints.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FileName is the lock file created in a locked directory.
const FileName = "haven.lock"

// HeldError says that another process holds the directory.
type HeldError struct {
	Dir string
	PID int // 0 when the holder's pid could not be read
}

func (e *HeldError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s is in use by another Haven process (pid %d holds %s); stop it first, or give this one its own directory", e.Dir, e.PID, FileName)
	}
	return fmt.Sprintf("%s is in use by another Haven process (it holds %s); stop it first, or give this one its own directory", e.Dir, FileName)
}

// Lock is a held directory lock.
type Lock struct {
	f *os.File
}

// Acquire takes the exclusive lock on dir, which must exist, without
// waiting. When another process holds it the error is a *HeldError naming
// that process's pid.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &HeldError{Dir: dir, PID: readPID(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	// Only the holder writes the file, so a reader sees the holder's pid
	// (or, in the instant before this write, an empty file).
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if _, err := f.WriteAt(pid, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return &Lock{f: f}, nil
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Release drops the lock. The file stays, so that a process waiting to
// take the lock never locks a file that is about to be removed. Release is
// safe to call more than once and on a nil Lock.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
	return err
}
