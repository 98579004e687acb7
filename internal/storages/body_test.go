package storages

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Credentials of each accepted type, complete enough for CredentialType.
const (
	saCreds = `{"type": "service_account", "project_id": "acme", "client_email": "sync@acme.iam.gserviceaccount.com",
  "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n", "token_uri": "https://oauth2.googleapis.com/token"}`
	extCreds = `{"type": "external_account", "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
  "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_url": "https://sts.googleapis.com/v1/token",
  "credential_source": {"file": "/var/run/token"}}`
	impCreds = `{"type": "impersonated_service_account",
  "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/x@acme.iam.gserviceaccount.com:generateAccessToken",
  "source_credentials": {"type": "authorized_user", "client_id": "1", "client_secret": "s", "refresh_token": "r"}}`
)

// jsonStr quotes s as a JSON string.
func jsonStr(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// newImport is the storage a create body {"project": 7, "bucket": "acme"}
// gives, changed by edit.
func newImport(edit func(*Import)) Import {
	s := Import{Project: 7, Bucket: "acme", Presign: ptr(true), PresignTTL: DefaultPresignTTL, DataKey: DefaultDataKey}
	if edit != nil {
		edit(&s)
	}
	return s
}

func newExport(edit func(*Export)) Export {
	s := Export{Project: 7, Bucket: "acme", ObjectKey: DefaultObjectKey}
	if edit != nil {
		edit(&s)
	}
	return s
}

// fields builds BodyError.Fields from field, message pairs.
func fields(kv ...string) map[string][]string {
	m := map[string][]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = append(m[kv[i]], kv[i+1])
	}
	return m
}

func validationError(kv ...string) *BodyError {
	return &BodyError{Detail: "Validation error", Fields: fields(kv...)}
}

// checkBodyResult compares a decode result with want or wantErr.
func checkBodyResult[T any](t *testing.T, got T, err error, want T, wantErr *BodyError) {
	t.Helper()
	if wantErr != nil {
		var be *BodyError
		if !errors.As(err, &be) {
			t.Fatalf("error = %v (%T), want *BodyError %v", err, err, wantErr)
		}
		if diff := cmp.Diff(wantErr, be, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("BodyError (-want +got):\n%s", diff)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if diff := cmp.Diff(want, got, ignoreUnexported); diff != "" {
		t.Fatalf("storage (-want +got):\n%s", diff)
	}
}

const (
	regexMsg       = "error parsing regexp: missing closing ): `(`"
	wrongTypeMsg   = "Google Application Credentials of type authorized_user are not accepted; accepted types: service_account, external_account or impersonated_service_account"
	unknownTypeMsg = "Google Application Credentials of an unknown type are not accepted; accepted types: service_account, external_account or impersonated_service_account"
)

func TestDecodeImportCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    Import
		wantErr *BodyError
	}{
		{
			name: "SPEC example",
			body: `{"id": 1, "project": 7, "title": "raw images", "bucket": "acme-raw",
				"prefix": "incoming", "regex_filter": ".*\\.(jpe?g|png)$",
				"use_blob_urls": true, "recursive_scan": true,
				"presign": true, "presign_ttl": 15,
				"google_application_credentials": "", "google_project_id": "acme"}`,
			want: Import{
				ID: 1, Project: 7, Title: "raw images", Bucket: "acme-raw", Prefix: "incoming",
				RegexFilter: `.*\.(jpe?g|png)$`, UseBlobURLs: true, RecursiveScan: true,
				Presign: ptr(true), PresignTTL: 15, GoogleProjectID: "acme", DataKey: DefaultDataKey,
			},
		},
		{name: "defaults", body: `{"project": 7, "bucket": "acme"}`, want: newImport(nil)},
		{
			name: "numbers as strings",
			body: `{"id": "3", "project": "7", "bucket": "acme", "presign_ttl": "60"}`,
			want: newImport(func(s *Import) { s.ID, s.PresignTTL = 3, 60 }),
		},
		{
			name: "numeric strings with spaces and a zero fraction",
			body: `{"id": " 3 ", "project": "7.0", "bucket": "acme", "presign_ttl": "60.00"}`,
			want: newImport(func(s *Import) { s.ID, s.PresignTTL = 3, 60 }),
		},
		{
			name: "integral numbers in float form",
			body: `{"id": 3.0, "project": 7e0, "bucket": "acme", "presign_ttl": 6e1}`,
			want: newImport(func(s *Import) { s.ID, s.PresignTTL = 3, 60 }),
		},
		{
			name: "presign_ttl limits",
			body: `{"project": 7, "bucket": "acme", "presign_ttl": 10080}`,
			want: newImport(func(s *Import) { s.PresignTTL = MaxPresignTTL }),
		},
		{
			name: "presign_ttl 1",
			body: `{"project": 7, "bucket": "acme", "presign_ttl": 1}`,
			want: newImport(func(s *Import) { s.PresignTTL = 1 }),
		},
		{
			name: "booleans as strings",
			body: `{"project": 7, "bucket": "acme", "use_blob_urls": "true", "recursive_scan": "True", "presign": "false"}`,
			want: newImport(func(s *Import) { s.UseBlobURLs, s.RecursiveScan, s.Presign = true, true, ptr(false) }),
		},
		{
			name: "booleans as numbers and yes/no",
			body: `{"project": 7, "bucket": "acme", "use_blob_urls": 1, "recursive_scan": "yes", "presign": 0}`,
			want: newImport(func(s *Import) { s.UseBlobURLs, s.RecursiveScan, s.Presign = true, true, ptr(false) }),
		},
		{
			name: "recursive_scan null is false",
			body: `{"project": 7, "bucket": "acme", "recursive_scan": null}`,
			want: newImport(nil),
		},
		{
			name: "server fields are ignored",
			body: `{"project": 7, "bucket": "acme", "type": "gcs", "status": "completed",
				"last_sync": "2026-01-02T03:04:05Z", "last_sync_count": 3, "last_sync_job": "j1",
				"traceback": null, "meta": {"attempts": 1}, "created_at": "2026-01-01T00:00:00Z",
				"synchronizable": false}`,
			want: newImport(nil),
		},
		{
			name: "id on create is decoded",
			body: `{"id": 12, "project": 7, "bucket": "acme"}`,
			want: newImport(func(s *Import) { s.ID = 12 }),
		},
		{name: "id 0 is no id", body: `{"id": 0, "project": 7, "bucket": "acme"}`, want: newImport(nil)},
		{name: "id null is no id", body: `{"id": null, "project": 7, "bucket": "acme"}`, want: newImport(nil)},
		{
			name: "strings are trimmed",
			body: `{"project": 7, "bucket": " acme ", "prefix": " incoming/ ", "title": "  raw  ", "regex_filter": " a.* "}`,
			want: newImport(func(s *Import) { s.Prefix, s.Title, s.RegexFilter = "incoming/", "raw", "a.*" }),
		},
		{
			name: "data_key is ours and kept as given",
			body: `{"project": 7, "bucket": "acme", "data_key": " image "}`,
			want: newImport(func(s *Import) { s.DataKey = " image " }),
		},
		{
			name: "null strings are empty",
			body: `{"project": 7, "bucket": "acme", "title": null, "description": null, "prefix": null,
				"regex_filter": null, "google_project_id": null, "data_key": null, "google_application_credentials": null}`,
			want: newImport(nil),
		},
		{
			name: "numbers are text in string fields",
			body: `{"project": 7, "bucket": "acme", "title": 42, "google_project_id": 1234}`,
			want: newImport(func(s *Import) { s.Title, s.GoogleProjectID = "42", "1234" }),
		},
		{name: "empty prefix", body: `{"project": 7, "bucket": "acme", "prefix": ""}`, want: newImport(nil)},
		{
			name: "service_account credentials",
			body: `{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(" "+saCreds+"\n") + `}`,
			want: newImport(func(s *Import) { s.GoogleApplicationCredentials = saCreds }),
		},
		{
			name: "external_account credentials",
			body: `{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(extCreds) + `}`,
			want: newImport(func(s *Import) { s.GoogleApplicationCredentials = extCreds }),
		},
		{
			name: "impersonated_service_account credentials",
			body: `{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(impCreds) + `}`,
			want: newImport(func(s *Import) { s.GoogleApplicationCredentials = impCreds }),
		},
		{
			name: "blank credentials mean Application Default Credentials",
			body: `{"project": 7, "bucket": "acme", "google_application_credentials": "  \n"}`,
			want: newImport(nil),
		},

		// Errors.
		{
			name:    "unknown fields, sorted",
			body:    `{"project": 7, "bucket": "acme", "zeta": 1, "alpha": 2, "can_delete_objects": true, "object_key": "{task_id}.json"}`,
			wantErr: &BodyError{Detail: "unknown field(s): alpha, can_delete_objects, object_key, zeta"},
		},
		{
			name:    "unknown field names kept on one line",
			body:    `{"project": 7, "bucket": "acme", "a b\nc": 1, "": 2}`,
			wantErr: &BodyError{Detail: `unknown field(s): "", "a b\nc"`},
		},
		{
			name:    "unknown fields and field errors together",
			body:    `{"project": 7, "bucket": "acme", "presign_ttl": 0, "foo": 1}`,
			wantErr: &BodyError{Detail: "unknown field(s): foo", Fields: fields("presign_ttl", "Ensure this value is greater than or equal to 1.")},
		},
		{name: "empty object", body: `{}`, wantErr: validationError("project", msgRequired, "bucket", msgRequired)},
		{name: "empty body", body: ``, wantErr: validationError("project", msgRequired, "bucket", msgRequired)},
		{name: "missing bucket", body: `{"project": 7}`, wantErr: validationError("bucket", msgRequired)},
		{name: "missing project", body: `{"bucket": "acme"}`, wantErr: validationError("project", msgRequired)},
		{
			name:    "presign_ttl 0",
			body:    `{"project": 7, "bucket": "acme", "presign_ttl": 0}`,
			wantErr: validationError("presign_ttl", "Ensure this value is greater than or equal to 1."),
		},
		{
			name:    "presign_ttl \"0\"",
			body:    `{"project": 7, "bucket": "acme", "presign_ttl": "0"}`,
			wantErr: validationError("presign_ttl", "Ensure this value is greater than or equal to 1."),
		},
		{
			name:    "presign_ttl over a week",
			body:    `{"project": 7, "bucket": "acme", "presign_ttl": 10081}`,
			wantErr: validationError("presign_ttl", "Ensure this value is less than or equal to 10080."),
		},
		{
			name:    "presign_ttl negative",
			body:    `{"project": 7, "bucket": "acme", "presign_ttl": -5}`,
			wantErr: validationError("presign_ttl", "Ensure this value is greater than or equal to 1."),
		},
		{name: "presign_ttl null", body: `{"project": 7, "bucket": "acme", "presign_ttl": null}`, wantErr: validationError("presign_ttl", msgNull)},
		{name: "presign_ttl text", body: `{"project": 7, "bucket": "acme", "presign_ttl": "15m"}`, wantErr: validationError("presign_ttl", msgInteger)},
		{name: "bad regex", body: `{"project": 7, "bucket": "acme", "regex_filter": "("}`, wantErr: validationError("regex_filter", regexMsg)},
		{
			name: "every invalid field at once",
			body: `{"project": "x", "bucket": "gs://acme", "regex_filter": "(", "presign_ttl": 0, "data_key": " ",
				"use_blob_urls": "maybe", "google_application_credentials": "/path/key.json"}`,
			wantErr: validationError(
				"project", msgInteger,
				"bucket", "must be a bucket name, not a gs:// URL",
				"regex_filter", regexMsg,
				"presign_ttl", "Ensure this value is greater than or equal to 1.",
				"data_key", "must not be blank",
				"use_blob_urls", msgBoolean,
				"google_application_credentials", msgCredentialsJSON,
			),
		},
		{name: "project boolean", body: `{"project": true, "bucket": "acme"}`, wantErr: validationError("project", msgInteger)},
		{name: "project fraction", body: `{"project": 7.5, "bucket": "acme"}`, wantErr: validationError("project", msgInteger)},
		{name: "project fraction string", body: `{"project": "7.5", "bucket": "acme"}`, wantErr: validationError("project", msgInteger)},
		{name: "project object", body: `{"project": {"id": 7}, "bucket": "acme"}`, wantErr: validationError("project", msgInteger)},
		{name: "project null", body: `{"project": null, "bucket": "acme"}`, wantErr: validationError("project", msgNull)},
		{name: "project huge", body: `{"project": 1e300, "bucket": "acme"}`, wantErr: validationError("project", msgInteger)},
		{
			name:    "project 0",
			body:    `{"project": 0, "bucket": "acme"}`,
			wantErr: validationError("project", "required, the id of a labeling project"),
		},
		{name: "project negative", body: `{"project": "-1", "bucket": "acme"}`, wantErr: validationError("project", "must be positive")},
		{name: "id negative", body: `{"id": -1, "project": 7, "bucket": "acme"}`, wantErr: validationError("id", "must be positive")},
		{name: "id text", body: `{"id": "one", "project": 7, "bucket": "acme"}`, wantErr: validationError("id", msgInteger)},
		{name: "boolean text", body: `{"project": 7, "bucket": "acme", "use_blob_urls": "maybe"}`, wantErr: validationError("use_blob_urls", msgBoolean)},
		{name: "boolean 2", body: `{"project": 7, "bucket": "acme", "recursive_scan": 2}`, wantErr: validationError("recursive_scan", msgBoolean)},
		{name: "boolean list", body: `{"project": 7, "bucket": "acme", "presign": [true]}`, wantErr: validationError("presign", msgBoolean)},
		{name: "presign null", body: `{"project": 7, "bucket": "acme", "presign": null}`, wantErr: validationError("presign", msgNull)},
		{name: "use_blob_urls null", body: `{"project": 7, "bucket": "acme", "use_blob_urls": null}`, wantErr: validationError("use_blob_urls", msgNull)},
		{name: "use_blob_urls empty string", body: `{"project": 7, "bucket": "acme", "use_blob_urls": ""}`, wantErr: validationError("use_blob_urls", msgBoolean)},
		{name: "string boolean", body: `{"project": 7, "bucket": "acme", "title": true}`, wantErr: validationError("title", msgString)},
		{name: "string object", body: `{"project": 7, "bucket": {"name": "acme"}}`, wantErr: validationError("bucket", msgString)},
		{name: "bucket null", body: `{"project": 7, "bucket": null}`, wantErr: validationError("bucket", msgNull)},
		{name: "bucket empty", body: `{"project": 7, "bucket": ""}`, wantErr: validationError("bucket", msgBlank)},
		{name: "bucket blank", body: `{"project": 7, "bucket": "   "}`, wantErr: validationError("bucket", msgBlank)},
		{
			name:    "title too long",
			body:    `{"project": 7, "bucket": "acme", "title": "` + strings.Repeat("é", MaxTitleLength+1) + `"}`,
			wantErr: validationError("title", "Ensure this field has no more than 256 characters."),
		},
		{name: "null character", body: `{"project": 7, "bucket": "acme", "prefix": "a\u0000b"}`, wantErr: validationError("prefix", msgNullChars)},
		{
			name:    "credentials not JSON",
			body:    `{"project": 7, "bucket": "acme", "google_application_credentials": "/secrets/key.json"}`,
			wantErr: validationError("google_application_credentials", "Google Application Credentials must be valid JSON string"),
		},
		{
			name:    "credentials of another type",
			body:    `{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(`{"type": "authorized_user"}`) + `}`,
			wantErr: validationError("google_application_credentials", wrongTypeMsg),
		},
		{
			name:    "credentials missing fields",
			body:    `{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(`{"type": "service_account", "client_email": ""}`) + `}`,
			wantErr: validationError("google_application_credentials", "Google Application Credentials of type service_account lack client_email, private_key"),
		},
		{
			name:    "credentials as an object, not a string",
			body:    `{"project": 7, "bucket": "acme", "google_application_credentials": ` + saCreds + `}`,
			wantErr: validationError("google_application_credentials", msgString),
		},
		{
			name:    "body is a list",
			body:    `[{"project": 7, "bucket": "acme"}]`,
			wantErr: validationError("non_field_errors", "Invalid data. Expected a dictionary, but got list."),
		},
		{
			name:    "body is null",
			body:    `null`,
			wantErr: validationError("non_field_errors", "Invalid data. Expected a dictionary, but got null."),
		},
		{
			name:    "body is not JSON",
			body:    `{"project": 7,`,
			wantErr: &BodyError{Detail: "JSON parse error - invalid JSON at byte 14"},
		},
		{
			name:    "only non-JSON whitespace",
			body:    "\u00a0",
			wantErr: &BodyError{Detail: "JSON parse error - invalid JSON at byte 1"},
		},
		{
			name:    "trailing data",
			body:    `{"project": 7, "bucket": "acme"} {}`,
			wantErr: &BodyError{Detail: "JSON parse error - invalid JSON at byte 34"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeImport([]byte(tt.body), nil)
			checkBodyResult(t, got, err, tt.want, tt.wantErr)
			if err == nil {
				if err := got.Normalize(); err != nil {
					t.Fatalf("result does not pass Normalize: %v", err)
				}
			}
		})
	}
}

func TestDecodeExportCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		want    Export
		wantErr *BodyError
	}{
		{
			name: "SPEC example",
			body: `{"id": 2, "project": 7, "title": "labels", "bucket": "acme-labels", "prefix": "annotations", "can_delete_objects": true}`,
			want: Export{ID: 2, Project: 7, Title: "labels", Bucket: "acme-labels", Prefix: "annotations", CanDeleteObjects: true, ObjectKey: DefaultObjectKey},
		},
		{name: "defaults", body: `{"project": 7, "bucket": "acme"}`, want: newExport(nil)},
		{
			name: "numbers as strings",
			body: `{"id": "2", "project": " 7 ", "bucket": "acme"}`,
			want: newExport(func(s *Export) { s.ID = 2 }),
		},
		{
			name: "can_delete_objects as a string",
			body: `{"project": 7, "bucket": "acme", "can_delete_objects": "true"}`,
			want: newExport(func(s *Export) { s.CanDeleteObjects = true }),
		},
		{name: "can_delete_objects null", body: `{"project": 7, "bucket": "acme", "can_delete_objects": null}`, want: newExport(nil)},
		{name: "can_delete_objects empty string", body: `{"project": 7, "bucket": "acme", "can_delete_objects": ""}`, want: newExport(nil)},
		{
			name: "object_key annotation json",
			body: `{"project": 7, "bucket": "acme", "object_key": "{annotation_id}.json"}`,
			want: newExport(func(s *Export) { s.ObjectKey = AnnotationJSONObjectKey }),
		},
		{
			name: "object_key task",
			body: `{"project": 7, "bucket": "acme", "object_key": "{task_id}.json"}`,
			want: newExport(func(s *Export) { s.ObjectKey = TaskObjectKey }),
		},
		{
			name: "Label Studio's unused export fields and server fields are ignored",
			body: `{"project": 7, "bucket": "acme", "regex_filter": "(", "use_blob_urls": "x", "type": "gcs",
				"status": "initialized", "last_sync": null, "last_sync_count": null, "last_sync_job": null,
				"traceback": null, "meta": {}, "created_at": "2026-01-01T00:00:00Z", "synchronizable": true}`,
			want: newExport(nil),
		},
		{
			name: "credentials",
			body: `{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(saCreds) + `}`,
			want: newExport(func(s *Export) { s.GoogleApplicationCredentials = saCreds }),
		},
		{name: "empty prefix", body: `{"project": 7, "bucket": "acme", "prefix": ""}`, want: newExport(nil)},

		// Errors.
		{
			name:    "import fields are unknown",
			body:    `{"project": 7, "bucket": "acme", "presign": true, "presign_ttl": 15, "recursive_scan": true, "data_key": "x"}`,
			wantErr: &BodyError{Detail: "unknown field(s): data_key, presign, presign_ttl, recursive_scan"},
		},
		{name: "missing project and bucket", body: `{"title": "x"}`, wantErr: validationError("project", msgRequired, "bucket", msgRequired)},
		{
			name:    "bad object_key",
			body:    `{"project": 7, "bucket": "acme", "object_key": "{id}.json"}`,
			wantErr: validationError("object_key", `must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`),
		},
		{
			name: "every invalid field at once",
			body: `{"project": -7, "bucket": "Acme", "object_key": "x", "can_delete_objects": "perhaps",
				"google_application_credentials": ` + jsonStr(`{"type": "user"}`) + `}`,
			wantErr: validationError(
				"project", "must be positive",
				"bucket", "must be 3 to 222 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
				"object_key", `must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`,
				"can_delete_objects", msgBoolean,
				"google_application_credentials", unknownTypeMsg,
			),
		},
		{name: "project as text", body: `{"project": "seven", "bucket": "acme"}`, wantErr: validationError("project", msgInteger)},
		{
			name:    "credentials not JSON",
			body:    `{"project": 7, "bucket": "acme", "google_application_credentials": "{not json"}`,
			wantErr: validationError("google_application_credentials", msgCredentialsJSON),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeExport([]byte(tt.body), nil)
			checkBodyResult(t, got, err, tt.want, tt.wantErr)
			if err == nil {
				if err := got.Normalize(); err != nil {
					t.Fatalf("result does not pass Normalize: %v", err)
				}
			}
		})
	}
}

// patchBases returns a stored import and export storage, credentials sealed.
func patchBases(t testing.TB) (Import, Export) {
	t.Helper()
	box := testBox(t, 9)
	imp := Import{
		ID: 4, Project: 7, Title: "raw", Description: "camera uploads", Bucket: "acme", Prefix: "incoming",
		RegexFilter: `.*\.jpg$`, UseBlobURLs: true, RecursiveScan: true, Presign: ptr(true), PresignTTL: 30,
		GoogleApplicationCredentials: saCreds, GoogleProjectID: "acme", DataKey: "image",
	}
	exp := Export{
		ID: 5, Project: 7, Title: "labels", Bucket: "acme-labels", Prefix: "annotations",
		GoogleApplicationCredentials: saCreds, CanDeleteObjects: true, ObjectKey: TaskObjectKey,
	}
	if err := imp.Normalize(); err != nil {
		t.Fatal(err)
	}
	if err := exp.Normalize(); err != nil {
		t.Fatal(err)
	}
	if err := imp.SealCredentials(box); err != nil {
		t.Fatal(err)
	}
	if err := exp.SealCredentials(box); err != nil {
		t.Fatal(err)
	}
	return imp, exp
}

// Which credentials a PATCH result should hold.
const (
	keepSealed = iota // the base's sealed credentials
	plainNew          // the body's, in plaintext
	noCreds           // none: Application Default Credentials
)

func TestDecodeImportPatch(t *testing.T) {
	t.Parallel()
	base, _ := patchBases(t)
	tests := []struct {
		name      string
		body      string
		edit      func(*Import) // applied to a copy of base
		creds     int
		wantPlain string
		wantErr   *BodyError
	}{
		{name: "empty body changes nothing", body: ``},
		{name: "empty object changes nothing", body: `{}`},
		{name: "only the named field changes", body: `{"title": "raw images"}`, edit: func(s *Import) { s.Title = "raw images" }},
		{name: "empty prefix is accepted", body: `{"prefix": ""}`, edit: func(s *Import) { s.Prefix = "" }},
		{name: "null regex_filter clears it", body: `{"regex_filter": null}`, edit: func(s *Import) { s.RegexFilter = "" }},
		{name: "id is ignored", body: `{"id": 99, "project": "8"}`, edit: func(s *Import) { s.Project = 8 }},
		{name: "id of any form is ignored", body: `{"id": "not a number"}`},
		{name: "presign off", body: `{"presign": "false"}`, edit: func(s *Import) { s.Presign = ptr(false) }},
		{name: "presign_ttl", body: `{"presign_ttl": "120"}`, edit: func(s *Import) { s.PresignTTL = 120 }},
		{name: "data_key empty is the default", body: `{"data_key": ""}`, edit: func(s *Import) { s.DataKey = DefaultDataKey }},
		{
			name: "server fields are ignored",
			body: `{"id": 4, "type": "gcs", "status": "failed", "last_sync_count": 3, "traceback": "boom", "meta": {"a": 1}}`,
		},
		{name: "absent credentials are kept", body: `{"bucket": "acme2"}`, edit: func(s *Import) { s.Bucket = "acme2" }},
		{name: "empty credentials are kept", body: `{"google_application_credentials": ""}`},
		{name: "blank credentials are kept", body: `{"google_application_credentials": " \n "}`},
		{
			name:      "new credentials replace the sealed ones",
			body:      `{"google_application_credentials": ` + jsonStr(extCreds) + `}`,
			edit:      func(s *Import) { s.GoogleApplicationCredentials = extCreds },
			creds:     plainNew,
			wantPlain: extCreds,
		},
		{name: "null credentials remove them", body: `{"google_application_credentials": null}`, creds: noCreds},

		// Errors.
		{name: "presign_ttl 0", body: `{"presign_ttl": 0}`, wantErr: validationError("presign_ttl", "Ensure this value is greater than or equal to 1.")},
		{name: "bucket emptied", body: `{"bucket": ""}`, wantErr: validationError("bucket", msgBlank)},
		{name: "project null", body: `{"project": null}`, wantErr: validationError("project", msgNull)},
		{name: "bad regex", body: `{"regex_filter": "("}`, wantErr: validationError("regex_filter", regexMsg)},
		{name: "unknown field", body: `{"title": "x", "export_type": "task"}`, wantErr: &BodyError{Detail: "unknown field(s): export_type"}},
		{
			name:    "bad credentials",
			body:    `{"google_application_credentials": ` + jsonStr(`{"type": "external_account", "audience": "a"}`) + `}`,
			wantErr: validationError("google_application_credentials", "Google Application Credentials of type external_account lack subject_token_type, credential_source"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := base // this subtest's own copy; the Presign pointer stays shared
			got, err := DecodeImport([]byte(tt.body), &b)
			want := base
			want.Presign = ptr(*base.Presign)
			if tt.edit != nil {
				tt.edit(&want)
			}
			checkBodyResult(t, got, err, want, tt.wantErr)
			if diff := cmp.Diff(base, b, cmp.AllowUnexported(Import{}), cmpopts.IgnoreFields(Import{}, "m")); diff != "" {
				t.Fatalf("base changed (-before +after):\n%s", diff)
			}
			if *b.Presign != *base.Presign {
				t.Fatalf("base presign changed")
			}
			if err != nil {
				return
			}
			checkPatchedCredentials(t, got.GoogleApplicationCredentials, got.SealedCredentials(), base.SealedCredentials(), tt.creds, tt.wantPlain)
		})
	}
}

func TestDecodeExportPatch(t *testing.T) {
	t.Parallel()
	_, base := patchBases(t)
	tests := []struct {
		name      string
		body      string
		edit      func(*Export)
		creds     int
		wantPlain string
		wantErr   *BodyError
	}{
		{name: "empty object changes nothing", body: `{}`},
		{name: "only the named field changes", body: `{"can_delete_objects": false}`, edit: func(s *Export) { s.CanDeleteObjects = false }},
		{name: "empty prefix is accepted", body: `{"prefix": ""}`, edit: func(s *Export) { s.Prefix = "" }},
		{name: "object_key empty is the default", body: `{"object_key": ""}`, edit: func(s *Export) { s.ObjectKey = DefaultObjectKey }},
		{name: "id is ignored", body: `{"id": 99, "title": "t"}`, edit: func(s *Export) { s.Title = "t" }},
		{name: "empty credentials are kept", body: `{"google_application_credentials": "", "title": "t"}`, edit: func(s *Export) { s.Title = "t" }},
		{
			name:      "new credentials replace the sealed ones",
			body:      `{"google_application_credentials": ` + jsonStr(impCreds) + `}`,
			edit:      func(s *Export) { s.GoogleApplicationCredentials = impCreds },
			creds:     plainNew,
			wantPlain: impCreds,
		},
		{name: "null credentials remove them", body: `{"google_application_credentials": null}`, creds: noCreds},
		{name: "bad object_key", body: `{"object_key": "{task}"}`, wantErr: validationError("object_key", `must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`)},
		{name: "import field", body: `{"presign_ttl": 5}`, wantErr: &BodyError{Detail: "unknown field(s): presign_ttl"}},
		{name: "bad credentials", body: `{"google_application_credentials": "[]"}`, wantErr: validationError("google_application_credentials", "Google Application Credentials must be a JSON object: the content of a credentials file")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := base
			got, err := DecodeExport([]byte(tt.body), &b)
			want := base
			if tt.edit != nil {
				tt.edit(&want)
			}
			checkBodyResult(t, got, err, want, tt.wantErr)
			if diff := cmp.Diff(base, b, cmp.AllowUnexported(Export{})); diff != "" {
				t.Fatalf("base changed (-before +after):\n%s", diff)
			}
			if err != nil {
				return
			}
			checkPatchedCredentials(t, got.GoogleApplicationCredentials, got.SealedCredentials(), base.SealedCredentials(), tt.creds, tt.wantPlain)
		})
	}
}

func checkPatchedCredentials(t *testing.T, plain, sealed, baseSealed string, want int, wantPlain string) {
	t.Helper()
	if baseSealed == "" {
		t.Fatal("test base has no sealed credentials")
	}
	switch want {
	case keepSealed:
		if plain != "" || sealed != baseSealed {
			t.Fatalf("credentials: plaintext %t, sealed kept %t; want the base's sealed ones only", plain != "", sealed == baseSealed)
		}
	case plainNew:
		if plain != wantPlain || sealed != "" {
			t.Fatalf("credentials: new plaintext %t, sealed %t; want the new plaintext only", plain == wantPlain, sealed != "")
		}
	case noCreds:
		if plain != "" || sealed != "" {
			t.Fatalf("credentials: plaintext %t, sealed %t; want none", plain != "", sealed != "")
		}
	}
}

// The credentials must never show in an error, whatever is wrong with them.
func TestBodyErrorsHideCredentials(t *testing.T) {
	t.Parallel()
	const marker = "Zq9-SECRET-MARKER-4711"
	blobs := map[string]string{
		"not JSON":                 marker,
		"truncated JSON":           `{"type": "service_account", "private_key": "` + marker,
		"bad JSON character":       `{"type": "service_account", "private_key": ` + marker + `}`,
		"JSON string":              `"` + marker + `"`,
		"JSON list":                `["` + marker + `"]`,
		"JSON number":              `4711`,
		"unknown type":             `{"type": "` + marker + `"}`,
		"type not a string":        `{"type": ["` + marker + `"]}`,
		"other Google type":        `{"type": "authorized_user", "refresh_token": "` + marker + `"}`,
		"no type":                  `{"private_key": "` + marker + `"}`,
		"service_account lacks":    `{"type": "service_account", "private_key": "` + marker + `"}`,
		"external_account lacks":   `{"type": "external_account", "audience": "` + marker + `", "credential_source": "` + marker + `"}`,
		"impersonated lacks":       `{"type": "impersonated_service_account", "source_credentials": "` + marker + `"}`,
		"private_key not a string": `{"type": "service_account", "client_email": "a@b", "private_key": {"k": "` + marker + `"}}`,
	}
	bodies := map[string]string{
		"unterminated string":     `{"project": 7, "bucket": "acme", "google_application_credentials": "` + marker,
		"bare value":              `{"project": 7, "bucket": "acme", "google_application_credentials": ` + marker + `}`,
		"object value":            `{"project": 7, "bucket": "acme", "google_application_credentials": {"private_key": "` + marker + `"}}`,
		"list value":              `{"project": 7, "bucket": "acme", "google_application_credentials": ["` + marker + `"]}`,
		"misspelt field":          `{"project": 7, "bucket": "acme", "google_application_credential": "` + marker + `"}`,
		"credentials as a number": `{"project": 7, "bucket": "acme", "google_application_credentials": 4711, "x": "` + marker + `"}`,
	}
	for name, blob := range blobs {
		bodies[name] = `{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(blob) + `}`
		if _, err := CredentialType(blob); err == nil || strings.Contains(err.Error(), marker) {
			t.Errorf("%s: CredentialType error = %v; want one without the credentials", name, err)
		}
	}
	imp, exp := patchBases(t)
	decoders := map[string]func([]byte) error{
		"import create": func(b []byte) error { _, err := DecodeImport(b, nil); return err },
		"import patch":  func(b []byte) error { _, err := DecodeImport(b, &imp); return err },
		"export create": func(b []byte) error { _, err := DecodeExport(b, nil); return err },
		"export patch":  func(b []byte) error { _, err := DecodeExport(b, &exp); return err },
	}
	for name, body := range bodies {
		for dname, decode := range decoders {
			t.Run(name+"/"+dname, func(t *testing.T) {
				t.Parallel()
				err := decode([]byte(body))
				var be *BodyError
				if !errors.As(err, &be) {
					t.Fatalf("error = %v (%T), want a *BodyError", err, err)
				}
				texts := []string{be.Error(), be.Detail}
				for f, msgs := range be.Fields {
					texts = append(texts, f)
					texts = append(texts, msgs...)
				}
				for _, s := range texts {
					if strings.Contains(s, marker) {
						t.Fatalf("error text %q contains the credentials", s)
					}
				}
			})
		}
	}
}

func TestCredentialType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		creds   string
		want    string
		wantErr string
	}{
		{creds: "", want: ""},
		{creds: " \n\t", want: ""},
		{creds: saCreds, want: ServiceAccount},
		{creds: "\n" + extCreds + "\n", want: ExternalAccount},
		{creds: impCreds, want: ImpersonatedServiceAccount},
		{creds: "/var/secrets/key.json", wantErr: "Google Application Credentials must be valid JSON string"},
		{creds: `{"type": "service_account",}`, wantErr: "Google Application Credentials must be valid JSON string"},
		{creds: `"{}"`, wantErr: "Google Application Credentials must be a JSON object: the content of a credentials file"},
		{creds: `{}`, wantErr: `Google Application Credentials have no "type"; accepted types: service_account, external_account or impersonated_service_account`},
		{creds: `{"type": ""}`, wantErr: `Google Application Credentials have no "type"; accepted types: service_account, external_account or impersonated_service_account`},
		{creds: `{"type": "authorized_user"}`, wantErr: wrongTypeMsg},
		{creds: `{"type": "Service_Account"}`, wantErr: unknownTypeMsg},
		{creds: `{"type": "service_account", "client_email": "a@b"}`, wantErr: "Google Application Credentials of type service_account lack private_key"},
		{creds: `{"type": "service_account", "client_email": 5, "private_key": "k"}`, wantErr: "Google Application Credentials of type service_account lack client_email"},
		{
			creds:   `{"type": "external_account", "audience": "a", "subject_token_type": "t", "credential_source": "file"}`,
			wantErr: "Google Application Credentials of type external_account lack credential_source",
		},
		{
			creds:   `{"type": "impersonated_service_account", "source_credentials": {}}`,
			wantErr: "Google Application Credentials of type impersonated_service_account lack service_account_impersonation_url",
		},
	}
	for _, tt := range tests {
		got, err := CredentialType(tt.creds)
		if tt.wantErr != "" {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "google_application_credentials" || fe.Err.Error() != tt.wantErr {
				t.Errorf("CredentialType(%.40q) error = %v; want a FieldError on google_application_credentials: %s", tt.creds, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CredentialType(%.40q) = %q, %v; want %q, nil", tt.creds, got, err, tt.want)
		}
	}
}

func TestBodyErrorError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *BodyError
		want string
	}{
		{&BodyError{Detail: "unknown field(s): a, b"}, "storages: unknown field(s): a, b"},
		{
			validationError("project", msgRequired, "bucket", msgRequired, "bucket", "second"),
			"storages: Validation error; bucket: This field is required.; bucket: second; project: This field is required.",
		},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// A decoded storage marshals to a body that decodes to the same storage,
// as the API's answer to a create can be sent back as a PATCH or create.
func TestDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	imp, exp := patchBases(t)
	bodies := []string{
		`{"id": "1", "project": "7", "title": " raw ", "bucket": "acme", "prefix": "a/", "regex_filter": "x|y",
			"use_blob_urls": "1", "recursive_scan": "on", "presign": "f", "presign_ttl": "90.0", "data_key": "img",
			"google_application_credentials": ` + jsonStr(saCreds) + `}`,
		`{"project": 7, "bucket": "acme", "title": 12, "description": "<b>&</b>\u2028"}`,
	}
	for _, body := range bodies {
		got, err := DecodeImport([]byte(body), nil)
		if err != nil {
			t.Fatalf("DecodeImport(%s): %v", body, err)
		}
		checkRoundTrip(t, got, func(b []byte) (Import, error) { return DecodeImport(b, nil) })
	}
	checkRoundTrip(t, imp, func(b []byte) (Import, error) { return DecodeImport(b, nil) })
	checkRoundTrip(t, exp, func(b []byte) (Export, error) { return DecodeExport(b, nil) })
}

func checkRoundTrip[T any](t *testing.T, s T, decode func([]byte) (T, error)) {
	t.Helper()
	out, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	again, err := decode(out)
	if err != nil {
		t.Fatalf("decoding the marshalled storage %s: %v", out, err)
	}
	if diff := cmp.Diff(s, again, ignoreUnexported); diff != "" {
		t.Fatalf("decoding %s changed the storage (-first +second):\n%s", out, diff)
	}
}

func FuzzDecodeBody(f *testing.F) {
	for _, seed := range []string{
		``,
		`{}`,
		`[]`,
		`null`,
		`{"project": 7,`,
		`{"project": 7, "bucket": "acme"}`,
		`{"id": 1, "project": 7, "title": "raw images", "bucket": "acme-raw", "prefix": "incoming",
			"regex_filter": ".*\\.(jpe?g|png)$", "use_blob_urls": true, "recursive_scan": true,
			"presign": true, "presign_ttl": 15, "google_application_credentials": "", "google_project_id": "acme"}`,
		`{"id": 2, "project": 7, "title": "labels", "bucket": "acme-labels", "prefix": "annotations", "can_delete_objects": true}`,
		`{"id": "3", "project": " 7.0 ", "bucket": " acme ", "presign_ttl": 6e1, "presign": "no", "recursive_scan": null}`,
		`{"project": 7, "bucket": "acme", "object_key": "{task_id}.json", "can_delete_objects": "1", "regex_filter": "(", "use_blob_urls": 0}`,
		`{"project": 7, "bucket": "acme", "presign_ttl": 0}`,
		`{"project": 7, "bucket": "acme", "presign_ttl": 10081, "foo": 1, "bar": null}`,
		`{"project": 7, "bucket": "gs://acme/x", "regex_filter": "a)|(b", "data_key": " "}`,
		`{"project": true, "bucket": ["acme"], "title": {"a": 1}, "id": -1}`,
		`{"type": "gcs", "status": "completed", "last_sync": null, "last_sync_count": 3, "last_sync_job": "j",
			"traceback": null, "meta": {}, "created_at": "2026-01-01T00:00:00Z", "synchronizable": true}`,
		`{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(saCreds) + `}`,
		`{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(extCreds) + `}`,
		`{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(impCreds) + `}`,
		`{"project": 7, "bucket": "acme", "google_application_credentials": ` + jsonStr(`{"type": "authorized_user"}`) + `}`,
		`{"project": 7, "bucket": "acme", "google_application_credentials": "not json"}`,
		`{"google_application_credentials": null, "prefix": "", "title": 12}`,
		`{"project": 7, "bucket": "acme", "title": "a\u0000b", "prefix": "\u2028"}`,
	} {
		f.Add([]byte(seed))
	}
	baseImp, baseExp := patchBases(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		imp, err := DecodeImport(body, nil)
		checkFuzzResult(t, body, imp, err, func(b []byte) (Import, error) { return DecodeImport(b, nil) })
		exp, err := DecodeExport(body, nil)
		checkFuzzResult(t, body, exp, err, func(b []byte) (Export, error) { return DecodeExport(b, nil) })

		bi := baseImp
		bi.Presign = ptr(*baseImp.Presign)
		imp, err = DecodeImport(body, &bi)
		checkFuzzResult(t, body, imp, err, func(b []byte) (Import, error) { return DecodeImport(b, nil) })
		if diff := cmp.Diff(baseImp, bi, cmp.AllowUnexported(Import{}), cmpopts.IgnoreFields(Import{}, "m")); diff != "" {
			t.Fatalf("PATCH changed its base (-before +after):\n%s", diff)
		}
		be := baseExp
		exp, err = DecodeExport(body, &be)
		checkFuzzResult(t, body, exp, err, func(b []byte) (Export, error) { return DecodeExport(b, nil) })
		if diff := cmp.Diff(baseExp, be, cmp.AllowUnexported(Export{})); diff != "" {
			t.Fatalf("PATCH changed its base (-before +after):\n%s", diff)
		}
	})
}

// checkFuzzResult: errors are BodyErrors; a storage passes Normalize
// unchanged, and marshalling and decoding it again gives the same storage.
func checkFuzzResult[T any, P interface {
	*T
	Normalize() error
}](t *testing.T, body []byte, s T, err error, decode func([]byte) (T, error)) {
	t.Helper()
	if err != nil {
		var be *BodyError
		if !errors.As(err, &be) || be.Detail == "" {
			t.Fatalf("body %q: error %v (%T) is not a *BodyError with a detail", body, err, err)
		}
		return
	}
	n := s
	if err := P(&n).Normalize(); err != nil {
		t.Fatalf("body %q: result does not pass Normalize: %v", body, err)
	}
	if diff := cmp.Diff(s, n, ignoreUnexported); diff != "" {
		t.Fatalf("body %q: Normalize changed the result (-decoded +normalized):\n%s", body, diff)
	}
	checkRoundTrip(t, s, decode)
}
