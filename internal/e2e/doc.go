// Package e2e holds labelsync's end-to-end scenarios: real fake-gcs-server,
// real Pub/Sub (pstest in-process, and Google's emulator where installed),
// real NATS, the worker as built. The same scenarios run against each
// Pub/Sub backend. It has no non-test code.
package e2e
