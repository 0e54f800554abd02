//go:build unix && !linux

package demo

import "syscall"

// sysProcAttr puts a child in a process group of its own, so that the
// terminal's Ctrl-C reaches only the demo, which stops the children in
// order, and so that a signal to the group reaches the connector plugin
// the child started.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
