//go:build !linux

package bench

import "errors"

// BenchmarkSync seeds fake-gcs-server's filesystem backend directly, which
// is written for Linux only; it skips elsewhere.

func xattrSupported(string) bool { return false }

func setXattr(string, []byte) error { return errors.ErrUnsupported }
