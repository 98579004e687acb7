package storages

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/labelsync/labelsync/internal/secrets"
)

// specJSON is the example of SPEC §1.
const specJSON = `{"import": [{"id": 1, "project": 7, "title": "raw images", "bucket": "acme-raw",
             "prefix": "incoming", "regex_filter": ".*\\.(jpe?g|png)$",
             "use_blob_urls": true, "recursive_scan": true,
             "presign": true, "presign_ttl": 15,
             "google_application_credentials": "", "google_project_id": "acme"}],
 "export": [{"id": 2, "project": 7, "title": "labels", "bucket": "acme-labels",
             "prefix": "annotations", "can_delete_objects": true}]}`

// specYAML is the same file in YAML.
const specYAML = `
import:
  - id: 1
    project: 7
    title: raw images
    bucket: acme-raw
    prefix: incoming
    regex_filter: '.*\.(jpe?g|png)$'
    use_blob_urls: true
    recursive_scan: true
    presign: true
    presign_ttl: 15
    google_application_credentials: ""
    google_project_id: acme
export:
  - id: 2
    project: 7
    title: labels
    bucket: acme-labels
    prefix: annotations
    can_delete_objects: true
`

const fakeCreds = `{"type": "service_account", "project_id": "acme", "private_key": "-----BEGIN PRIVATE KEY-----\nTOPSECRET\n-----END PRIVATE KEY-----\n"}`

var ignoreUnexported = cmpopts.IgnoreUnexported(Import{}, Export{})

func ptr[T any](v T) *T { return &v }

func testBox(t testing.TB, fill byte) *secrets.Box {
	t.Helper()
	b, err := secrets.New(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSpecExample(t *testing.T) {
	t.Parallel()
	want := File{
		Import: []Import{{
			ID: 1, Project: 7, Title: "raw images", Bucket: "acme-raw",
			Prefix: "incoming", RegexFilter: `.*\.(jpe?g|png)$`,
			UseBlobURLs: true, RecursiveScan: true,
			Presign: ptr(true), PresignTTL: 15,
			GoogleProjectID: "acme", DataKey: "$undefined$",
		}},
		Export: []Export{{
			ID: 2, Project: 7, Title: "labels", Bucket: "acme-labels",
			Prefix: "annotations", CanDeleteObjects: true, ObjectKey: "{annotation_id}",
		}},
	}
	for name, data := range map[string]string{"json": specJSON, "yaml": specYAML} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(data), ParseOptions{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(want, got, ignoreUnexported); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
			imp := &got.Import[0]
			if imp.NormalizedPrefix() != "incoming/" || !imp.Matches("incoming/2026/cat 1.jpg") || imp.Matches("incoming/notes.txt") {
				t.Error("parsed storage does not match as the spec example says")
			}
			if imp.HasCredentials() {
				t.Error(`HasCredentials() = true for "google_application_credentials": ""`)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	got, err := Parse([]byte(`{"import":[{"id":1,"project":2,"bucket":"b-1"}],"export":[{"id":1,"project":2,"bucket":"b-2"}]}`), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := File{
		Import: []Import{{ID: 1, Project: 2, Bucket: "b-1", Presign: ptr(true), PresignTTL: 15, DataKey: "$undefined$"}},
		Export: []Export{{ID: 1, Project: 2, Bucket: "b-2", ObjectKey: "{annotation_id}"}},
	}
	if diff := cmp.Diff(want, got, ignoreUnexported); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}

	// Explicit values are kept.
	got, err = Parse([]byte(`
import: [{id: 1, project: 2, bucket: b-1, presign: false, presign_ttl: 10080, data_key: image}]
export: [{id: 1, project: 2, bucket: b-2, object_key: "{task_id}.json"}]
`), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want = File{
		Import: []Import{{ID: 1, Project: 2, Bucket: "b-1", Presign: ptr(false), PresignTTL: 10080, DataKey: "image"}},
		Export: []Export{{ID: 1, Project: 2, Bucket: "b-2", ObjectKey: "{task_id}.json"}},
	}
	if diff := cmp.Diff(want, got, ignoreUnexported); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "  \n", "{}", `{"import": [], "export": []}`, "import: []\n", `{"import": null}`} {
		got, err := Parse([]byte(in), ParseOptions{})
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if len(got.Import)+len(got.Export) != 0 {
			t.Errorf("Parse(%q) = %+v, want no storages", in, got)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	imp := func(fields string) string {
		return `{"import": [{"id": 1, "project": 7, "bucket": "acme"}, {"id": 3, ` + fields + `}]}`
	}
	exp := func(fields string) string {
		return `{"export": [{"id": 3, ` + fields + `}]}`
	}
	tests := []struct {
		name  string
		in    string
		field string // want a *FieldError for this field; "" for none
		want  string // the whole message
	}{
		{"missing project", imp(`"bucket": "acme"`), "project",
			`storages: import[1] (id 3): project: required, the id of a labeling project`},
		{"negative project", imp(`"project": -1, "bucket": "acme"`), "project",
			`storages: import[1] (id 3): project -1: must be positive`},
		{"missing bucket", imp(`"project": 7`), "bucket",
			`storages: import[1] (id 3): bucket: required`},
		{"bucket url", imp(`"project": 7, "bucket": "gs://acme"`), "bucket",
			`storages: import[1] (id 3): bucket "gs://acme": must be a bucket name, not a gs:// URL`},
		{"bucket with folder", imp(`"project": 7, "bucket": "acme/raw"`), "bucket",
			`storages: import[1] (id 3): bucket "acme/raw": must be a bucket name; put folders in prefix`},
		{"bucket uppercase", imp(`"project": 7, "bucket": "Acme"`), "bucket",
			`storages: import[1] (id 3): bucket "Acme": must be 3 to 222 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit`},
		{"bucket too short", imp(`"project": 7, "bucket": "ab"`), "bucket", ""},
		{"bucket too long", imp(`"project": 7, "bucket": "` + strings.Repeat("a", 223) + `"`), "bucket", ""},
		{"bucket leading dash", imp(`"project": 7, "bucket": "-acme"`), "bucket", ""},
		{"bucket trailing dot", imp(`"project": 7, "bucket": "acme."`), "bucket", ""},
		{"bucket space", imp(`"project": 7, "bucket": "ac me"`), "bucket", ""},
		{"presign_ttl too big", imp(`"project": 7, "bucket": "acme", "presign_ttl": 10081`), "presign_ttl",
			`storages: import[1] (id 3): presign_ttl 10081: must be between 1 and 10080 minutes (0 means 15)`},
		{"presign_ttl negative", imp(`"project": 7, "bucket": "acme", "presign_ttl": -1`), "presign_ttl", ""},
		{"regex invalid", imp(`"project": 7, "bucket": "acme", "regex_filter": "(["`), "regex_filter",
			"storages: import[1] (id 3): regex_filter \"([\": error parsing regexp: missing closing ]: `[`"},
		{"regex not RE2", imp(`"project": 7, "bucket": "acme", "regex_filter": "(?!tmp/).*"`), "regex_filter", ""},
		{"regex escaping group", imp(`"project": 7, "bucket": "acme", "regex_filter": "a)|(b"`), "regex_filter", ""},
		{"data_key blank", imp(`"project": 7, "bucket": "acme", "data_key": "  "`), "data_key",
			`storages: import[1] (id 3): data_key "  ": must not be blank`},
		{"credentials not json", imp(`"project": 7, "bucket": "acme", "google_application_credentials": "/etc/key.json"`), "google_application_credentials",
			`storages: import[1] (id 3): google_application_credentials: must be the JSON content of a service account or external_account key, not a path or other text`},
		{"import id missing", `{"import": [{"project": 7, "bucket": "acme"}]}`, "id",
			`storages: import[0] (no id): id: required, a positive integer`},
		{"import id negative", `{"import": [{"id": -4, "project": 7, "bucket": "acme"}]}`, "id",
			`storages: import[0] (id -4): id -4: must be positive`},
		{"import id duplicate", imp(`"project": 7, "bucket": "acme"}, {"id": 1, "project": 7, "bucket": "acme"`), "id",
			`storages: import[2] (id 1): id 1: duplicate of import[0]`},
		{"unknown import field", imp(`"project": 7, "bucket": "acme", "bukcet": "x"`), "",
			`storages: import[1] (id 3): unknown field "bukcet"`},
		{"wrong type", imp(`"project": "7", "bucket": "acme"`), "project",
			`storages: import[1] (id 3): project: want an integer, got string`},
		{"fractional id", `{"import": [{"id": 1.5, "project": 7, "bucket": "acme"}]}`, "id",
			`storages: import[0] (no id): id: want an integer, got number 1.5`},
		{"yaml number prefix", "import:\n- {id: 4, project: 1, bucket: acme, prefix: 2024}\n", "prefix",
			`storages: import[0] (id 4): prefix: want a string (quote it in YAML), got number`},
		{"yaml bool presign", "import:\n- {id: 4, project: 1, bucket: acme, presign: maybe}\n", "presign",
			`storages: import[0] (id 4): presign: want true or false, got string`},

		{"export missing bucket", exp(`"project": 7`), "bucket",
			`storages: export[0] (id 3): bucket: required`},
		{"export missing project", exp(`"bucket": "acme"`), "project",
			`storages: export[0] (id 3): project: required, the id of a labeling project`},
		{"export object_key", exp(`"project": 7, "bucket": "acme", "object_key": "{id}"`), "object_key",
			`storages: export[0] (id 3): object_key "{id}": must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`},
		{"export id duplicate", `{"export": [{"id": 3, "project": 7, "bucket": "acme"}, {"id": 3, "project": 7, "bucket": "acme"}]}`, "id",
			`storages: export[1] (id 3): id 3: duplicate of export[0]`},
		{"export unknown field", exp(`"project": 7, "bucket": "acme", "regex_filter": "x"`), "",
			`storages: export[0] (id 3): unknown field "regex_filter"`},

		{"unknown top-level field", `{"imports": []}`, "",
			`storages: want an object with "import" and "export" lists: json: unknown field "imports"`},
		{"top-level list", `[]`, "", `storages: want an object with "import" and "export" lists, got a list`},
		{"top-level scalar", "hello", "", `storages: want an object with "import" and "export" lists, got a string`},
		{"trailing data", `{"import": []} {}`, "", ""},
		{"bad yaml", "import: [\n", "", ""},
		{"bad json", `{"import": [}`, "", ""},
		{"two yaml documents", "import: []\n---\nexport: []\n", "", "storages: yaml: more than one document; put every storage in one"},
		{"yaml duplicate key", "import:\n- id: 1\n  id: 2\n  project: 1\n  bucket: acme\n", "", ""},
		{"yaml unknown field", "import:\n- id: 9\n  project: 1\n  bucket: acme\n  recursive: true\n", "",
			`storages: import[0] (id 9): unknown field "recursive"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.in), ParseOptions{})
			if err == nil {
				t.Fatalf("Parse = %+v, nil error; want an error", got)
			}
			if !strings.HasPrefix(err.Error(), "storages: ") {
				t.Errorf("error %q does not name its origin", err)
			}
			if tt.want != "" && err.Error() != tt.want {
				t.Errorf("error = %s\nwant    %s", err, tt.want)
			}
			var fe *FieldError
			switch {
			case tt.field == "":
			case !errors.As(err, &fe):
				t.Errorf("error %q is not a *FieldError", err)
			case fe.Field != tt.field:
				t.Errorf("FieldError.Field = %q, want %q", fe.Field, tt.field)
			case !strings.Contains(err.Error(), "import[") && !strings.Contains(err.Error(), "export["):
				t.Errorf("error %q does not name the storage", err)
			}
		})
	}
}

// Import and export ids are separate, as in Label Studio.
func TestParseSameIDImportAndExport(t *testing.T) {
	t.Parallel()
	if _, err := Parse([]byte(`{"import":[{"id":1,"project":1,"bucket":"acme"}],"export":[{"id":1,"project":1,"bucket":"acme"}]}`), ParseOptions{}); err != nil {
		t.Errorf("Parse: %v", err)
	}
}

func TestNormalizeErrors(t *testing.T) {
	t.Parallel()
	// The API validates storages before they have an id.
	s := Import{Project: 1, Bucket: "acme"}
	if err := s.Normalize(); err != nil {
		t.Errorf("Normalize without id: %v", err)
	}
	s = Import{ID: 4, Project: 1, Bucket: "acme", RegexFilter: "(["}
	err := s.Normalize()
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "regex_filter" {
		t.Fatalf("Normalize error = %v, want a regex_filter FieldError", err)
	}
	if want := "storages: import (id 4): regex_filter \"([\": error parsing regexp: missing closing ]: `[`"; err.Error() != want {
		t.Errorf("error = %s\nwant    %s", err, want)
	}
	e := Export{Project: 1, Bucket: "acme", ObjectKey: "x"}
	if err := e.Normalize(); err == nil || !strings.HasPrefix(err.Error(), "storages: export (no id): object_key") {
		t.Errorf("Export.Normalize error = %v, want an object_key error", err)
	}
}

func TestCredentialsRefusedWithoutBox(t *testing.T) {
	t.Parallel()
	in, _ := json.Marshal(map[string]any{
		"import": []any{map[string]any{"id": 1, "project": 1, "bucket": "acme", "google_application_credentials": fakeCreds}},
	})
	_, err := Parse(in, ParseOptions{})
	if !errors.Is(err, ErrNoSecretKey) {
		t.Fatalf("Parse error = %v, want ErrNoSecretKey", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "LABELSYNC_SECRET_KEY") || !strings.Contains(msg, "import[0] (id 1): google_application_credentials") {
		t.Errorf("error %q should name the storage, the field and LABELSYNC_SECRET_KEY", msg)
	}
	if strings.Contains(msg, "TOPSECRET") {
		t.Errorf("error %q leaks the credentials", msg)
	}
}

func TestCredentialsSealed(t *testing.T) {
	t.Parallel()
	box := testBox(t, 1)
	in, _ := json.Marshal(map[string]any{
		"import": []any{map[string]any{"id": 1, "project": 1, "bucket": "acme", "google_application_credentials": fakeCreds}},
		"export": []any{map[string]any{"id": 1, "project": 1, "bucket": "acme", "google_application_credentials": fakeCreds}},
	})
	f, err := Parse(in, ParseOptions{Secrets: box})
	if err != nil {
		t.Fatal(err)
	}
	imp, exp := &f.Import[0], &f.Export[0]
	type credentialed interface {
		HasCredentials() bool
		Credentials(*secrets.Box) ([]byte, error)
		SealedCredentials() string
	}
	for name, s := range map[string]credentialed{"import": imp, "export": exp} {
		if !s.HasCredentials() {
			t.Errorf("%s: HasCredentials() = false", name)
		}
		got, err := s.Credentials(box)
		if err != nil || string(got) != fakeCreds {
			t.Errorf("%s: Credentials = %q, %v; want the original JSON", name, got, err)
		}
		if strings.Contains(s.SealedCredentials(), "TOPSECRET") || !strings.HasPrefix(s.SealedCredentials(), "v1:") {
			t.Errorf("%s: SealedCredentials() = %q, want a sealed value", name, s.SealedCredentials())
		}
		if _, err := s.Credentials(nil); err == nil || !strings.Contains(err.Error(), "LABELSYNC_SECRET_KEY") {
			t.Errorf("%s: Credentials(nil) error = %v, want one naming LABELSYNC_SECRET_KEY", name, err)
		}
		if _, err := s.Credentials(testBox(t, 2)); !errors.Is(err, secrets.ErrOpen) {
			t.Errorf("%s: Credentials(wrong key) error = %v, want secrets.ErrOpen", name, err)
		}
	}
	if imp.GoogleApplicationCredentials != "" || exp.GoogleApplicationCredentials != "" {
		t.Error("plaintext credentials were kept in the exported field")
	}

	// Write-only: neither JSON nor logs carry them.
	out, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("storages", "import", *imp, "export", exp)
	for what, b := range map[string][]byte{"json": out, "log": logs.Bytes()} {
		if bytes.Contains(b, []byte("TOPSECRET")) || bytes.Contains(b, []byte("google_application_credentials")) || bytes.Contains(b, []byte("v1:")) {
			t.Errorf("%s output carries credentials: %s", what, b)
		}
	}
	if !bytes.Contains(logs.Bytes(), []byte(`"has_credentials":true`)) {
		t.Errorf("log output %s should say the storage has credentials", logs.Bytes())
	}

	// The sealed form survives a store-and-restore through JSON.
	var back Import
	if err := json.Unmarshal(out[bytes.Index(out, []byte(`{"id"`)):bytes.Index(out, []byte(`}]`))+1], &back); err != nil {
		t.Fatal(err)
	}
	back.SetSealedCredentials(imp.SealedCredentials())
	if got, err := back.Credentials(box); err != nil || string(got) != fakeCreds {
		t.Errorf("restored Credentials = %q, %v; want the original JSON", got, err)
	}
}

func TestCredentialsAPIFlow(t *testing.T) {
	t.Parallel()
	box := testBox(t, 1)
	s := Import{Project: 1, Bucket: "acme", GoogleApplicationCredentials: fakeCreds}
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Credentials(box); err == nil {
		t.Error("Credentials before SealCredentials succeeded; want an error that points at the missing seal")
	}
	if err := s.SealCredentials(nil); !errors.Is(err, ErrNoSecretKey) {
		t.Errorf("SealCredentials(nil) error = %v, want ErrNoSecretKey", err)
	}
	if err := s.SealCredentials(box); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Credentials(box); err != nil || string(got) != fakeCreds {
		t.Errorf("Credentials = %q, %v; want the original JSON", got, err)
	}
	var none Import
	if got, err := none.Credentials(box); got != nil || err != nil || none.HasCredentials() {
		t.Errorf("storage without credentials: Credentials = %q, %v; want nil, nil", got, err)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "storages.yaml")
	if err := os.WriteFile(good, []byte(specYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(good, ParseOptions{})
	if err != nil || len(f.Import) != 1 || len(f.Export) != 1 {
		t.Errorf("Load = %+v, %v; want the spec example", f, err)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"import":[{"id":1,"project":1}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad, ParseOptions{})
	if want := "storages: " + bad + ": import[0] (id 1): bucket: required"; err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#"), MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, ParseOptions{}); err == nil || !strings.Contains(err.Error(), big) || !strings.Contains(err.Error(), "16 MiB") {
		t.Errorf("Load of an oversized file: error = %v, want one naming the path and the limit", err)
	}

	missing := filepath.Join(dir, "missing.json")
	if _, err := Load(missing, ParseOptions{}); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load of a missing file: error = %v, want ErrNotExist naming the path", err)
	}
}
