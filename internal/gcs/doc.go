// Package gcs is labelsync's access to Google Cloud Storage buckets: storage
// clients per credentials, listing that can be checkpointed page by page,
// reading one object generation (whole or by ranges), Label Studio's
// "Check connection" validation and the source storage file preview.
//
// Errors are classified here, once: ErrNotFound, ErrPermission,
// ErrUnauthenticated, ErrBadCredentials and ErrTooLarge are permanent (check
// with errors.Is); Transient tells whether anything else is worth retrying.
// Callers decide ack, retry or dead-letter from that alone. No error of this
// package contains credentials.
//
// Concurrency: Clients and the *storage.Client values it returns are safe
// for concurrent use. The functions keep no state; a ReaderAt may be read
// from several goroutines at once.
package gcs
