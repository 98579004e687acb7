// Package pubsubemu starts Google's own Pub/Sub emulator (gcloud's
// cloud-pubsub-emulator) for tests, so scenarios proven against pstest can
// also run against the emulator Google ships.
//
// Sharing: the emulator is a JVM (~2–5 s to start, ~160 MB), so a test
// binary whose TestMain calls Main gets one emulator, started by the first
// Start and stopped after the last test; tests then isolate themselves by
// topic and subscription IDs (or project IDs), never by restarting it.
// Without Main, every Start launches a private emulator and stops it in
// t.Cleanup, which is correct but slow.
//
//	func TestMain(m *testing.M) { pubsubemu.Main(m) }
//
// Availability: the emulator is installed with gcloud and needs Java; it
// cannot be installed on machines without access to its apt source. When it
// is absent Start skips the test, unless LABELSYNC_REQUIRE_PUBSUB_EMULATOR=1
// (CI sets it), in which case the test fails. LABELSYNC_PUBSUB_EMULATOR_BIN
// points at the launcher script when it is not under a standard SDK root.
//
// Quirks of the emulator handled here: it does not exit when its port is
// taken (the JVM's main thread dies, netty's threads keep it alive), so a
// gRPC probe could reach whoever holds the port; Start therefore waits for
// its own "Server started" line before probing, and retries another port on
// BindException. Topic and subscription IDs under 3 characters are rejected.
// It delivers a backlog out of order.
package pubsubemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	// EnvRequire makes an absent emulator a test failure instead of a skip.
	EnvRequire = "LABELSYNC_REQUIRE_PUBSUB_EMULATOR"
	// EnvBin overrides the launcher script's path.
	EnvBin = "LABELSYNC_PUBSUB_EMULATOR_BIN"

	launcherRel  = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
	readyTimeout = 60 * time.Second
	stopTimeout  = 10 * time.Second
	startTries   = 3
)

// wellKnownSDKRoots are checked before asking gcloud, whose startup costs
// about a second: Debian/Ubuntu packages, then the official installer's
// default, then Homebrew.
var wellKnownSDKRoots = []string{
	"/usr/lib/google-cloud-sdk",
	"/usr/share/google-cloud-sdk",
	"/google-cloud-sdk",
	"/opt/google-cloud-sdk",
	"/opt/homebrew/share/google-cloud-sdk",
	"/usr/local/share/google-cloud-sdk",
}

// Find returns the path of the emulator launcher script, or "" when absent.
func Find() string {
	path, _ := find()
	return path
}

// find also says why the launcher is absent, for the skip message.
func find() (path, why string) {
	if p := os.Getenv(EnvBin); p != "" {
		if isFile(p) {
			return p, ""
		}
		return "", fmt.Sprintf("%s=%s does not exist", EnvBin, p)
	}
	if p := discovered(); p != "" {
		return p, ""
	}
	return "", "no " + launcherRel + " under a Cloud SDK root (install gcloud's pubsub-emulator component, or set " + EnvBin + ")"
}

// discovered is cached: the gcloud fallback takes about a second and the
// answer does not change within a test binary.
var discovered = sync.OnceValue(func() string {
	var roots []string
	if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, "google-cloud-sdk"))
	}
	// gcloud on PATH is usually <sdk_root>/bin/gcloud behind a symlink.
	if g, err := exec.LookPath("gcloud"); err == nil {
		if real, err := filepath.EvalSymlinks(g); err == nil {
			roots = append(roots, filepath.Dir(filepath.Dir(real)))
		}
	}
	roots = append(roots, wellKnownSDKRoots...)
	for _, r := range roots {
		if p := filepath.Join(r, launcherRel); isFile(p) {
			return p
		}
	}
	if root := gcloudSDKRoot(); root != "" {
		if p := filepath.Join(root, launcherRel); isFile(p) {
			return p
		}
	}
	return ""
})

func gcloudSDKRoot() string {
	if _, err := exec.LookPath("gcloud"); err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "gcloud", "info", "--format=value(installation.sdk_root)")
	// A throwaway config dir keeps gcloud from writing to (or failing on a
	// read-only) ~/.config/gcloud.
	if dir, err := os.MkdirTemp("", "pubsubemu-gcloud-"); err == nil {
		defer os.RemoveAll(dir)
		cmd.Env = append(os.Environ(), "CLOUDSDK_CONFIG="+dir)
	}
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// javaMissing returns why the launcher cannot run, or "". The launcher
// prefers $JAVA_HOME/bin/java over PATH.
func javaMissing() string {
	if jh := os.Getenv("JAVA_HOME"); jh != "" {
		if isFile(filepath.Join(jh, "bin", "java")) {
			return ""
		}
		return "JAVA_HOME=" + jh + " has no bin/java"
	}
	if _, err := exec.LookPath("java"); err != nil {
		return "java is not on PATH (the emulator needs Java 11+)"
	}
	return ""
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// Start returns "127.0.0.1:PORT" of a running emulator that answers gRPC.
// With Main in TestMain the emulator is shared by the test binary; without
// it Start launches one for t and stops its whole process group in
// t.Cleanup. When the emulator is not installed Start skips t, or fails it
// if LABELSYNC_REQUIRE_PUBSUB_EMULATOR=1.
func Start(t testing.TB) string {
	t.Helper()
	bin := installed(t)
	if mainRunning.Load() {
		addr, err := startShared(bin)
		if err != nil {
			t.Fatalf("pubsubemu: %v", err)
		}
		return addr
	}
	e, err := launch(bin)
	if err != nil {
		t.Fatalf("pubsubemu: %v", err)
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("pubsubemu: %v", err)
		}
	})
	return e.addr
}

// installed returns the launcher, or skips or fails t when the emulator
// cannot run here.
func installed(t testing.TB) string {
	t.Helper()
	bin, why := find()
	if bin != "" {
		why = javaMissing()
	}
	if why != "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("Google Pub/Sub emulator required (%s=1) but not available: %s", EnvRequire, why)
		}
		t.Skipf("Google Pub/Sub emulator not installed: %s; scenarios against it skipped; CI runs them", why)
	}
	return bin
}

var (
	mainRunning atomic.Bool

	sharedMu  sync.Mutex
	sharedEmu *emulator
	// sharedErr is kept so that after a failed start the remaining tests
	// fail at once instead of each waiting out the ready timeout.
	sharedErr error
)

// Main runs the tests with one emulator shared by the whole test binary,
// started lazily by the first Start, and stops it when the tests end. Call it
// from TestMain; binaries that never call Start pay nothing.
func Main(m *testing.M) {
	mainRunning.Store(true)
	code := m.Run()
	sharedMu.Lock()
	if sharedEmu != nil {
		if err := sharedEmu.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pubsubemu:", err)
		}
		sharedEmu = nil
	}
	sharedMu.Unlock()
	os.Exit(code)
}

func startShared(bin string) (string, error) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedEmu == nil && sharedErr == nil {
		sharedEmu, sharedErr = launch(bin)
	}
	if sharedErr != nil {
		return "", sharedErr
	}
	return sharedEmu.addr, nil
}

type emulator struct {
	addr    string
	cmd     *exec.Cmd
	out     *outputWatch
	done    chan struct{} // closed once the process has been reaped
	waitErr error
}

// launch starts the emulator on a free port, retrying with another port when
// the one picked was taken between picking and binding.
func launch(bin string) (*emulator, error) {
	var err error
	for range startTries {
		var e *emulator
		e, err = launchOnce(bin)
		if err == nil {
			return e, nil
		}
		if !errors.Is(err, errPortTaken) {
			return nil, err
		}
	}
	return nil, err
}

var errPortTaken = errors.New("port taken")

func launchOnce(bin string) (*emulator, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	return launchOn(bin, port)
}

func launchOn(bin string, port int) (*emulator, error) {
	e := &emulator{
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		out:  newOutputWatch(),
		done: make(chan struct{}),
	}
	e.cmd = exec.Command(bin, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	e.cmd.Stdout = e.out
	e.cmd.Stderr = e.out
	// Own process group: the launcher is a shell script that execs java,
	// and stopping must reach whatever it started.
	e.cmd.SysProcAttr = sysProcAttr()

	started := make(chan error, 1)
	go func() {
		// On Linux the child gets SIGKILL when the thread that forked it
		// exits (Pdeathsig), which covers a test binary killed by its
		// timeout before Main's cleanup. Pinning this goroutine to its
		// thread for the child's lifetime keeps that from firing early.
		runtime.LockOSThread()
		if err := e.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		e.waitErr = e.cmd.Wait()
		close(e.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}

	if err := e.waitReady(); err != nil {
		_ = e.stop()
		if errors.Is(err, errPortTaken) {
			return nil, err
		}
		return nil, fmt.Errorf("emulator on %s: %w\n--- emulator output ---\n%s", e.addr, err, e.out.String())
	}
	return e, nil
}

// waitReady waits for the emulator's own "listening" line, then for a gRPC
// call to succeed.
func (e *emulator) waitReady() error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	select {
	case <-e.out.started:
	case <-e.out.bindFailed:
		return fmt.Errorf("%s: %w", e.addr, errPortTaken)
	case <-e.done:
		return fmt.Errorf("exited before listening: %v", e.waitErr)
	case <-deadline.C:
		return fmt.Errorf("not listening after %s", readyTimeout)
	}

	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	pub := pubsubpb.NewPublisherClient(conn)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := pub.ListTopics(ctx, &pubsubpb.ListTopicsRequest{Project: "projects/pubsubemu-probe"})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-e.done:
			return fmt.Errorf("exited: %v", e.waitErr)
		case <-deadline.C:
			return fmt.Errorf("no gRPC answer after %s: %w", readyTimeout, err)
		}
	}
}

// stop terminates the process group, politely first.
func (e *emulator) stop() error {
	select {
	case <-e.done:
		return nil
	default:
	}
	terminate(e.cmd)
	select {
	case <-e.done:
		return nil
	case <-time.After(stopTimeout):
	}
	kill(e.cmd)
	select {
	case <-e.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("emulator pid %d did not exit", e.cmd.Process.Pid)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("picking a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// outputWatch keeps the start of the emulator's output for error messages
// and signals the two lines that decide readiness. Only the head is kept:
// the emulator may log for the whole test run.
type outputWatch struct {
	mu         sync.Mutex
	head       bytes.Buffer
	started    chan struct{}
	bindFailed chan struct{}
	sawStart   bool
	sawBind    bool
}

const outputHeadMax = 64 << 10

func newOutputWatch() *outputWatch {
	return &outputWatch{started: make(chan struct{}), bindFailed: make(chan struct{})}
}

func (w *outputWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := outputHeadMax - w.head.Len(); room > 0 {
		w.head.Write(p[:min(len(p), room)])
	}
	// Both lines come within the first few KB, so scanning the head
	// suffices.
	if !w.sawStart && bytes.Contains(w.head.Bytes(), []byte("Server started, listening on")) {
		w.sawStart = true
		close(w.started)
	}
	if !w.sawBind && bytes.Contains(w.head.Bytes(), []byte("BindException")) {
		w.sawBind = true
		close(w.bindFailed)
	}
	return len(p), nil
}

func (w *outputWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.head.String()
}
