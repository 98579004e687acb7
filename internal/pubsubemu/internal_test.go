package pubsubemu

import (
	"errors"
	"net"
	"testing"
)

// TestBusyPort pins the quirk that the emulator keeps running after failing
// to bind: launch must notice from its output, not wait for an exit, and must
// not mistake the port's owner for the emulator.
func TestBusyPort(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a second JVM; skipped in -short")
	}
	bin := installed(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	e, err := launchOn(bin, l.Addr().(*net.TCPAddr).Port)
	if err == nil {
		_ = e.stop()
		t.Fatal("launch on a busy port succeeded")
	}
	if !errors.Is(err, errPortTaken) {
		t.Errorf("launch on a busy port: got %v, want errPortTaken", err)
	}
}
