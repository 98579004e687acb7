package storages

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/labelsync/labelsync/internal/secrets"
)

// checkCredentials catches the usual mistake of giving a path instead of the
// key's content. The message never repeats the value: it may be a secret.
func checkCredentials(creds string) error {
	if creds == "" {
		return nil
	}
	b := bytes.TrimSpace([]byte(creds))
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return &FieldError{Field: "google_application_credentials", Err: errors.New("must be the JSON content of a service account or external_account key, not a path or other text")}
	}
	return nil
}

func sealCredentials(plaintext *string, sealed *string, box *secrets.Box) error {
	if *plaintext == "" {
		return nil
	}
	if box == nil {
		return &FieldError{Field: "google_application_credentials", Err: ErrNoSecretKey}
	}
	s, err := box.Seal([]byte(*plaintext))
	if err != nil {
		return &FieldError{Field: "google_application_credentials", Err: err}
	}
	*sealed, *plaintext = s, ""
	return nil
}

func openCredentials(plaintext, sealed string, box *secrets.Box) ([]byte, error) {
	switch {
	case sealed == "" && plaintext == "":
		return nil, nil
	case sealed == "":
		// Refusing rather than returning the plaintext makes a forgotten
		// SealCredentials show up at once instead of as a stored secret.
		return nil, errors.New("storages: credentials were never sealed; call SealCredentials")
	case box == nil:
		return nil, errors.New("storages: stored credentials need LABELSYNC_SECRET_KEY to be opened")
	}
	return box.Open(sealed)
}

// SealCredentials encrypts GoogleApplicationCredentials with box, keeps the
// sealed form and clears the field. Without a box, inline credentials are
// refused with an error wrapping ErrNoSecretKey. No credentials: no-op.
func (s *Import) SealCredentials(box *secrets.Box) error {
	if err := sealCredentials(&s.GoogleApplicationCredentials, &s.sealedCredentials, box); err != nil {
		return &storageError{kind: "import", index: -1, id: s.ID, err: err}
	}
	return nil
}

// HasCredentials reports whether the storage carries its own credentials;
// without them, Application Default Credentials apply.
func (s *Import) HasCredentials() bool {
	return s.sealedCredentials != "" || s.GoogleApplicationCredentials != ""
}

// Credentials opens the sealed credentials JSON. It returns nil, nil when
// the storage has none (use Application Default Credentials).
func (s *Import) Credentials(box *secrets.Box) ([]byte, error) {
	return openCredentials(s.GoogleApplicationCredentials, s.sealedCredentials, box)
}

// SealedCredentials returns the sealed form, for storing a storage whose
// JSON form no longer carries its credentials; "" when there are none.
func (s *Import) SealedCredentials() string { return s.sealedCredentials }

// SetSealedCredentials restores a sealed form returned by SealedCredentials.
// It is not checked until Credentials opens it.
func (s *Import) SetSealedCredentials(sealed string) { s.sealedCredentials = sealed }

// SealCredentials is Import.SealCredentials for a target storage.
func (s *Export) SealCredentials(box *secrets.Box) error {
	if err := sealCredentials(&s.GoogleApplicationCredentials, &s.sealedCredentials, box); err != nil {
		return &storageError{kind: "export", index: -1, id: s.ID, err: err}
	}
	return nil
}

// HasCredentials is Import.HasCredentials for a target storage.
func (s *Export) HasCredentials() bool {
	return s.sealedCredentials != "" || s.GoogleApplicationCredentials != ""
}

// Credentials is Import.Credentials for a target storage.
func (s *Export) Credentials(box *secrets.Box) ([]byte, error) {
	return openCredentials(s.GoogleApplicationCredentials, s.sealedCredentials, box)
}

// SealedCredentials is Import.SealedCredentials for a target storage.
func (s *Export) SealedCredentials() string { return s.sealedCredentials }

// SetSealedCredentials is Import.SetSealedCredentials for a target storage.
func (s *Export) SetSealedCredentials(sealed string) { s.sealedCredentials = sealed }
