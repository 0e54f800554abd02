package demo

import "syscall"

// sysProcAttr puts a child in a process group of its own, so that the
// terminal's Ctrl-C reaches only the demo, which stops the children in
// order, and so that a signal to the group reaches the connector plugin
// the child started. Pdeathsig stops the child if the demo dies without
// doing so.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
