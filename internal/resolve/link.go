package resolve

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// linkInfo labels the HKDF derivation, so the link key is independent of
// the key that seals credentials, though both come from
// LABELSYNC_SECRET_KEY. A new version of the link format takes a new label.
const linkInfo = "labelsync resolve signed link v1"

// Links issues and checks signed links: resolver URLs that carry, instead
// of the bearer token, an HMAC-SHA256 over the project, the object's
// canonical gs:// URL and the expiry, so that a browser can load them in
// an <img>. A link opens that one object of that project, nothing else.
// Links is safe for concurrent use.
type Links struct {
	key []byte
}

// NewLinks derives the link key from LABELSYNC_SECRET_KEY (base64 of 32
// bytes, any of the alphabets the secrets package accepts). Rotating that
// key invalidates every link issued before.
func NewLinks(secretKey string) (*Links, error) {
	secret, err := decodeSecret(strings.TrimSpace(secretKey))
	if err != nil {
		return nil, errors.New("resolve: LABELSYNC_SECRET_KEY is not base64 of 32 bytes")
	}
	defer clear(secret)
	key, err := hkdf.Key(sha256.New, secret, nil, linkInfo, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("resolve: deriving the link key: %w", err)
	}
	return &Links{key: key}, nil
}

func decodeSecret(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding,
		base64.URLEncoding, base64.RawURLEncoding,
	} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				clear(b)
				return nil, errors.New("not 32 bytes")
			}
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// String keeps the key out of logs and %v output.
func (l *Links) String() string { return "resolve.Links{redacted}" }

// Path returns the signed resolver path for one object of a project:
// /projects/P/resolve/?expires=…&fileuri=gs%3A%2F%2F…&sig=…, with no
// expires parameter when expires is zero (the link does not expire).
// fileuri is a gs:// URL or its base64, as the resolver accepts.
func (l *Links) Path(project int64, fileuri string, expires time.Time) (string, error) {
	bucket, key, err := ParseFileURI(fileuri)
	if err != nil {
		return "", err
	}
	if project < 1 {
		return "", errors.New("resolve: project must be a positive integer")
	}
	canonical := FileURI(bucket, key)
	q := url.Values{"fileuri": {canonical}}
	exp := ""
	if !expires.IsZero() {
		exp = strconv.FormatInt(expires.Unix(), 10)
		q.Set("expires", exp)
	}
	q.Set("sig", base64.RawURLEncoding.EncodeToString(l.mac(project, canonical, exp)))
	return fmt.Sprintf("/projects/%d/resolve/?%s", project, q.Encode()), nil
}

// mac is the HMAC over project, expires and the canonical fileuri. Fields
// are separated by NUL, which none of them can contain (keys with control
// characters are refused, the others are digits), so no two different
// triples share a message.
func (l *Links) mac(project int64, canonical, expires string) []byte {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte("v1\x00"))
	m.Write([]byte(strconv.FormatInt(project, 10)))
	m.Write([]byte{0})
	m.Write([]byte(expires))
	m.Write([]byte{0})
	m.Write([]byte(canonical))
	return m.Sum(nil)
}

// valid reports whether q carries a link for exactly this project and
// object that has not expired at now. The expires value is signed as sent,
// so it cannot be removed, changed or respelled.
func (l *Links) valid(project int64, canonical string, q url.Values, now time.Time) bool {
	if l == nil {
		return false
	}
	sigs, exps := q["sig"], q["expires"]
	if len(sigs) != 1 || len(exps) > 1 {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(sigs[0], "="))
	if err != nil {
		return false
	}
	exp := ""
	if len(exps) == 1 {
		exp = exps[0]
	}
	if !hmac.Equal(got, l.mac(project, canonical, exp)) {
		return false
	}
	if exp == "" {
		return true
	}
	t, err := strconv.ParseInt(exp, 10, 64)
	return err == nil && now.Unix() < t
}
