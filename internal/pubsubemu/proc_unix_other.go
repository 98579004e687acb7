//go:build unix && !linux

package pubsubemu

import "syscall"

// Without Pdeathsig a test binary killed before Main's cleanup leaves the
// emulator running; only Linux offers it.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
