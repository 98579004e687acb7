package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/labelsync/labelsync/internal/resolve"
)

// defaultBaseURL is the worker at its default LABELSYNC_HTTP_ADDR.
const defaultBaseURL = "http://localhost:8080"

// sign is `lsctl sign --project P --fileuri gs://B/K [--ttl D]
// [--base-url URL]`: it prints a signed resolver link that opens that one
// object of that project without the API token (SPEC §4), valid for D
// (0: no expiry). It is computed here from LABELSYNC_SECRET_KEY, the key
// the worker checks links with, so it needs no running worker; the worker
// checks that the object is inside one of the project's source storages
// when the link is opened.
func sign(args []string, env Env, now time.Time, stdout io.Writer) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	project := fs.Int64("project", 0, "Label Studio project id (required)")
	fileuri := fs.String("fileuri", "", "the object, gs://BUCKET/KEY (required)")
	ttl := fs.Duration("ttl", 0, "how long the link opens the object, e.g. 24h (0: no expiry)")
	base := fs.String("base-url", defaultBaseURL, "the worker's URL as browsers reach it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return errors.New(usage)
	case *project < 1 || *fileuri == "":
		return errors.New("lsctl sign: --project P (a positive integer) and --fileuri gs://BUCKET/KEY are required")
	case *ttl < 0:
		return fmt.Errorf("lsctl sign: --ttl %s is negative", *ttl)
	case env.SecretKey == "":
		return errors.New("lsctl sign: LABELSYNC_SECRET_KEY (the worker's) is needed to sign links")
	}
	b, err := url.Parse(*base)
	if err != nil || (b.Scheme != "http" && b.Scheme != "https") || b.Host == "" || b.RawQuery != "" || b.Fragment != "" {
		return fmt.Errorf("lsctl sign: --base-url %q is not an http(s) URL like %s", *base, defaultBaseURL)
	}
	links, err := resolve.NewLinks(env.SecretKey)
	if err != nil {
		return fmt.Errorf("lsctl sign: %w", err)
	}
	var expires time.Time
	if *ttl > 0 {
		expires = now.Add(*ttl)
	}
	path, err := links.Path(*project, *fileuri, expires)
	if err != nil {
		return fmt.Errorf("lsctl sign: --fileuri %q: %w", *fileuri, err)
	}
	_, err = fmt.Fprintln(stdout, strings.TrimRight(b.String(), "/")+path)
	return err
}
