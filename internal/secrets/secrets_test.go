package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func testKey(fill byte) []byte { return bytes.Repeat([]byte{fill}, 32) }

func mustNew(t *testing.T, key []byte) *Box {
	t.Helper()
	b, err := New(base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func TestNewAcceptsEncodings(t *testing.T) {
	t.Parallel()
	// 0xfb.. bytes make the std and URL alphabets differ ("+/" vs "-_").
	key := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:32]
	tests := []struct {
		name string
		in   string
	}{
		{"std", base64.StdEncoding.EncodeToString(key)},
		{"raw std", base64.RawStdEncoding.EncodeToString(key)},
		{"url", base64.URLEncoding.EncodeToString(key)},
		{"raw url", base64.RawURLEncoding.EncodeToString(key)},
		{"trailing newline", base64.StdEncoding.EncodeToString(key) + "\n"},
	}
	ref := mustNew(t, key)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := New(tt.in)
			if err != nil {
				t.Fatalf("New(%q): %v", tt.in, err)
			}
			// Same key: what one seals, the other opens.
			sealed, err := b.Seal([]byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ref.Open(sealed); err != nil {
				t.Errorf("key decoded differently from std encoding: %v", err)
			}
		})
	}
}

func TestNewBadKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "empty"},
		{"not base64", "not base64 at all!", "not valid base64"},
		{"16 bytes", base64.StdEncoding.EncodeToString(testKey(1)[:16]), "32 bytes, got 16"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(testKey(1), 0)), "32 bytes, got 33"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.in)
			if err == nil {
				t.Fatalf("New(%q) = nil error, want one containing %q", tt.in, tt.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, "LABELSYNC_SECRET_KEY") || !strings.Contains(msg, tt.want) {
				t.Errorf("New(%q) error = %q, want it to name LABELSYNC_SECRET_KEY and contain %q", tt.in, msg, tt.want)
			}
			if tt.in != "" && strings.Contains(msg, tt.in) {
				t.Errorf("error %q echoes the key", msg)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	b := mustNew(t, testKey(7))
	for _, pt := range [][]byte{nil, []byte(""), []byte(`{"type":"service_account"}`), bytes.Repeat([]byte("k"), 1<<16)} {
		t.Run(fmt.Sprintf("len %d", len(pt)), func(t *testing.T) {
			t.Parallel()
			sealed, err := b.Seal(pt)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(sealed, "v1:") {
				t.Errorf("Seal = %q, want a v1: prefix", sealed)
			}
			if len(pt) > 0 && strings.Contains(sealed, string(pt)) {
				t.Error("sealed value contains the plaintext")
			}
			got, err := b.Open(sealed)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, pt) {
				t.Errorf("Open = %q, want %q", got, pt)
			}
		})
	}
}

func TestSealIsRandomized(t *testing.T) {
	t.Parallel()
	b := mustNew(t, testKey(7))
	s1, _ := b.Seal([]byte("same"))
	s2, _ := b.Seal([]byte("same"))
	if s1 == s2 {
		t.Errorf("two seals of the same plaintext are equal (%q): nonce reused", s1)
	}
}

func TestOpenFails(t *testing.T) {
	t.Parallel()
	b := mustNew(t, testKey(7))
	other := mustNew(t, testKey(8))
	sealed, err := b.Seal([]byte("secret credentials"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, "v1:"))
	flip := func(i int) string {
		c := bytes.Clone(raw)
		c[i] ^= 1
		return "v1:" + base64.StdEncoding.EncodeToString(c)
	}
	tests := []struct {
		name   string
		box    *Box
		sealed string
	}{
		{"wrong key", other, sealed},
		{"tampered nonce", b, flip(0)},
		{"tampered ciphertext", b, flip(14)},
		{"tampered tag", b, flip(len(raw) - 1)},
		{"truncated", b, "v1:" + base64.StdEncoding.EncodeToString(raw[:len(raw)-1])},
		{"too short", b, "v1:" + base64.StdEncoding.EncodeToString(raw[:10])},
		{"no version", b, strings.TrimPrefix(sealed, "v1:")},
		{"other version", b, "v2:" + strings.TrimPrefix(sealed, "v1:")},
		{"not base64", b, "v1:***"},
		{"empty", b, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.box.Open(tt.sealed)
			if err == nil {
				t.Fatalf("Open = %q, nil error; want an error", got)
			}
			if !errors.Is(err, ErrOpen) {
				t.Errorf("Open error = %v, want it to wrap ErrOpen", err)
			}
		})
	}
}

func TestStringRedacts(t *testing.T) {
	t.Parallel()
	b := mustNew(t, testKey('A'))
	for _, s := range []string{fmt.Sprint(b), fmt.Sprintf("%v", b), fmt.Sprintf("%s", b)} {
		if strings.Contains(s, "AAAA") {
			t.Errorf("formatted Box %q shows key material", s)
		}
	}
}
