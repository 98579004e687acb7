// Package fault is labelsync's one failure vocabulary. Every package
// classifies its errors once, near their source, with a Code and a class:
//
//   - permanent: the input can never succeed (bad input, an unsupported
//     file, a record too large for the stream, a bucket that does not
//     exist). It goes to the dead-letter stream with its code, and the input
//     is acknowledged.
//   - transient: trying again later may succeed (timeouts, 429, 5xx, NATS or
//     JetStream unavailable, a context ended by a shutdown). It is retried
//     with backoff in place, then handed back to the transport (Pub/Sub
//     nack, JetStream nak), which redelivers it.
//
// Handlers decide ack, retry or dead-letter from Of alone, with errors.As;
// never from an error's text.
//
// An error nobody classified is the one default, the same in every
// component: it is retried in place like a transient one, and if it is still
// failing when the retries run out it is dead-lettered with code
// Unclassified and its text as the reason. So an error nobody understood
// neither loops forever nor loses the input: it ends in the dead-letter
// stream, where a person sees it. See Of.
package fault

import (
	"context"
	"errors"
)

// Code is a short, low-cardinality name for a failure: the "code" of a dead
// letter and the reason label of labelsync_deadletter_total.
type Code string

// The codes. Producers may add their own; these are the shared ones.
const (
	// Permanent codes.
	MalformedNotification Code = "malformed_notification" // not a GCS notification we can read
	Unsupported           Code = "unsupported"            // a file type or import method labelsync cannot import
	TooLarge              Code = "too_large"              // over a size limit: the object, a record, a message, a header
	BadRecord             Code = "bad_record"             // one record of a task file does not parse
	MalformedFile         Code = "malformed_file"         // a task file broken beyond one record (an unclosed array, a corrupt Parquet footer)
	BadInput              Code = "bad_input"              // any other input that can never succeed (an event without an id…)
	NotFound              Code = "not_found"              // a bucket or object that does not exist
	PermissionDenied      Code = "permission_denied"      // credentials that cannot do what is asked
	BadCredentials        Code = "bad_credentials"        // credentials that are malformed or refused
	Panic                 Code = "panic"                  // a handler panicked: the same input would panic again
	Unclassified          Code = "unclassified"           // an error nobody classified, still failing after the retries

	// Transient codes.
	Unavailable Code = "unavailable" // a dependency is down, slow or throttling
	Canceled    Code = "canceled"    // the work's context ended (shutdown): not the input's fault
)

// Error is a classified failure. Wrap with Permanent or Transient; read
// with Of.
type Error struct {
	Code      Code
	Permanent bool
	Err       error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Permanent classifies err as one that retrying cannot fix. Nil stays nil.
func Permanent(code Code, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Permanent: true, Err: err}
}

// Transient classifies err as one that a later retry may fix. Nil stays nil.
func Transient(code Code, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Class is what a consumer does with a failure.
type Class int

// The classes.
const (
	// ClassUnknown: nobody classified the error. Retry it in place; if it
	// still fails when the retries run out, dead-letter it as Unclassified.
	ClassUnknown Class = iota
	// ClassTransient: retry with backoff, then hand it back to the
	// transport for redelivery.
	ClassTransient
	// ClassPermanent: dead-letter it, then acknowledge the input.
	ClassPermanent
)

// Of returns err's code and class: those of the outermost *Error in its
// chain (the latest decision made about it). A context ending is transient
// (Canceled) even when nobody wrapped it: the work was interrupted, the input
// is not at fault. Anything else is (Unclassified, ClassUnknown).
func Of(err error) (Code, Class) {
	var e *Error
	switch {
	case errors.As(err, &e):
		if e.Permanent {
			return e.Code, ClassPermanent
		}
		return e.Code, ClassTransient
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Canceled, ClassTransient
	}
	return Unclassified, ClassUnknown
}

// IsPermanent reports whether err was classified permanent.
func IsPermanent(err error) bool {
	_, c := Of(err)
	return c == ClassPermanent
}

// CodeOf returns err's code (Unclassified when nobody classified it).
func CodeOf(err error) Code {
	c, _ := Of(err)
	return c
}

// Exhausted is the default's second half: after a consumer's retries ran
// out, err becomes permanent if nobody classified it (code Unclassified),
// and stays as it is otherwise.
func Exhausted(err error) error {
	if _, c := Of(err); c == ClassUnknown {
		return Permanent(Unclassified, err)
	}
	return err
}
