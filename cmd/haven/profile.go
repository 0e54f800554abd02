package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// profiles writes a process's CPU and heap profiles for `go tool pprof`:
// the CPU profile covers everything from start to stop, the heap profile
// is taken at stop (its alloc_space view counts every allocation the
// process made, its inuse_space view what was live at the end). Empty
// paths write nothing. The national bench uses them; an operator can too,
// to see where a coordinator's time goes.
type profiles struct {
	cpuPath, heapPath string
	cpu               *os.File
}

// start begins the CPU profile, if one was asked for.
func (p *profiles) start() error {
	if p.cpuPath == "" {
		return nil
	}
	f, err := os.Create(p.cpuPath)
	if err != nil {
		return fmt.Errorf("CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("CPU profile %s: %w", p.cpuPath, err)
	}
	p.cpu = f
	return nil
}

// stop ends the CPU profile and writes the heap profile.
func (p *profiles) stop() error {
	var errs []error
	if p.cpu != nil {
		pprof.StopCPUProfile()
		if err := p.cpu.Close(); err != nil {
			errs = append(errs, fmt.Errorf("CPU profile %s: %w", p.cpuPath, err))
		}
		p.cpu = nil
	}
	if p.heapPath != "" {
		runtime.GC() // the heap profile's in-use figures are as of the last GC
		f, err := os.Create(p.heapPath)
		if err != nil {
			errs = append(errs, fmt.Errorf("heap profile: %w", err))
		} else {
			if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
				errs = append(errs, fmt.Errorf("heap profile %s: %w", p.heapPath, err))
			}
			if err := f.Close(); err != nil {
				errs = append(errs, fmt.Errorf("heap profile %s: %w", p.heapPath, err))
			}
		}
	}
	return errors.Join(errs...)
}
