package storages

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(specJSON))
	f.Add([]byte(specYAML))
	f.Add([]byte(`{"import":[{"id":1,"project":1,"bucket":"acme","regex_filter":"a|b","presign_ttl":10080}],"export":[{"id":1,"project":1,"bucket":"acme","object_key":"{task_id}.json"}]}`))
	f.Add([]byte("import:\n- {id: 1, project: 1, bucket: acme, prefix: '//', data_key: x}\n"))
	f.Add([]byte(`{"import":[{"id":1,"project":1,"bucket":"acme","google_application_credentials":"{\"type\":\"service_account\"}"}]}`))
	f.Add([]byte("import: [\n"))
	box := testBox(f, 3)
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data, ParseOptions{Secrets: box})
		if err != nil {
			return
		}
		// Whatever Parse accepts is valid and stays valid.
		for i := range file.Import {
			s := file.Import[i]
			if err := s.Normalize(); err != nil {
				t.Fatalf("import[%d] re-validation: %v", i, err)
			}
			if s.GoogleApplicationCredentials != "" {
				t.Fatalf("import[%d] kept plaintext credentials", i)
			}
			if s.HasCredentials() {
				if _, err := s.Credentials(box); err != nil {
					t.Fatalf("import[%d] credentials do not open: %v", i, err)
				}
			}
			for _, key := range []string{"", "a", "a/b", s.Prefix, s.Prefix + "/x", s.NormalizedPrefix() + "x"} {
				s.Matches(key)
			}
		}
		for i := range file.Export {
			s := file.Export[i]
			if err := s.Normalize(); err != nil {
				t.Fatalf("export[%d] re-validation: %v", i, err)
			}
			if s.GoogleApplicationCredentials != "" {
				t.Fatalf("export[%d] kept plaintext credentials", i)
			}
		}
		set, err := NewSet(file.Import)
		if err != nil {
			t.Fatalf("NewSet of parsed storages: %v", err)
		}
		if set.Len() != len(file.Import) {
			t.Fatalf("Set.Len() = %d, want %d", set.Len(), len(file.Import))
		}
		// What Parse returns marshals to JSON that parses to the same
		// storages (credentials aside: they are write-only).
		out, err := json.Marshal(file)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(out, ParseOptions{})
		if err != nil {
			t.Fatalf("re-Parse of %s: %v", out, err)
		}
		if diff := cmp.Diff(file, again, ignoreUnexported, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("re-Parse of %s changed the storages (-first +second):\n%s", out, diff)
		}
	})
}
