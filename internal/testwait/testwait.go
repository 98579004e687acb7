// Package testwait waits in tests for a condition that becomes true in the
// background. For tests only.
package testwait

import (
	"testing"
	"time"
)

// Until calls check every poll until it returns nil, and fails tb with
// what and check's last error once within has passed.
func Until(tb testing.TB, within, poll time.Duration, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not true within %s: %v", what, within, err)
		}
		time.Sleep(poll)
	}
}
