package gcs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"
)

// FieldCredentials is the storage field that carries inline credentials.
const FieldCredentials = "google_application_credentials"

var errClosed = errors.New("gcs: clients are closed")

// Options configures NewClients.
type Options struct {
	// EmulatorHost is the STORAGE_EMULATOR_HOST value, "http://host:port"
	// or "host:port" (http assumed). When set every client talks to it
	// without authentication, whatever the credentials.
	EmulatorHost string
	// Logger receives client creation at Debug level. Default: discard.
	Logger *slog.Logger
}

// Clients builds storage clients per credentials and caches them: one per
// distinct credentials JSON, one shared for Application Default Credentials
// (and one for everything when an emulator is configured). It is safe for
// concurrent use. Close it once, after the last use of any client it
// returned.
type Clients struct {
	opts   Options
	logger *slog.Logger

	mu      sync.Mutex
	closed  bool
	entries map[[sha256.Size]byte]*entry
	// checked remembers credentials that passed checkCredentials, by
	// hash: For is called per proxied file and per Tasks-mode read, and
	// parsing the private key each time cost 217 µs and 88 allocations
	// per call, against 2 µs and none (BenchmarkForInline).
	checked map[[sha256.Size]byte]option.CredentialsType
}

// maxChecked bounds Clients.checked; it is cleared when full.
const maxChecked = 10_000

// entry is one client being built or built. ready is closed once client or
// err is set, so concurrent For calls for the same credentials build once.
type entry struct {
	ready  chan struct{}
	client *storage.Client
	err    error
}

// NewClients returns an empty cache; clients are built on first use.
func NewClients(opts Options) *Clients {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Clients{opts: opts, logger: logger, entries: make(map[[sha256.Size]byte]*entry), checked: make(map[[sha256.Size]byte]option.CredentialsType)}
}

// For returns the client for these credentials. Empty credentials mean
// Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, the
// metadata server, external_account JSON). Inline credentials must be a
// service_account key or an external_account (Workload Identity
// Federation) configuration.
//
// Credential errors are *ValidationError (Field FieldCredentials) wrapping
// ErrBadCredentials; their text never contains the credentials. A failed
// build is not cached: the next call tries again.
func (c *Clients) For(ctx context.Context, credentialsJSON []byte) (*storage.Client, error) {
	creds := bytes.TrimSpace(credentialsJSON)
	var credType option.CredentialsType
	var sum [sha256.Size]byte
	if len(creds) > 0 {
		sum = sha256.Sum256(creds)
		c.mu.Lock()
		t, ok := c.checked[sum]
		c.mu.Unlock()
		if !ok {
			var err error
			if t, err = checkCredentials(creds); err != nil {
				return nil, err
			}
			c.mu.Lock()
			if len(c.checked) >= maxChecked {
				clear(c.checked)
			}
			c.checked[sum] = t
			c.mu.Unlock()
		}
		credType = t
	}
	// The zero key is ADC; with an emulator every caller shares it, because
	// the emulator ignores credentials. Inline credentials are keyed by
	// hash so the cache does not keep a second plaintext copy as a key.
	var key [sha256.Size]byte
	if len(creds) > 0 && c.opts.EmulatorHost == "" {
		key = sum
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClosed
	}
	e, ok := c.entries[key]
	if !ok {
		e = &entry{ready: make(chan struct{})}
		c.entries[key] = e
	}
	c.mu.Unlock()

	if !ok {
		// Built outside the lock: ADC detection may probe the metadata
		// server, which must not stall callers with other credentials.
		// WithoutCancel, because the client outlives this call: token
		// refreshes must not fail once the first caller's request ends.
		client, err := c.build(context.WithoutCancel(ctx), creds, credType)
		c.mu.Lock()
		switch {
		case err != nil:
			delete(c.entries, key)
		case c.closed:
			_ = client.Close()
			client, err = nil, errClosed
		}
		e.client, e.err = client, err
		c.mu.Unlock()
		close(e.ready)
	}

	select {
	case <-e.ready:
		return e.client, e.err
	case <-ctx.Done():
		return nil, fmt.Errorf("gcs: waiting for a storage client: %w", ctx.Err())
	}
}

func (c *Clients) build(ctx context.Context, creds []byte, credType option.CredentialsType) (*storage.Client, error) {
	// No OpenTelemetry wrapping of the HTTP transport: labelsync traces its
	// own writes and reads, and the wrapper (with the global, no-op
	// provider) cost the exporter about 3 % of its CPU per object
	// (BenchmarkExportWrite profile).
	opts := []option.ClientOption{option.WithTelemetryDisabled()}
	mode := "adc"
	switch {
	case c.opts.EmulatorHost != "":
		endpoint, err := emulatorEndpoint(c.opts.EmulatorHost)
		if err != nil {
			return nil, err
		}
		// JSON reads: XML reads go to http://host/bucket/key, which
		// fake-gcs-server routes by Host header and serves only when its
		// PublicHost matches; the JSON media endpoint is routed by path.
		opts = append(opts, option.WithEndpoint(endpoint), option.WithoutAuthentication(), storage.WithJSONReads())
		mode = "emulator"
	case len(creds) > 0:
		// The typed option rather than the deprecated WithCredentialsJSON:
		// it refuses a JSON of another type than the one checked above.
		opts = append(opts, option.WithAuthCredentialsJSON(credType, creds))
		mode = "inline " + string(credType)
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		switch {
		case mode == "emulator":
			return nil, fmt.Errorf("gcs: storage client for emulator %s: %w", c.opts.EmulatorHost, err)
		case len(creds) > 0:
			return nil, badCredentials("Google Application Credentials were not accepted by the Google client library", redact(err, creds))
		default:
			return nil, &ValidationError{
				Field:   FieldCredentials,
				Message: "No Google Application Default Credentials found: set GOOGLE_APPLICATION_CREDENTIALS, run on Google Cloud, or give google_application_credentials",
				Err:     &classified{kind: ErrBadCredentials, err: fmt.Errorf("gcs: application default credentials: %w", err)},
			}
		}
	}
	c.logger.Debug("gcs: storage client created", "credentials", mode)
	return client, nil
}

// Close closes every client built so far, after waiting for those being
// built. For fails afterwards.
func (c *Clients) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	entries := make([]*entry, 0, len(c.entries))
	for _, e := range c.entries {
		entries = append(entries, e)
	}
	c.mu.Unlock()

	var errs []error
	for _, e := range entries {
		<-e.ready
		if e.client != nil {
			if err := e.client.Close(); err != nil {
				errs = append(errs, fmt.Errorf("gcs: closing client: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// emulatorEndpoint turns a STORAGE_EMULATOR_HOST value into the JSON API
// endpoint, as the storage library does for the environment variable.
func emulatorEndpoint(host string) (string, error) {
	h := host
	if !strings.Contains(h, "://") {
		h = "http://" + h
	}
	u, err := url.Parse(h)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("gcs: emulator host %q is not host:port or an http(s) URL", host)
	}
	return strings.TrimRight(h, "/") + "/storage/v1/", nil
}

// credentialsFile holds the fields checked before the JSON reaches the
// client library. Values are only inspected, never printed.
type credentialsFile struct {
	Type string `json:"type"`
	// service_account
	ClientEmail string `json:"client_email"`
	PrivateKey  string `json:"private_key"`
	// external_account
	Audience                       string          `json:"audience"`
	SubjectTokenType               string          `json:"subject_token_type"`
	TokenURL                       string          `json:"token_url"`
	ServiceAccountImpersonationURL string          `json:"service_account_impersonation_url"`
	CredentialSource               json.RawMessage `json:"credential_source"`
	// impersonated_service_account
	SourceCredentials json.RawMessage `json:"source_credentials"`
}

// knownTypes are Google's credential file types: naming one in a message is
// safe, whereas an arbitrary "type" value might be anything the user pasted.
var knownTypes = map[string]bool{
	"authorized_user":                  true,
	"impersonated_service_account":     true,
	"gdch_service_account":             true,
	"external_account_authorized_user": true,
}

// checkCredentials catches malformed credentials before any network call,
// so that a pasted key with a broken private_key fails at once, with a
// message for the API, instead of as an obscure error on the first request.
//
// external_account configurations from the storage API are untrusted input
// (Google: "Validate credential configurations from external sources"):
// token exchange and impersonation URLs must be Google endpoints, so a
// crafted configuration cannot send the subject token elsewhere, and
// executable sources, which would run a command on the worker, are refused.
func checkCredentials(b []byte) (option.CredentialsType, error) {
	var f credentialsFile
	if b[0] != '{' || json.Unmarshal(b, &f) != nil {
		// The json error is dropped: it quotes the offending character.
		return "", badCredentials("Google Application Credentials must be the JSON content of a service account key or an external_account configuration", nil)
	}
	switch f.Type {
	case "service_account":
		switch {
		case f.ClientEmail == "":
			return "", badCredentials("Google Application Credentials are not a valid service account key: client_email is missing", nil)
		case f.PrivateKey == "":
			return "", badCredentials("Google Application Credentials are not a valid service account key: private_key is missing", nil)
		case !validPrivateKey(f.PrivateKey):
			return "", badCredentials("Google Application Credentials are not a valid service account key: private_key is not a PEM-encoded RSA private key", nil)
		}
		return option.ServiceAccount, nil
	case "external_account":
		var src struct {
			Executable json.RawMessage `json:"executable"`
		}
		switch {
		case f.Audience == "":
			return "", badCredentials("Google Application Credentials are not a valid external_account configuration: audience is missing", nil)
		case f.SubjectTokenType == "":
			return "", badCredentials("Google Application Credentials are not a valid external_account configuration: subject_token_type is missing", nil)
		case len(f.CredentialSource) == 0 || json.Unmarshal(f.CredentialSource, &src) != nil:
			return "", badCredentials("Google Application Credentials are not a valid external_account configuration: credential_source is missing", nil)
		case len(src.Executable) > 0:
			return "", badCredentials("Google Application Credentials: executable-sourced external_account configurations are not accepted inline; use Application Default Credentials for them", nil)
		case !googleEndpoint(f.TokenURL):
			return "", badCredentials("Google Application Credentials: external_account token_url must be an https URL on googleapis.com", nil)
		case !googleEndpoint(f.ServiceAccountImpersonationURL):
			return "", badCredentials("Google Application Credentials: external_account service_account_impersonation_url must be an https URL on googleapis.com", nil)
		}
		return option.ExternalAccount, nil
	case "impersonated_service_account":
		// Service-account impersonation (as on GKE): source credentials
		// that act as another service account through Google's IAM
		// Credentials API.
		switch {
		case !googleEndpoint(f.ServiceAccountImpersonationURL) || f.ServiceAccountImpersonationURL == "":
			return "", badCredentials("Google Application Credentials: impersonated_service_account service_account_impersonation_url must be an https URL on googleapis.com", nil)
		case len(f.SourceCredentials) == 0 || f.SourceCredentials[0] != '{':
			return "", badCredentials("Google Application Credentials are not a valid impersonated_service_account configuration: source_credentials is missing", nil)
		}
		if _, err := checkCredentials(f.SourceCredentials); err != nil {
			return "", badCredentials("Google Application Credentials: impersonated_service_account source_credentials are not valid", nil)
		}
		return option.ImpersonatedServiceAccount, nil
	case "":
		return "", badCredentials("Google Application Credentials have no \"type\"; expected \"service_account\", \"external_account\" or \"impersonated_service_account\"", nil)
	}
	msg := "Google Application Credentials must be a service_account key, an external_account configuration or an impersonated_service_account configuration"
	if knownTypes[f.Type] {
		msg += fmt.Sprintf(", not %q", f.Type)
	}
	return "", badCredentials(msg, nil)
}

func validPrivateKey(s string) bool {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return false
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return true
	}
	_, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	return err == nil
}

// googleEndpoint accepts https URLs on googleapis.com (sts.googleapis.com,
// regional sts.<region>.rep.googleapis.com, iamcredentials.googleapis.com).
// Empty means absent: the library then uses Google's default token_url, and
// no impersonation.
func googleEndpoint(raw string) bool {
	if raw == "" {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.User != nil {
		return false
	}
	h := u.Hostname()
	return h == "googleapis.com" || strings.HasSuffix(h, ".googleapis.com")
}

// badCredentials builds the error For returns. msg is user-facing and
// must never include any part of the credentials.
func badCredentials(msg string, cause error) error {
	inner := error(ErrBadCredentials)
	if cause != nil {
		inner = &classified{kind: ErrBadCredentials, err: cause}
	}
	return &ValidationError{Field: FieldCredentials, Message: msg, Err: inner}
}

// redact returns err unless its text contains a value from the credentials
// JSON (library errors sometimes quote what they failed to parse); then it
// returns a fixed error with no chain to walk back to the text.
func redact(err error, creds []byte) error {
	text := err.Error()
	var v any
	if json.Unmarshal(creds, &v) != nil {
		return errors.New("gcs: credentials rejected by the client library (details withheld: they quoted the credentials)")
	}
	leaked := false
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			// Short values ("service_account", "https") are not secrets and
			// occur in ordinary messages.
			if len(v) >= 8 && strings.Contains(text, v) {
				leaked = true
			}
			for _, line := range strings.Split(v, "\n") {
				if len(line) >= 16 && strings.Contains(text, line) {
					leaked = true
				}
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	if leaked {
		return errors.New("gcs: credentials rejected by the client library (details withheld: they quoted the credentials)")
	}
	return err
}

// Bucket returns the handle through which every call on a storage's bucket
// goes. userProject is the storage's google_project_id: when set, requests
// are billed to it, which requester-pays buckets demand (GCS answers 400
// "Bucket is a requester pays bucket but no user project provided"
// otherwise). Empty: the bucket's own project pays, as before.
func Bucket(c *storage.Client, name, userProject string) *storage.BucketHandle {
	b := c.Bucket(name)
	if userProject != "" {
		b = b.UserProject(userProject)
	}
	return b
}
