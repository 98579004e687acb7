// Package fault classifies errors once, near their source, as permanent (the
// input can never succeed: dead-letter it and acknowledge) or transient
// (retry with backoff, then let the transport redeliver). Handlers decide
// ack, retry or dead-letter from that class alone.
package fault

import "errors"

type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as one that retrying cannot fix. It returns nil for nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err: err}
}

// IsPermanent reports whether err, or any error it wraps, was marked
// Permanent. Everything else is transient.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}
