package gcs_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/storage"

	"github.com/labelsync/labelsync/internal/gcs"
)

// serviceAccountJSON returns a well-formed service account key with a fresh
// RSA key; it is never sent anywhere.
func serviceAccountJSON(t testing.TB, email string) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "acme",
		"private_key_id": "0123456789abcdef",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   email,
		"client_id":      "1234567890",
		"token_uri":      "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const externalAccountJSON = `{
  "type": "external_account",
  "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool/providers/prov",
  "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
  "token_url": "https://sts.googleapis.com/v1/token",
  "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@acme.iam.gserviceaccount.com:generateAccessToken",
  "credential_source": {"file": "/var/run/secrets/token"}
}`

// errorTexts returns the text of err and of every error it wraps, so a
// test can check that no layer quotes the credentials.
func errorTexts(err error) []string {
	if err == nil {
		return nil
	}
	out := []string{err.Error()}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		out = append(out, errorTexts(u.Unwrap())...)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			out = append(out, errorTexts(e)...)
		}
	}
	return out
}

func TestForBadCredentials(t *testing.T) {
	t.Parallel()
	const secret = "S3CRET-d0-not-print"
	tests := map[string]string{
		"not JSON":              "S3CRET-d0-not-print",
		"a path":                "/home/me/S3CRET-d0-not-print.json",
		"truncated JSON":        `{"type": "service_account", "private_key": "S3CRET-d0-not-print`,
		"JSON array":            `["S3CRET-d0-not-print"]`,
		"no type":               `{"private_key": "S3CRET-d0-not-print"}`,
		"unknown type":          `{"type": "S3CRET-d0-not-print"}`,
		"authorized user":       `{"type": "authorized_user", "refresh_token": "S3CRET-d0-not-print", "client_secret": "S3CRET-d0-not-print"}`,
		"no client_email":       `{"type": "service_account", "private_key": "S3CRET-d0-not-print"}`,
		"garbage private_key":   `{"type": "service_account", "client_email": "a@b.c", "private_key": "-----BEGIN PRIVATE KEY-----\nS3CRET-d0-not-print\n-----END PRIVATE KEY-----\n"}`,
		"private_key not PEM":   `{"type": "service_account", "client_email": "a@b.c", "private_key": "S3CRET-d0-not-print"}`,
		"external, no source":   `{"type": "external_account", "audience": "S3CRET-d0-not-print", "subject_token_type": "jwt"}`,
		"external, foreign STS": `{"type": "external_account", "audience": "a", "subject_token_type": "jwt", "token_url": "https://S3CRET-d0-not-print.example/token", "credential_source": {"file": "/t"}}`,
		"external, http STS":    `{"type": "external_account", "audience": "a", "subject_token_type": "jwt", "token_url": "http://sts.googleapis.com/v1/token", "credential_source": {"file": "/S3CRET-d0-not-print"}}`,
		"external, executable":  `{"type": "external_account", "audience": "a", "subject_token_type": "jwt", "credential_source": {"executable": {"command": "S3CRET-d0-not-print"}}}`,
		"external, foreign SA":  `{"type": "external_account", "audience": "a", "subject_token_type": "jwt", "service_account_impersonation_url": "https://googleapis.com.S3CRET-d0-not-print.example/x", "credential_source": {"file": "/t"}}`,
	}
	// The checks come before any client is built, with or without an
	// emulator, so a config error shows in development as in production.
	for _, emulator := range []string{"", "127.0.0.1:1"} {
		clients := gcs.NewClients(gcs.Options{EmulatorHost: emulator})
		t.Cleanup(func() { _ = clients.Close() })
		for name, input := range tests {
			t.Run(name+"/emulator="+emulator, func(t *testing.T) {
				t.Parallel()
				c, err := clients.For(t.Context(), []byte(input))
				if c != nil || !errors.Is(err, gcs.ErrBadCredentials) {
					t.Fatalf("For: client %v, error %v; want ErrBadCredentials", c, err)
				}
				var ve *gcs.ValidationError
				if !errors.As(err, &ve) || ve.Field != "google_application_credentials" {
					t.Errorf("error %#v is not a ValidationError on google_application_credentials", err)
				}
				for _, text := range errorTexts(err) {
					if strings.Contains(text, secret) || strings.Contains(text, input) {
						t.Errorf("error text %q quotes the credentials", text)
					}
				}
				if gcs.Transient(err) {
					t.Errorf("Transient(%v) = true, want false", err)
				}
			})
		}
	}
}

func TestForCaches(t *testing.T) {
	t.Parallel()
	sa1 := serviceAccountJSON(t, "one@acme.iam.gserviceaccount.com")
	sa2 := serviceAccountJSON(t, "two@acme.iam.gserviceaccount.com")
	// No emulator: real clients, built offline (a key is parsed, no token
	// is fetched until the first request, which these tests never make).
	clients := gcs.NewClients(gcs.Options{})

	var wg sync.WaitGroup
	got := make([]*storage.Client, 8)
	for i := range got {
		wg.Go(func() {
			c, err := clients.For(t.Context(), sa1)
			if err != nil {
				t.Errorf("For(sa1): %v", err)
			}
			got[i] = c
		})
	}
	wg.Wait()
	for i, c := range got {
		if c == nil || c != got[0] {
			t.Fatalf("concurrent For(sa1) call %d returned %p, call 0 %p; want one shared client", i, c, got[0])
		}
	}
	// Surrounding whitespace does not make credentials distinct.
	again, err := clients.For(t.Context(), append([]byte("\n "), sa1...))
	if err != nil || again != got[0] {
		t.Errorf("For(sa1 with whitespace) = %p, %v; want the cached %p", again, err, got[0])
	}
	other, err := clients.For(t.Context(), sa2)
	if err != nil || other == nil || other == got[0] {
		t.Errorf("For(sa2) = %p, %v; want a second client", other, err)
	}
	ext, err := clients.For(t.Context(), []byte(externalAccountJSON))
	if err != nil || ext == nil || ext == got[0] || ext == other {
		t.Errorf("For(external_account) = %p, %v; want a third client", ext, err)
	}

	if err := clients.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if c, err := clients.For(t.Context(), sa1); c != nil || err == nil {
		t.Errorf("For after Close = %p, %v; want an error", c, err)
	}
	if err := clients.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestForEmulatorSharesOneClient(t *testing.T) {
	t.Parallel()
	clients := gcs.NewClients(gcs.Options{EmulatorHost: "127.0.0.1:4443"})
	defer clients.Close()
	adc, err := clients.For(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	inline, err := clients.For(t.Context(), serviceAccountJSON(t, "sa@acme.iam.gserviceaccount.com"))
	if err != nil {
		t.Fatal(err)
	}
	if adc != inline {
		t.Errorf("emulator clients differ (%p, %p); the emulator ignores credentials, so one is enough", adc, inline)
	}
}

func TestForBadEmulatorHost(t *testing.T) {
	t.Parallel()
	clients := gcs.NewClients(gcs.Options{EmulatorHost: "http://"})
	defer clients.Close()
	if _, err := clients.For(t.Context(), nil); err == nil {
		t.Error("For with emulator host \"http://\" succeeded, want an error")
	}
}

// BenchmarkForInline is the cost of For with inline service-account
// credentials already seen: every proxied file and every Tasks-mode read
// of a storage with its own key pays it.
func BenchmarkForInline(b *testing.B) {
	creds := serviceAccountJSON(b, "bench@acme.iam.gserviceaccount.com")
	clients := gcs.NewClients(gcs.Options{EmulatorHost: "127.0.0.1:1"})
	defer clients.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := clients.For(ctx, creds); err != nil {
			b.Fatal(err)
		}
	}
}
