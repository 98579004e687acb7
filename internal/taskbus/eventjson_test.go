package taskbus

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/labelsync/labelsync/internal/ledger"
)

func TestEventJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	row := 3
	keys := []string{"incoming/cat 1.jpg", `q"uo\te`, "ctl\x00\x01\x1f\n\r\t", "ünï/ködé.png", "bad\xffutf8", "a#b?c%d", "<html>&amp;", "line\u2028sep\u2029"}
	for _, k := range keys {
		for _, ev := range []Event{
			{Event: ledger.Created, TaskID: "abc", Project: 7, StorageID: 1, Bucket: "b", Key: k, Generation: "17", Source: "notification", EventTime: "2026-11-27T14:30:03.098Z", Task: json.RawMessage(`{"data":{"x":1}}`)},
			{Event: ledger.Deleted, TaskID: "abc", Project: 7, StorageID: 1, Bucket: "b", Key: k, Generation: "17", RowIndex: &row, Source: "sync", EventTime: "t"},
		} {
			got, err := json.Marshal(&ev)
			if err != nil {
				t.Fatal(err)
			}
			type plain Event // encoding/json's own encoding, no MarshalJSON
			want, _ := json.Marshal(plain(ev))
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("key %q: invalid JSON %s: %v", k, got, err)
			}
			_ = json.Unmarshal(want, &w)
			if diff := cmp.Diff(w, g); diff != "" {
				t.Errorf("key %q (-encoding/json +ours):\n%s", k, diff)
			}
		}
	}
}

func BenchmarkEventJSON(b *testing.B) {
	ev := Event{Event: ledger.Created, TaskID: "4a0d312cc93d2f232ead9686f1d1de04", Project: 7, StorageID: 1, Bucket: "acme-raw", Key: "incoming/cat 1.jpg", Generation: "1795798335161749", Source: "notification", EventTime: "2026-11-27T16:52:15Z", Task: json.RawMessage(`{"data":{"$undefined$":"gs://acme-raw/incoming/cat 1.jpg"}}`)}
	type plain Event
	b.Run("ours", func(b *testing.B) {
		for b.Loop() {
			_, _ = ev.MarshalJSON()
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(plain(ev))
		}
	})
}
