//go:build unix

package pubsubemu

import (
	"os/exec"
	"syscall"
)

// terminate and kill signal the whole group (negative pid): the launcher
// script execs java today, but a wrapper that forks would otherwise leave the
// JVM holding its port.
func terminate(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }

func kill(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
