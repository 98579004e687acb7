package storages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file decodes storage API bodies (POST, PATCH and validate of
// /api/storages/gcs and /api/storages/export/gcs) the way Label Studio's
// serializers do (label_studio/io_storages/gcs/serializers.py: Django REST
// framework ModelSerializers with fields = '__all__'), with SPEC §4's
// stricter rules: unknown fields, presign_ttl outside 1..10080 and
// credentials of another type are refused. Messages for type errors are
// Django REST framework's, so that clients written for Label Studio show
// the same text.

// BodyError is a storage API body that cannot be accepted: Label Studio's
// error shape, {"detail": Detail, "validation_errors": Fields}.
//
// Neither Detail nor Fields ever contains any part of the credentials.
type BodyError struct {
	Detail string              // one line, e.g. "Validation error" or "unknown field(s): foo, bar"
	Fields map[string][]string // per-field messages ("validation_errors"); may be empty
}

func (e *BodyError) Error() string {
	var b strings.Builder
	b.WriteString("storages: ")
	b.WriteString(e.Detail)
	for _, f := range slices.Sorted(maps.Keys(e.Fields)) {
		for _, msg := range e.Fields[f] {
			b.WriteString("; ")
			b.WriteString(f)
			b.WriteString(": ")
			b.WriteString(msg)
		}
	}
	return b.String()
}

// Django REST framework's messages, as Label Studio answers them.
const (
	msgRequired  = "This field is required."
	msgNull      = "This field may not be null."
	msgBlank     = "This field may not be blank."
	msgInteger   = "A valid integer is required."
	msgBoolean   = "Must be a valid boolean."
	msgString    = "Not a valid string."
	msgNullChars = "Null characters are not allowed."

	detailValidation = "Validation error"
	nonFieldErrors   = "non_field_errors"
)

// MaxTitleLength is Label Studio's limit on title (a CharField of 256).
const MaxTitleLength = 256

// Credential types accepted inline (SPEC §4).
const (
	ServiceAccount             = "service_account"
	ExternalAccount            = "external_account"
	ImpersonatedServiceAccount = "impersonated_service_account"
)

const fieldCredentials = "google_application_credentials"

// msgCredentialsJSON is Label Studio's message (io_storages/gcs/utils.py),
// without the decoder's detail it appends: Go's quotes the offending
// character, which may be part of a secret.
const msgCredentialsJSON = "Google Application Credentials must be valid JSON string"

const acceptedTypes = ServiceAccount + ", " + ExternalAccount + " or " + ImpersonatedServiceAccount

// credentialFields are the fields each accepted type cannot work without:
// what Google's client libraries read first. The credentials are checked
// for shape only; the connection check on create and PATCH has the last
// word.
var credentialFields = map[string][]string{
	ServiceAccount:             {"client_email", "private_key"},
	ExternalAccount:            {"audience", "subject_token_type", "credential_source"},
	ImpersonatedServiceAccount: {"service_account_impersonation_url", "source_credentials"},
}

// objectFields are the credentialFields that hold a JSON object.
var objectFields = map[string]bool{"credential_source": true, "source_credentials": true}

// otherGoogleTypes are credential file types Google defines but inline
// storage credentials do not accept. Only these are named in a message: a
// "type" value of any other kind might be something pasted by mistake.
var otherGoogleTypes = map[string]bool{
	"authorized_user":                  true,
	"external_account_authorized_user": true,
	"gdch_service_account":             true,
}

// CredentialType checks google_application_credentials and returns their
// "type": ServiceAccount, ExternalAccount or ImpersonatedServiceAccount.
// Blank credentials (Application Default Credentials) return "", nil.
// Errors are a *FieldError on google_application_credentials; their text
// never contains any part of creds.
func CredentialType(creds string) (string, error) {
	c := strings.TrimSpace(creds)
	if c == "" {
		return "", nil
	}
	bad := func(msg string) (string, error) {
		return "", &FieldError{Field: fieldCredentials, Err: errors.New(msg)}
	}
	if !json.Valid([]byte(c)) {
		return bad(msgCredentialsJSON)
	}
	var f map[string]json.RawMessage
	if c[0] != '{' || json.Unmarshal([]byte(c), &f) != nil {
		return bad("Google Application Credentials must be a JSON object: the content of a credentials file")
	}
	var typ string
	if json.Unmarshal(f["type"], &typ) != nil || typ == "" {
		return bad(`Google Application Credentials have no "type"; accepted types: ` + acceptedTypes)
	}
	required, ok := credentialFields[typ]
	if !ok {
		of := "of an unknown type"
		if otherGoogleTypes[typ] {
			of = "of type " + typ
		}
		return bad("Google Application Credentials " + of + " are not accepted; accepted types: " + acceptedTypes)
	}
	var missing []string
	for _, name := range required {
		if !hasCredentialField(f[name], objectFields[name]) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return bad("Google Application Credentials of type " + typ + " lack " + strings.Join(missing, ", "))
	}
	return typ, nil
}

func hasCredentialField(raw json.RawMessage, object bool) bool {
	if object {
		return len(raw) > 0 && raw[0] == '{'
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != ""
}

// serverFields are fields of Label Studio's storage objects that the
// server owns: the type, sync status and bookkeeping, the creation time.
// A body may carry them, so that a storage read from the API can be sent
// back as it is; they are ignored. Label Studio's serializers make type
// and created_at read-only; the others are model fields its runtime still
// accepts and SPEC §4 ignores.
var serverFields = []string{
	"created_at", "last_sync", "last_sync_count", "last_sync_job",
	"meta", "status", "synchronizable", "traceback", "type",
}

var importFields = []string{
	"id", "project", "title", "description", "bucket", "prefix",
	"regex_filter", "use_blob_urls", "recursive_scan", "presign", "presign_ttl",
	fieldCredentials, "google_project_id", "data_key",
}

var exportFields = []string{
	"id", "project", "title", "description", "bucket", "prefix",
	fieldCredentials, "google_project_id", "can_delete_objects", "object_key",
}

// exportIgnored are fields of Label Studio's GCS export storage model (its
// GCSStorageMixin is shared with import storages) that have no effect on
// an export storage there either.
var exportIgnored = []string{"regex_filter", "use_blob_urls"}

// DecodeImport decodes a storage API body for an import storage.
//
// With base nil it is a create (or validate): defaults apply, and project
// and bucket are required. An "id" is decoded into the result (0 when
// absent); the caller decides whether to honour it.
//
// With base non-nil it is a PATCH: only the fields the body names change,
// the rest stay as in *base, which is not modified. "id" is ignored.
// Credentials: absent, empty or blank keep the stored ones, sealed form
// included, as Label Studio's form leaves its write-only field empty; new
// credentials replace them (the result holds them in plaintext and no
// sealed form); null removes them, so that Application Default Credentials
// apply.
//
// Label Studio's server-owned fields (type, status, last_sync,
// last_sync_count, last_sync_job, traceback, meta, created_at,
// synchronizable) are accepted and ignored; any other unknown field is
// refused, all of them named in Detail. Integers (project, id,
// presign_ttl) may be numeric strings ("7", " 7 ", "7.0"), booleans may be
// JSON booleans or the strings and numbers Label Studio accepts ("true",
// "false", "1", "0", "yes", "no", ...), and Label Studio's string fields
// are trimmed, as there (data_key and object_key are kept as given).
//
// The result passes Normalize. Every error is a *BodyError reporting all
// the invalid fields at once, Normalize's included.
func DecodeImport(body []byte, base *Import) (Import, error) {
	d, err := newBodyDecoder(body, importFields, nil, base != nil)
	if err != nil {
		return Import{}, err
	}
	var s Import
	if base != nil {
		s = *base
		if base.Presign != nil {
			p := *base.Presign
			s.Presign = &p
		}
	}
	d.common(&s.ID, &s.Project, &s.Title, &s.Description, &s.Bucket, &s.Prefix, &s.GoogleProjectID)
	d.credentials(&s.GoogleApplicationCredentials, &s.sealedCredentials)
	d.text("regex_filter", &s.RegexFilter, textOpts{trim: true})
	d.boolean("use_blob_urls", &s.UseBlobURLs, false)
	d.boolean("recursive_scan", &s.RecursiveScan, true)
	var presign bool
	if d.boolean("presign", &presign, false) {
		s.Presign = &presign
	}
	if ttl, ok := d.integer("presign_ttl"); ok {
		switch {
		case ttl < 1:
			d.fail("presign_ttl", "Ensure this value is greater than or equal to 1.")
		case ttl > MaxPresignTTL:
			d.fail("presign_ttl", fmt.Sprintf("Ensure this value is less than or equal to %d.", MaxPresignTTL))
		default:
			s.PresignTTL = int(ttl)
		}
	}
	d.text("data_key", &s.DataKey, textOpts{})
	return finish(d, s)
}

// DecodeExport is DecodeImport for an export storage: its fields are id,
// project, title, description, bucket, prefix,
// google_application_credentials, google_project_id, can_delete_objects
// and object_key. regex_filter and use_blob_urls, which Label Studio's
// export storages carry without using, are accepted and ignored.
func DecodeExport(body []byte, base *Export) (Export, error) {
	d, err := newBodyDecoder(body, exportFields, exportIgnored, base != nil)
	if err != nil {
		return Export{}, err
	}
	var s Export
	if base != nil {
		s = *base
	}
	d.common(&s.ID, &s.Project, &s.Title, &s.Description, &s.Bucket, &s.Prefix, &s.GoogleProjectID)
	d.credentials(&s.GoogleApplicationCredentials, &s.sealedCredentials)
	d.boolean("can_delete_objects", &s.CanDeleteObjects, true)
	d.text("object_key", &s.ObjectKey, textOpts{})
	return finish(d, s)
}

// probe is what finish needs of *Import and *Export.
type probe interface {
	Normalize() error
	// placeholder sets field to a value that passes Normalize and
	// reports whether it knows the field.
	placeholder(field string) bool
}

func (s *Import) placeholder(field string) bool {
	switch field {
	case "project":
		s.Project = 1
	case "bucket":
		s.Bucket = "placeholder"
	case "presign_ttl":
		s.PresignTTL = DefaultPresignTTL
	case "data_key":
		s.DataKey = DefaultDataKey
	case "regex_filter":
		s.RegexFilter = ""
	case fieldCredentials:
		s.GoogleApplicationCredentials = ""
	default:
		return false
	}
	return true
}

func (s *Export) placeholder(field string) bool {
	switch field {
	case "project":
		s.Project = 1
	case "bucket":
		s.Bucket = "placeholder"
	case "object_key":
		s.ObjectKey = DefaultObjectKey
	case fieldCredentials:
		s.GoogleApplicationCredentials = ""
	default:
		return false
	}
	return true
}

// finish validates the decoded storage with Normalize and returns it, or
// the BodyError with every field error found.
//
// Normalize stops at the first invalid field, whereas Label Studio reports
// every field at once. So each field Normalize refuses, or that the body
// already got wrong, is given a valid placeholder and Normalize runs again,
// until it passes. Placeholders are only ever used after an error, so a
// storage without errors is the one the body described.
func finish[T any, P interface {
	*T
	probe
}](d *bodyDecoder, s T) (T, error) {
	p := P(&s)
	for range len(importFields) + 1 {
		err := p.Normalize()
		if err == nil {
			break
		}
		var fe *FieldError
		if !errors.As(err, &fe) {
			d.fail(nonFieldErrors, err.Error())
			break
		}
		if len(d.errs[fe.Field]) == 0 {
			d.fail(fe.Field, fe.Err.Error())
		}
		if !p.placeholder(fe.Field) {
			break
		}
	}
	if len(d.errs) == 0 && len(d.unknown) == 0 {
		return s, nil
	}
	var zero T
	detail := detailValidation
	if len(d.unknown) > 0 {
		detail = "unknown field(s): " + strings.Join(d.unknown, ", ")
	}
	return zero, &BodyError{Detail: detail, Fields: d.errs}
}

// bodyDecoder reads the fields of one body, recording errors per field.
type bodyDecoder struct {
	raw     map[string]json.RawMessage // only the fields to decode
	patch   bool
	unknown []string // sorted, printable
	errs    map[string][]string
}

func newBodyDecoder(body []byte, fields, ignored []string, patch bool) (*bodyDecoder, error) {
	d := &bodyDecoder{raw: map[string]json.RawMessage{}, patch: patch, errs: map[string][]string{}}
	body = bytes.Trim(body, " \t\r\n") // JSON's whitespace
	if len(body) == 0 {
		// Django REST framework reads an empty body as an empty object.
		return d, nil
	}
	if !json.Valid(body) {
		// The decoder's message quotes the offending character, which may
		// belong to the credentials; the offset is enough to find it.
		var se *json.SyntaxError
		err := json.Unmarshal(body, new(any))
		if errors.As(err, &se) {
			return nil, &BodyError{Detail: fmt.Sprintf("JSON parse error - invalid JSON at byte %d", se.Offset)}
		}
		return nil, &BodyError{Detail: "JSON parse error"}
	}
	if body[0] != '{' {
		return nil, &BodyError{Detail: detailValidation, Fields: map[string][]string{
			nonFieldErrors: {"Invalid data. Expected a dictionary, but got " + jsonType(body) + "."},
		}}
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(body, &all); err != nil {
		return nil, &BodyError{Detail: "JSON parse error"}
	}
	for k, v := range all {
		switch {
		case k == "id" && patch, slices.Contains(serverFields, k), slices.Contains(ignored, k):
			// accepted and ignored
		case slices.Contains(fields, k):
			d.raw[k] = v
		default:
			d.unknown = append(d.unknown, printableName(k))
		}
	}
	slices.Sort(d.unknown)
	return d, nil
}

// printableName keeps a field name on one line.
func printableName(k string) string {
	for _, r := range k {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || r == '"' || r == '\\' || r == ',' || r == ' ' {
			return strconv.Quote(k)
		}
	}
	if k == "" {
		return `""`
	}
	return k
}

func jsonType(v []byte) string {
	switch v[0] {
	case '[':
		return "list"
	case '"':
		return "str"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

func (d *bodyDecoder) fail(field, msg string) {
	d.errs[field] = append(d.errs[field], msg)
}

// common decodes the fields both kinds share, except credentials.
func (d *bodyDecoder) common(id, project *int64, title, description, bucket, prefix, googleProjectID *string) {
	if !d.patch {
		// Null and 0 (what a storage without an id marshals to) are no id.
		if raw := d.raw["id"]; len(raw) > 0 && raw[0] == 'n' {
			delete(d.raw, "id")
		}
		if v, ok := d.integer("id"); ok {
			if v < 0 {
				d.fail("id", "must be positive")
			} else {
				*id = v
			}
		}
		for _, f := range []string{"project", "bucket"} {
			if _, ok := d.raw[f]; !ok {
				d.fail(f, msgRequired)
			}
		}
	}
	if v, ok := d.integer("project"); ok {
		*project = v
	}
	d.text("title", title, textOpts{trim: true, max: MaxTitleLength})
	d.text("description", description, textOpts{trim: true})
	d.text("bucket", bucket, textOpts{trim: true, required: true})
	d.text("prefix", prefix, textOpts{trim: true})
	d.text("google_project_id", googleProjectID, textOpts{trim: true})
}

// integer decodes a Django REST framework IntegerField: a JSON number with
// an integral value, or a string of one, with surrounding spaces and a
// ".0" fraction allowed.
func (d *bodyDecoder) integer(name string) (int64, bool) {
	raw, ok := d.raw[name]
	if !ok {
		return 0, false
	}
	var lit string
	switch raw[0] {
	case 'n':
		d.fail(name, msgNull)
		return 0, false
	case '"':
		if json.Unmarshal(raw, &lit) != nil {
			d.fail(name, msgInteger)
			return 0, false
		}
		lit = strings.TrimSpace(lit)
		if i := strings.IndexByte(lit, '.'); i >= 0 && strings.Trim(lit[i+1:], "0") == "" {
			lit = lit[:i]
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		lit = string(raw)
	default:
		d.fail(name, msgInteger)
		return 0, false
	}
	if v, err := strconv.ParseInt(lit, 10, 64); err == nil {
		return v, true
	}
	// 7.0 and 7e2 are integers too; beyond 2^53 a float is not exact.
	if raw[0] != '"' {
		if f, err := strconv.ParseFloat(lit, 64); err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
			return int64(f), true
		}
	}
	d.fail(name, msgInteger)
	return 0, false
}

type textOpts struct {
	trim     bool // Django REST framework's CharField trims; our own fields are kept as given
	required bool // neither null nor blank
	max      int  // in characters; 0 means no limit
}

// text decodes a Django REST framework CharField (numbers are taken as
// their text) and reports whether the body set it.
func (d *bodyDecoder) text(name string, dst *string, o textOpts) bool {
	raw, ok := d.raw[name]
	if !ok {
		return false
	}
	var s string
	switch raw[0] {
	case 'n':
		if o.required {
			d.fail(name, msgNull)
			return false
		}
	case '"':
		if json.Unmarshal(raw, &s) != nil {
			d.fail(name, msgString)
			return false
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		s = string(raw)
	default:
		d.fail(name, msgString)
		return false
	}
	if o.trim {
		s = strings.TrimSpace(s)
	}
	switch {
	case strings.IndexByte(s, 0) >= 0:
		d.fail(name, msgNullChars)
		return false
	case o.required && s == "":
		d.fail(name, msgBlank)
		return false
	case o.max > 0 && utf8.RuneCountInString(s) > o.max:
		d.fail(name, fmt.Sprintf("Ensure this field has no more than %d characters.", o.max))
		return false
	}
	*dst = s
	return true
}

// Django REST framework's BooleanField values.
var (
	trueStrings  = []string{"t", "T", "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "1"}
	falseStrings = []string{"f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "0"}
	nullStrings  = []string{"", "null", "Null", "NULL"}
)

// boolean decodes a Django REST framework BooleanField and reports whether
// the body set it. nullable fields (null in Label Studio's model) read
// null as false, which is what Label Studio makes of it.
func (d *bodyDecoder) boolean(name string, dst *bool, nullable bool) bool {
	raw, ok := d.raw[name]
	if !ok {
		return false
	}
	var s string
	switch raw[0] {
	case 't':
		*dst = true
		return true
	case 'f':
		*dst = false
		return true
	case 'n':
		if !nullable {
			d.fail(name, msgNull)
			return false
		}
		*dst = false
		return true
	case '"':
		if json.Unmarshal(raw, &s) != nil {
			d.fail(name, msgBoolean)
			return false
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		// 1, 0, 1.0 and 0.0 are booleans in Python.
		if f, err := strconv.ParseFloat(string(raw), 64); err == nil && (f == 0 || f == 1) {
			*dst = f == 1
			return true
		}
		d.fail(name, msgBoolean)
		return false
	default:
		d.fail(name, msgBoolean)
		return false
	}
	switch {
	case slices.Contains(trueStrings, s):
		*dst = true
	case slices.Contains(falseStrings, s):
		*dst = false
	case nullable && slices.Contains(nullStrings, s):
		*dst = false
	default:
		d.fail(name, msgBoolean)
		return false
	}
	return true
}

// credentials decodes google_application_credentials (see DecodeImport).
// New credentials replace the sealed ones, which would otherwise win.
func (d *bodyDecoder) credentials(plain, sealed *string) {
	raw, ok := d.raw[fieldCredentials]
	if !ok {
		return
	}
	if raw[0] == 'n' {
		*plain, *sealed = "", ""
		return
	}
	var s string
	if !d.text(fieldCredentials, &s, textOpts{trim: true}) || s == "" {
		return
	}
	if _, err := CredentialType(s); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			d.fail(fieldCredentials, fe.Err.Error())
		}
		return
	}
	*plain, *sealed = s, ""
}
