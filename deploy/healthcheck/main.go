// Command healthcheck is the container HEALTHCHECK of the labelsync image,
// which has no shell and no curl: it GETs a URL and exits 0 on a 2xx
// answer, 1 otherwise, printing one line either way.
//
//	healthcheck [URL]
//
// Without URL it checks /healthz on the port of LABELSYNC_HTTP_ADDR; with
// that variable unset, on the worker's default port (8080) and then the
// exporter's (8081), so one image serves both commands. docker-compose.yml
// passes the /readyz URL instead, so that services wait for readiness.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := run(ctx, os.Args[1:], os.Getenv("LABELSYNC_HTTP_ADDR"), os.Stdout)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, httpAddr string, stdout io.Writer) error {
	urls, err := targets(args, httpAddr)
	if err != nil {
		return err
	}
	var errs []error
	for _, u := range urls {
		status, err := get(ctx, u)
		if err == nil {
			fmt.Fprintln(stdout, u, status)
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// targets are the URLs to try, in order; the first healthy one wins.
func targets(args []string, httpAddr string) ([]string, error) {
	switch {
	case len(args) > 1:
		return nil, errors.New("usage: healthcheck [URL]")
	case len(args) == 1:
		return args, nil
	case httpAddr == "":
		return []string{"http://127.0.0.1:8080/healthz", "http://127.0.0.1:8081/healthz"}, nil
	}
	_, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return nil, fmt.Errorf("LABELSYNC_HTTP_ADDR: %q is not host:port", httpAddr)
	}
	return []string{"http://" + net.JoinHostPort("127.0.0.1", port) + "/healthz"}, nil
}

func get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return resp.Status, nil
}
