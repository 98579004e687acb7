package resolve

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf8"
)

// Limits of GCS itself: object names are at most 1024 bytes of UTF-8,
// bucket names at most 222 characters. A fileuri longer than
// maxFileURILen (base64 of the longest gs:// URL, with room) is refused
// before any decoding.
const (
	maxKeyLen     = 1024
	maxFileURILen = 2048
)

// errFileURI is returned for every fileuri that does not name an object
// this resolver could open. The handler turns it into the same 404 as an
// object outside the project's storages; the reason is not shown.
var errFileURI = errors.New("resolve: fileuri is not a gs://bucket/key URL of an openable object")

// ParseFileURI decodes a resolver fileuri: a gs://bucket/key URL, or its
// URL-safe base64 with or without padding (what Label Studio's frontend
// sends). v is the query parameter as net/url decoded it, once; nothing
// is percent-decoded after that, so the key is the object name byte for
// byte, exactly as task events carry it.
//
// Keys that could mean something else to a layer that decodes or cleans
// paths are refused: "." and ".." segments, empty segments (a leading,
// trailing or doubled "/"), backslashes, control characters, invalid
// UTF-8, and the percent-escapes of "/", "\", "." and "%" (an encoded
// slash, or double encoding). Keys are not Unicode-normalised: GCS names
// are byte strings, so a differently normalised key is another object,
// which confinement then checks like any other.
func ParseFileURI(v string) (bucket, key string, err error) {
	if len(v) > maxFileURILen {
		return "", "", errFileURI
	}
	raw := v
	if !strings.HasPrefix(v, "gs://") {
		b, err := decodeBase64(v)
		if err != nil {
			return "", "", errFileURI
		}
		raw = string(b)
	}
	rest, ok := strings.CutPrefix(raw, "gs://")
	if !ok {
		return "", "", errFileURI
	}
	bucket, key, ok = strings.Cut(rest, "/")
	if !ok || !validBucket(bucket) || !validKey(key) {
		return "", "", errFileURI
	}
	return bucket, key, nil
}

// FileURI is the canonical gs:// URL of an object, the form task events
// carry and signed links sign.
func FileURI(bucket, key string) string { return "gs://" + bucket + "/" + key }

// decodeBase64 accepts URL-safe base64, padded or not, and nothing else:
// no standard alphabet (its "+" arrives as a space through a query), no
// non-zero trailing bits.
func decodeBase64(v string) ([]byte, error) {
	if strings.HasSuffix(v, "=") {
		return base64.URLEncoding.Strict().DecodeString(v)
	}
	return base64.RawURLEncoding.Strict().DecodeString(v)
}

// validBucket accepts GCS bucket name characters. Confinement compares the
// bucket with the storages' byte for byte; this only keeps odd bytes out
// of logs and signing.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 222 {
		return false
	}
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func validKey(key string) bool {
	if key == "" || len(key) > maxKeyLen || !utf8.ValidString(key) {
		return false
	}
	for _, r := range key {
		// C0 controls, DEL and C1 controls.
		if r < 0x20 || (0x7f <= r && r <= 0x9f) || r == '\\' {
			return false
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return !hasEncodedSeparator(key)
}

// hasEncodedSeparator finds %2F, %5C, %2E and %25 in any case.
func hasEncodedSeparator(key string) bool {
	for i := strings.IndexByte(key, '%'); i >= 0 && i+2 < len(key); {
		switch strings.ToUpper(key[i+1 : i+3]) {
		case "2F", "5C", "2E", "25":
			return true
		}
		j := strings.IndexByte(key[i+1:], '%')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}
