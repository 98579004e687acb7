package storages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	yamlv2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"

	"github.com/labelsync/labelsync/internal/secrets"
)

// MaxFileSize caps a storages file; thousands of storages fit in far less.
const MaxFileSize = 16 << 20

// ParseOptions configures Parse and Load.
type ParseOptions struct {
	// Secrets seals inline google_application_credentials. Nil refuses
	// them (ErrNoSecretKey) rather than keep them in clear.
	Secrets *secrets.Box
}

// Load reads a storages file (JSON or YAML) and parses it. Errors name the
// path.
func Load(path string, opts ParseOptions) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, fmt.Errorf("storages: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return File{}, fmt.Errorf("storages: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return File{}, fmt.Errorf("storages: %s: larger than %d MiB", path, MaxFileSize>>20)
	}
	return parse(data, opts, path)
}

// Parse decodes a storages file, JSON or YAML (read through the JSON field
// names), rejects unknown fields (and duplicate keys and extra documents in
// YAML), applies defaults and validates every storage, ids included, so the
// storages come back Normalized. Inline credentials are sealed with
// opts.Secrets. The first error is returned, naming the storage (kind,
// index, id) and the field; it wraps a *FieldError when a field is at fault.
func Parse(data []byte, opts ParseOptions) (File, error) {
	return parse(data, opts, "")
}

func parse(data []byte, opts ParseOptions, file string) (File, error) {
	where := "storages: "
	if file != "" {
		where += file + ": "
	}
	js, err := toJSON(data)
	if err != nil {
		return File{}, fmt.Errorf("%s%w", where, err)
	}
	// Decode the lists element by element so that an unknown or mistyped
	// field can be reported with the storage it belongs to.
	var raw struct {
		Import []json.RawMessage `json:"import"`
		Export []json.RawMessage `json:"export"`
	}
	if js := bytes.TrimSpace(js); len(js) > 0 && js[0] != '{' && !bytes.Equal(js, []byte("null")) {
		return File{}, fmt.Errorf(`%swant an object with "import" and "export" lists, got %s`, where, jsonKind(js[0]))
	}
	if err := decodeStrict(js, &raw); err != nil {
		return File{}, fmt.Errorf(`%swant an object with "import" and "export" lists: %w`, where, err)
	}

	var out File
	if out.Import, err = parseList[Import](raw.Import, "import", file, opts.Secrets); err != nil {
		return File{}, err
	}
	// Export ids are their own namespace, as in Label Studio.
	if out.Export, err = parseList[Export](raw.Export, "export", file, opts.Secrets); err != nil {
		return File{}, err
	}
	return out, nil
}

// toJSON returns JSON input as is and converts anything else from YAML.
// JSON is decoded natively because YAML 1.1 parsers disagree with JSON on
// a few escapes and number forms.
func toJSON(data []byte) ([]byte, error) {
	t := bytes.TrimSpace(data)
	isJSON := len(t) > 0 && t[0] == '{'
	if isJSON && json.Valid(t) {
		return t, nil
	}
	js, err := yamlToJSON(data)
	if err != nil && isJSON {
		var v any
		jerr := json.Unmarshal(t, &v)
		return nil, fmt.Errorf("neither valid JSON (%v) nor YAML: %w", jerr, err)
	}
	return js, err
}

// yamlToJSON converts one YAML document, rejecting duplicate keys.
func yamlToJSON(data []byte) ([]byte, error) {
	// sigs.k8s.io/yaml reads only the first document and ignores what
	// follows a flow mapping; a second storages document silently dropped
	// would be worse than an error, so check the stream first.
	dec := yamlv2.NewDecoder(bytes.NewReader(data))
	for n := 0; ; n++ {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if n > 0 && doc != nil {
			return nil, errors.New("yaml: more than one document; put every storage in one")
		}
	}
	return yaml.YAMLToJSONStrict(data)
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the top-level value")
	}
	return nil
}

// decodeStorage decodes one storage, phrasing the decoder's errors for
// people who write YAML as well as JSON.
// storage is what parseList needs of *Import and *Export.
type storage interface {
	normalize() error
	id() *int64
	credentials() (plaintext, sealed *string)
}

func (s *Import) id() *int64 { return &s.ID }
func (s *Import) credentials() (*string, *string) {
	return &s.GoogleApplicationCredentials, &s.sealedCredentials
}
func (s *Export) id() *int64 { return &s.ID }
func (s *Export) credentials() (*string, *string) {
	return &s.GoogleApplicationCredentials, &s.sealedCredentials
}

// parseList decodes, validates and seals one list of storages; an error
// names the storage by kind, index and id.
func parseList[T any, P interface {
	*T
	storage
}](raws []json.RawMessage, kind, file string, box *secrets.Box) ([]T, error) {
	if len(raws) == 0 {
		return nil, nil
	}
	out := make([]T, len(raws))
	seen := make(map[int64]int, len(raws))
	for i, r := range raws {
		s := P(&out[i])
		fail := func(err error) ([]T, error) {
			return nil, &storageError{file: file, kind: kind, index: i, id: *s.id(), err: err}
		}
		if err := decodeStorage(r, s); err != nil {
			*s.id() = peekID(r)
			return fail(err)
		}
		id := *s.id()
		if err := checkID(id); err != nil {
			return fail(err)
		}
		if j, dup := seen[id]; dup {
			return fail(fieldErr("id", id, fmt.Sprintf("duplicate of %s[%d]", kind, j)))
		}
		seen[id] = i
		if err := s.normalize(); err != nil {
			return fail(err)
		}
		plain, sealed := s.credentials()
		if err := sealCredentials(plain, sealed, box); err != nil {
			return fail(err)
		}
	}
	return out, nil
}

func decodeStorage(data []byte, v any) error {
	err := decodeStrict(data, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" && te.Type != nil {
		want := te.Type.String()
		switch te.Type.Kind() {
		case reflect.String:
			want = "a string (quote it in YAML)"
		case reflect.Int, reflect.Int64:
			want = "an integer"
		case reflect.Bool:
			want = "true or false"
		}
		return &FieldError{Field: te.Field, Err: fmt.Errorf("want %s, got %s", want, te.Value)}
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("unknown field %s", msg)
	}
	return err
}

func jsonKind(first byte) string {
	switch first {
	case '[':
		return "a list"
	case '"':
		return "a string"
	}
	return "a scalar"
}

// peekID recovers the id of a storage that failed to decode, for the error
// message only.
func peekID(r json.RawMessage) int64 {
	var v struct {
		ID int64 `json:"id"`
	}
	_ = json.Unmarshal(r, &v)
	return v.ID
}
