//go:build !unix

package bench

import "time"

// processCPU is not measured here: CPU per message reads as 0.
func processCPU() time.Duration { return 0 }

// childrenCPU is not measured here.
func childrenCPU() time.Duration { return 0 }

// machineCPU is not measured here.
func machineCPU() (busy, total uint64) { return 0, 0 }
