package taskbus

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestParsePubAck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		seq     uint64
		errCode jetstream.ErrorCode // 0: no API error
		err     bool
	}{
		{in: `{"stream":"LABELSYNC_TASKS","seq":1}`, seq: 1},
		{in: `{"stream":"LABELSYNC_TASKS","seq":18446744073709551615}`, seq: 1<<64 - 1},
		{in: `{"stream":"LABELSYNC_TASKS","domain":"hub","seq":42}`, seq: 42},
		{in: `{"stream":"LABELSYNC_TASKS","seq":42,"duplicate":true}`, seq: 42},
		{in: `{"stream": "LABELSYNC_TASKS", "seq": 7}`, seq: 7}, // not the fast shape: encoding/json
		{in: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"LABELSYNC_TASKS","seq":0}`, errCode: jetstream.JSErrCodeStreamWrongLastSequence},
		{in: `{"stream":"LABELSYNC_TASKS","seq":0,"error":{"code":503,"err_code":10077,"description":"resource limits exceeded"}}`, errCode: 10077},
		{in: `{"stream":"LABELSYNC_TASKS","seq":0}`, err: true},
		{in: `{"stream":"","seq":3}`, err: true},
		{in: `{"stream":"LABELSYNC_TASKS","seq":18446744073709551616}`, err: true},
		{in: `{"stream":"LABELSYNC_TASKS","seq":-1}`, err: true},
		{in: `{"stream":"LABELSYNC_TASKS","seq":12`, err: true},
		{in: ``, err: true},
		{in: `not json`, err: true},
	} {
		seq, err := parsePubAck([]byte(tc.in))
		var apiErr *jetstream.APIError
		switch {
		case tc.errCode != 0:
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != tc.errCode {
				t.Errorf("parsePubAck(%s) = %d, %v; want API error %d", tc.in, seq, err, tc.errCode)
			}
		case tc.err:
			if err == nil {
				t.Errorf("parsePubAck(%s) = %d, nil; want an error", tc.in, seq)
			}
		case err != nil || seq != tc.seq:
			t.Errorf("parsePubAck(%s) = %d, %v; want %d, nil", tc.in, seq, err, tc.seq)
		}
	}
	// A moved head is a conflict to re-decide on, not a failure.
	_, err := parsePubAck([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}`))
	if !errors.Is(classify("append", err), ErrConflict) {
		t.Errorf("wrong last sequence: classify = %v, want ErrConflict", classify("append", err))
	}
}

// FuzzParsePubAck checks the hand-read fast path against encoding/json:
// whatever parsePubAck accepts, encoding/json reads as the same sequence
// with no error.
func FuzzParsePubAck(f *testing.F) {
	for _, s := range []string{
		`{"stream":"LABELSYNC_TASKS","seq":1}`, `{"stream":"S","domain":"d","seq":9,"duplicate":true}`,
		`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}`,
		`{"stream":"S","x":"\"seq\":5,","seq":6}`, `{"stream":"S","seq":1}trailing`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, err := parsePubAck(b)
		if err != nil {
			return
		}
		var r struct {
			Error  *jetstream.APIError `json:"error"`
			Stream string              `json:"stream"`
			Seq    uint64              `json:"seq"`
		}
		if jerr := json.Unmarshal(b, &r); jerr != nil || r.Error != nil || r.Seq != seq || r.Stream == "" {
			t.Fatalf("parsePubAck(%q) = %d, but encoding/json reads %+v, %v", b, seq, r, jerr)
		}
	})
}
