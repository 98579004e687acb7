package resolve

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"golang.org/x/sync/singleflight"

	"github.com/labelsync/labelsync/internal/storages"
)

// Signed URLs are reused for at most half their lifetime, and never once
// fewer than minRemaining are left: a redirect never points at a URL that
// is about to expire.
const minRemaining = time.Minute

// maxCached bounds each of the cache's two generations; the cache holds at
// most twice that (a few MB of URLs).
const maxCached = 8192

// emulatorAccessID names the throwaway signer used with an emulator when
// the storage has no service-account key of its own.
const emulatorAccessID = "labelsync-emulator@labelsync.invalid"

// presigner makes V4 signed URLs and keeps them for part of their
// lifetime. Concurrent requests for the same URL sign it once.
type presigner struct {
	clientFor ClientFor
	credsOf   func(*storages.Import) ([]byte, error)
	// emulator, when set, is the STORAGE_EMULATOR_HOST target; see sign.
	emulator *url.URL
	// now is the cache's clock. The client library signs with its own
	// (time.Now), so tests may move this one alone.
	now     func() time.Time
	timeout time.Duration

	cache    urlCache
	flight   singleflight.Group
	signings atomic.Int64 // URLs signed, cached or not
	// throwaway is the emulator signer's key, generated on first use.
	throwaway func() ([]byte, error)
}

func newPresigner(clientFor ClientFor, credsOf func(*storages.Import) ([]byte, error), emulator *url.URL, timeout time.Duration) *presigner {
	return &presigner{
		clientFor: clientFor,
		credsOf:   credsOf,
		emulator:  emulator,
		now:       time.Now,
		timeout:   timeout,
		throwaway: sync.OnceValues(generateKey),
	}
}

func generateKey() ([]byte, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("resolve: generating the emulator signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("resolve: encoding the emulator signing key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// cacheKey names one signed URL: the object, and a fingerprint of
// everything of the storage that goes into the URL. A PATCH of presign,
// presign_ttl, credentials (sealed anew, so the sealed form changes) or
// google_project_id changes the fingerprint, so the next request signs
// afresh and the old entries age out unused.
type cacheKey struct {
	fingerprint [sha256.Size]byte
	bucket, key string
}

func fingerprint(st *storages.Import) [sha256.Size]byte {
	presign := st.Presign == nil || *st.Presign
	return sha256.Sum256(fmt.Appendf(nil, "%d\x00%t\x00%d\x00%s\x00%s", st.ID, presign, st.PresignTTL, st.GoogleProjectID, st.SealedCredentials()))
}

type signedURL struct {
	url            string
	signed, expiry time.Time
}

// usable: within the first half of its lifetime and a minute from expiry.
func (s signedURL) usable(now time.Time) bool {
	return now.Before(s.signed.Add(s.expiry.Sub(s.signed)/2)) && s.expiry.Sub(now) > minRemaining
}

// urlCache is bounded with two generations: when the current one is full
// it becomes the old one and the one before is dropped. A hit in the old
// generation moves the entry forward.
type urlCache struct {
	mu       sync.Mutex
	cur, old map[cacheKey]signedURL
}

func (c *urlCache) get(k cacheKey, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.cur[k]; ok && v.usable(now) {
		return v.url, true
	}
	if v, ok := c.old[k]; ok && v.usable(now) {
		c.putLocked(k, v)
		return v.url, true
	}
	return "", false
}

func (c *urlCache) put(k cacheKey, v signedURL) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, v)
}

func (c *urlCache) putLocked(k cacheKey, v signedURL) {
	if c.cur == nil || len(c.cur) >= maxCached {
		c.old, c.cur = c.cur, make(map[cacheKey]signedURL)
	}
	c.cur[k] = v
}

// url returns a signed URL for the object, from the cache when one there
// has enough life left. A request that gives up (ctx) leaves the signing
// to finish for the others waiting on it.
func (p *presigner) url(ctx context.Context, st *storages.Import, bucket, key string) (string, error) {
	k := cacheKey{fingerprint: fingerprint(st), bucket: bucket, key: key}
	if u, ok := p.cache.get(k, p.now()); ok {
		return u, nil
	}
	flightKey := string(k.fingerprint[:]) + bucket + "\x00" + key
	ch := p.flight.DoChan(flightKey, func() (any, error) {
		// Detached from the first caller: the others may still wait.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
		defer cancel()
		now := p.now()
		ttl := time.Duration(st.PresignTTL) * time.Minute
		if st.PresignTTL < 1 {
			ttl = storages.DefaultPresignTTL * time.Minute
		}
		p.signings.Add(1)
		u, err := p.sign(sctx, st, bucket, key, time.Now().Add(ttl))
		if err != nil {
			return "", err
		}
		p.cache.put(k, signedURL{url: u, signed: now, expiry: now.Add(ttl)})
		return u, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// sign makes one V4 signed GET URL.
//
// Against Google Cloud Storage the storage client signs as its
// credentials allow (storage.BucketHandle.SignedURL): with the private key
// of a service-account key, otherwise through IAM signBlob as the service
// account that Application Default Credentials (metadata server) or
// impersonation name. The URL is path-style on storage.googleapis.com.
//
// With an emulator (STORAGE_EMULATOR_HOST) the clients carry no
// credentials. The URL is then signed with the storage's own
// service-account key when it has one, else with a throwaway key made at
// first use, for a path-style URL on the emulator's host, so that its
// signature can be checked as GCS would. fake-gcs-server serves path-style
// URLs only when its -public-host is its own address, which the local
// stack does not set, so the URL is finally pointed at fake-gcs-server's
// path-routed media endpoint, /download/storage/v1/b/BUCKET/o/KEY, with
// the same query; the emulator ignores signatures.
func (p *presigner) sign(ctx context.Context, st *storages.Import, bucket, key string, expires time.Time) (string, error) {
	opts := &storage.SignedURLOptions{
		Scheme:  storage.SigningSchemeV4,
		Method:  http.MethodGet,
		Expires: expires,
	}
	if st.GoogleProjectID != "" {
		// Reads are billed to it (requester-pays buckets), so the URL
		// must be too.
		opts.QueryParameters = url.Values{"userProject": {st.GoogleProjectID}}
	}
	if p.emulator == nil {
		c, err := p.clientFor(ctx, st)
		if err != nil {
			return "", err
		}
		u, err := c.Bucket(bucket).SignedURL(key, opts)
		if err != nil {
			return "", fmt.Errorf("resolve: signing a URL for storage %d: %w", st.ID, err)
		}
		return u, nil
	}
	id, pemKey, err := p.emulatorSigner(st)
	if err != nil {
		return "", err
	}
	opts.GoogleAccessID, opts.PrivateKey = id, pemKey
	opts.Hostname, opts.Insecure = p.emulator.Host, p.emulator.Scheme == "http"
	opts.Style = storage.PathStyle()
	u, err := storage.SignedURL(bucket, key, opts)
	if err != nil {
		return "", fmt.Errorf("resolve: signing an emulator URL for storage %d: %w", st.ID, err)
	}
	return emulatorMediaURL(u, bucket)
}

func (p *presigner) emulatorSigner(st *storages.Import) (string, []byte, error) {
	creds, err := p.credsOf(st)
	if err != nil {
		return "", nil, fmt.Errorf("resolve: storage %d credentials: %w", st.ID, err)
	}
	if len(creds) > 0 {
		var sa struct {
			Type        string `json:"type"`
			ClientEmail string `json:"client_email"`
			PrivateKey  string `json:"private_key"`
		}
		if json.Unmarshal(creds, &sa) == nil && sa.Type == "service_account" && sa.ClientEmail != "" && sa.PrivateKey != "" {
			return sa.ClientEmail, []byte(sa.PrivateKey), nil
		}
	}
	k, err := p.throwaway()
	return emulatorAccessID, k, err
}

// emulatorMediaURL moves a path-style URL http://host/BUCKET/KEY?q to
// http://host/download/storage/v1/b/BUCKET/o/KEY?q, keeping the key's
// escaping.
func emulatorMediaURL(signed, bucket string) (string, error) {
	u, err := url.Parse(signed)
	if err != nil {
		return "", fmt.Errorf("resolve: emulator URL: %w", err)
	}
	escKey, ok := strings.CutPrefix(u.EscapedPath(), "/"+bucket+"/")
	if !ok {
		return "", fmt.Errorf("resolve: emulator URL %q is not path-style", u.Redacted())
	}
	return u.Scheme + "://" + u.Host + "/download/storage/v1/b/" + bucket + "/o/" + escKey + "?" + u.RawQuery, nil
}

// emulatorURL parses STORAGE_EMULATOR_HOST: "host:port" (http) or an
// http(s) URL.
func emulatorURL(host string) (*url.URL, error) {
	if host == "" {
		return nil, nil
	}
	h := host
	if !strings.Contains(h, "://") {
		h = "http://" + h
	}
	u, err := url.Parse(h)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("resolve: STORAGE_EMULATOR_HOST " + strconv.Quote(host) + " is not host:port or an http(s) URL")
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}
