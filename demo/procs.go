package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// proc is one child process of the demo: the coordinator or a node.
type proc struct {
	name string // for messages: "coordinator", "node G80001"
	log  string // file its stdout and stderr go to
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited and been reaped
	err  error         // how it exited; read after done is closed
}

// pid is the child's process id, which is also its process group id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how an exited process ended, with the end of its
// log.
func (p *proc) exitError() error {
	status := "exited"
	if p.err != nil {
		status = p.err.Error()
	}
	return fmt.Errorf("%s stopped unexpectedly (%s); its log %s ends:\n%s", p.name, status, p.log, logTail(p.log, 8))
}

// procs starts children and stops every one of them.
type procs struct {
	mu   sync.Mutex
	list []*proc
	pids []int
}

// start runs bin with args as a long-running child named name, its output
// appended to the file logPath. stopAll stops it.
func (ps *procs) start(name, logPath, bin string, args ...string) (*proc, error) {
	p, err := ps.spawn(name, logPath, bin, args...)
	if err != nil {
		return nil, err
	}
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// runOnce runs bin with args to completion, as start does, and returns
// an error with the end of its log if it fails. If ctx ends first, the
// child is stopped.
func (ps *procs) runOnce(ctx context.Context, grace time.Duration, name, logPath, bin string, args ...string) error {
	p, err := ps.spawn(name, logPath, bin, args...)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return errors.Join(ctx.Err(), stop(p, grace))
	}
	if err := stop(p, grace); err != nil { // anything it left in its group
		return err
	}
	if p.err != nil {
		return fmt.Errorf("%s failed (%v); its log %s ends:\n%s", name, p.err, logPath, logTail(logPath, 8))
	}
	return nil
}

func (ps *procs) spawn(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.pids = append(ps.pids, p.pid())
	ps.mu.Unlock()
	return p, nil
}

// forget removes p from the children stopAll stops, for a caller that
// stops it itself.
func (ps *procs) forget(p *proc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.list = slices.DeleteFunc(ps.list, func(x *proc) bool { return x == p })
}

// started returns the process ids of every child started so far.
func (ps *procs) started() []int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]int(nil), ps.pids...)
}

// firstExited returns a child that has exited, or nil.
func (ps *procs) firstExited() *proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.list {
		if p.exited() {
			return p
		}
	}
	return nil
}

// stopAll stops the nodes first, all at once, so that none is left
// reconnecting to a coordinator that has gone, then the coordinator. It
// returns the children that had to be killed.
func (ps *procs) stopAll(grace time.Duration) error {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	var nodes, rest []*proc
	for _, p := range list {
		if p.name == coordinatorName {
			rest = append(rest, p)
		} else {
			nodes = append(nodes, p)
		}
	}
	var errs []error
	for _, group := range [][]*proc{nodes, rest} {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := stop(p, grace); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}

// stop asks p to end with SIGTERM and kills its process group if it has
// not exited after grace. Once the process has exited, any
// member of its group still alive (a plugin it failed to stop) is killed.
func stop(p *proc, grace time.Duration) error {
	pgid := p.pid()
	var err error
	if !p.exited() {
		// SIGTERM to the leader alone, as systemd's KillMode=mixed does: a
		// node stops its own plugin once its tasks have reported. A member
		// stopped with SIGSTOP (a frozen plugin) is continued, so that it
		// can be stopped.
		_ = syscall.Kill(-pgid, syscall.SIGCONT)
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			err = fmt.Errorf("%s did not stop within %v of SIGTERM and was killed", p.name, grace)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Whatever the leader left behind goes too, and is waited for, so
	// that nothing of the group outlives the demo.
	if syscall.Kill(-pgid, 0) == nil {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		for deadline := time.Now().Add(groupExitWait); syscall.Kill(-pgid, 0) == nil; {
			if time.Now().After(deadline) {
				return errors.Join(err, fmt.Errorf("%s: process group %d still has members %v after SIGKILL", p.name, pgid, groupExitWait))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return err
}

// kill kills p's whole process group with SIGKILL at once, as a power cut
// would, and waits until every member is gone.
func kill(p *proc) error {
	pgid := p.pid()
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
	for deadline := time.Now().Add(groupExitWait); syscall.Kill(-pgid, 0) == nil; {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: process group %d still has members %v after SIGKILL", p.name, pgid, groupExitWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// groupExitWait bounds the wait for killed members of a process group to
// be gone.
const groupExitWait = 5 * time.Second

// logTail returns the last n lines of the file at path, indented.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var out bytes.Buffer
	for i, l := range lines {
		if i > 0 {
			out.WriteByte('\n')
		}
		out.WriteString("    ")
		out.Write(l)
	}
	if out.Len() == 0 {
		return "    (empty)"
	}
	return out.String()
}
