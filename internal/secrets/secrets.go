// Package secrets seals stored credentials with AES-256-GCM so that
// storage definitions can be kept and passed around without exposing the
// service account keys they carry.
//
// The key comes from LABELSYNC_SECRET_KEY (base64 of 32 random bytes, for
// example `openssl rand -base64 32`). A Box is safe for concurrent use.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// version prefixes every sealed value so that the format (or the key) can
// change later without guessing what an old value is.
const version = "v1:"

// ErrOpen is wrapped by every error Open returns: the value is malformed,
// was tampered with, or was sealed under another key. It is permanent.
var ErrOpen = errors.New("secrets: cannot open sealed value")

// Box seals and opens values under one key.
type Box struct {
	aead cipher.AEAD
}

// New builds a Box from the base64 key in LABELSYNC_SECRET_KEY. Standard and
// URL-safe alphabets, padded or not, are accepted because people paste keys
// from different tools. Errors name the variable but never echo the key.
func New(keyB64 string) (*Box, error) {
	s := strings.TrimSpace(keyB64)
	if s == "" {
		return nil, errors.New("secrets: LABELSYNC_SECRET_KEY is empty")
	}
	key, err := decodeKey(s)
	if err != nil {
		return nil, errors.New("secrets: LABELSYNC_SECRET_KEY is not valid base64")
	}
	defer clear(key)
	if len(key) != 32 {
		return nil, fmt.Errorf("secrets: LABELSYNC_SECRET_KEY must decode to 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	// Random 96-bit nonces are fine here: credentials are sealed rarely,
	// nowhere near the 2^32 messages per key where collisions matter.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	return &Box{aead: aead}, nil
}

func decodeKey(s string) ([]byte, error) {
	var firstErr error
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding,
		base64.URLEncoding, base64.RawURLEncoding,
	} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// String keeps the key material out of logs and %v output.
func (b *Box) String() string { return "secrets.Box{redacted}" }

// Seal encrypts plaintext and returns "v1:" + base64(nonce|ciphertext|tag).
func (b *Box) Seal(plaintext []byte) (string, error) {
	if b == nil || b.aead == nil {
		return "", errors.New("secrets: seal with a nil Box")
	}
	// The version is authenticated as additional data so a value can never
	// be reinterpreted under a future format with the same key.
	ct := b.aead.Seal(nil, nil, plaintext, []byte(version))
	return version + base64.StdEncoding.EncodeToString(ct), nil
}

// Open decrypts a value produced by Seal. Every failure wraps ErrOpen.
func (b *Box) Open(sealed string) ([]byte, error) {
	if b == nil || b.aead == nil {
		return nil, errors.New("secrets: open with a nil Box")
	}
	payload, ok := strings.CutPrefix(sealed, version)
	if !ok {
		return nil, fmt.Errorf("%w: not a %q value", ErrOpen, strings.TrimSuffix(version, ":"))
	}
	ct, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrOpen)
	}
	if len(ct) < b.aead.Overhead() {
		return nil, fmt.Errorf("%w: too short", ErrOpen)
	}
	pt, err := b.aead.Open(nil, nil, ct, []byte(version))
	if err != nil {
		return nil, fmt.Errorf("%w: wrong LABELSYNC_SECRET_KEY or altered value", ErrOpen)
	}
	return pt, nil
}
