package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
)

// Creating, changing and deleting storages (SPEC §4, Label Studio's
// paths): the change is stored in the catalog (package catalog), in force
// on the replica that answers when it answers, and on every other worker
// and exporter within a second.

// WithCatalog serves create, PATCH and DELETE through c; box seals inline
// credentials (nil refuses them, with a message naming LABELSYNC_SECRET_KEY).
func (s *Server) WithCatalog(c *catalog.Catalog, box *secrets.Box) *Server {
	s.catalog, s.box = c, box
	return s
}

func (s *Server) registerWrites(mux *http.ServeMux) {
	mux.Handle("POST /api/storages/gcs", s.auth(s.createImport))
	mux.Handle("POST /api/storages/gcs/{$}", s.auth(s.createImport))
	mux.Handle("PATCH /api/storages/gcs/{id}", s.auth(s.patchImport))
	mux.Handle("DELETE /api/storages/gcs/{id}", s.auth(s.deleteImport))
}

func (s *Server) registerExportWrites(mux *http.ServeMux) {
	mux.Handle("POST /api/storages/export/gcs", s.auth(s.createExport))
	mux.Handle("POST /api/storages/export/gcs/{$}", s.auth(s.createExport))
	mux.Handle("PATCH /api/storages/export/gcs/{id}", s.auth(s.patchExport))
	mux.Handle("DELETE /api/storages/export/gcs/{id}", s.auth(s.deleteExport))
}

// body reads a request body, answering 413 or 400 itself.
func body(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"detail": "request body over " + strconv.Itoa(MaxBodyBytes) + " bytes"})
		return nil, false
	case err != nil:
		writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "the body could not be read"})
		return nil, false
	}
	return b, true
}

// bodyError answers a storage body that cannot be accepted.
func bodyError(w http.ResponseWriter, err error) {
	var be *storages.BodyError
	if errors.As(err, &be) {
		fields := be.Fields
		if fields == nil {
			fields = map[string][]string{}
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{"detail": be.Detail, "validation_errors": fields})
		return
	}
	validationError(w, err)
}

func (s *Server) writable(w http.ResponseWriter) bool {
	if s.catalog == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"detail": "storages cannot be changed here"})
		return false
	}
	return true
}

// checkBucket: the bucket exists and the credentials can read it (an empty
// prefix, or one with no objects yet, is fine: uploads may come later).
func (s *Server) checkBucket(ctx context.Context, w http.ResponseWriter, creds []byte, f fields) bool {
	c, err := s.client(ctx, creds)
	if err != nil {
		validationError(w, &gcs.ValidationError{Field: "google_application_credentials", Message: "Google Application Credentials are invalid", Err: err})
		return false
	}
	if err := gcs.ValidateExport(ctx, gcs.Bucket(c, f.bucket, f.userProject)); err != nil {
		validationError(w, err)
		return false
	}
	return true
}

// fields are what checking a storage's bucket needs of it.
type fields struct {
	plain       string // credentials in the body, not yet sealed
	bucket      string
	userProject string // google_project_id
	stored      func(*secrets.Box) ([]byte, error)
}

// kind is what the create, PATCH and DELETE handlers need of one storage
// kind: its decoder, its fields, and its view.
type kind[S storages.Import | storages.Export] struct {
	decode func(body []byte, base *S) (S, error)
	fields func(*S) fields
	view   func(s *Server, ctx context.Context, st S) (any, error)
}

var importKind = kind[storages.Import]{
	decode: storages.DecodeImport,
	fields: func(st *storages.Import) fields {
		return fields{st.GoogleApplicationCredentials, st.Bucket, st.GoogleProjectID, st.Credentials}
	},
	view: func(s *Server, ctx context.Context, st storages.Import) (any, error) { return s.view(ctx, &st) },
}

var exportKind = kind[storages.Export]{
	decode: storages.DecodeExport,
	fields: func(st *storages.Export) fields {
		return fields{st.GoogleApplicationCredentials, st.Bucket, st.GoogleProjectID, st.Credentials}
	},
	view: func(s *Server, ctx context.Context, st storages.Export) (any, error) { return s.exportView(ctx, st) },
}

func (s *Server) createImport(w http.ResponseWriter, r *http.Request) { create(s, importKind, w, r) }
func (s *Server) patchImport(w http.ResponseWriter, r *http.Request)  { patch(s, importKind, w, r) }
func (s *Server) deleteImport(w http.ResponseWriter, r *http.Request) {
	remove[storages.Import](s, w, r)
}
func (s *Server) createExport(w http.ResponseWriter, r *http.Request) { create(s, exportKind, w, r) }
func (s *Server) patchExport(w http.ResponseWriter, r *http.Request)  { patch(s, exportKind, w, r) }
func (s *Server) deleteExport(w http.ResponseWriter, r *http.Request) {
	remove[storages.Export](s, w, r)
}

func create[S storages.Import | storages.Export](s *Server, k kind[S], w http.ResponseWriter, r *http.Request) {
	b, ok := body(w, r)
	if !ok || !s.writable(w) {
		return
	}
	st, err := k.decode(b, nil)
	if err != nil {
		bodyError(w, err)
		return
	}
	f := k.fields(&st)
	if f.plain != "" && s.box == nil {
		validationError(w, &storages.FieldError{Field: "google_application_credentials", Err: storages.ErrNoSecretKey})
		return
	}
	if !s.checkBucket(r.Context(), w, []byte(f.plain), f) {
		return
	}
	created, err := catalog.Create(r.Context(), s.catalog, st)
	if s.writeFailed(w, err) {
		return
	}
	v, err := k.view(s, r.Context(), created)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func patch[S storages.Import | storages.Export](s *Server, k kind[S], w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok || !s.writable(w) {
		return
	}
	b, ok := body(w, r)
	if !ok {
		return
	}
	refused := false
	updated, err := catalog.Update(r.Context(), s.catalog, id, func(cur S) (S, error) {
		next, err := k.decode(b, &cur)
		if err != nil {
			return next, err
		}
		f := k.fields(&next)
		creds, err := plainOr(f.plain, func() ([]byte, error) { return f.stored(s.box) })
		if err != nil {
			return next, &storages.FieldError{Field: "google_application_credentials", Err: err}
		}
		if !s.checkBucket(r.Context(), w, creds, f) {
			refused = true
			return next, errRefused
		}
		return next, nil
	})
	if refused {
		return // checkBucket answered
	}
	if errors.Is(err, catalog.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
		return
	}
	var be *storages.BodyError
	var fe *storages.FieldError
	if errors.As(err, &be) || errors.As(err, &fe) || errors.Is(err, storages.ErrNoSecretKey) {
		bodyError(w, err)
		return
	}
	if s.writeFailed(w, err) {
		return
	}
	v, err := k.view(s, r.Context(), updated)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func remove[S storages.Import | storages.Export](s *Server, w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok || !s.writable(w) {
		return
	}
	err := catalog.Delete[S](r.Context(), s.catalog, id)
	if errors.Is(err, catalog.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
		return
	}
	if s.writeFailed(w, err) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeFailed answers a catalog error: a taken id is a 400 on "id",
// anything else a 503.
func (s *Server) writeFailed(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, catalog.ErrExists):
		writeJSON(w, http.StatusBadRequest, map[string]any{"detail": "a storage with this id exists", "validation_errors": map[string][]string{"id": {"a storage with this id exists"}}})
	case errors.Is(err, storages.ErrNoSecretKey):
		validationError(w, &storages.FieldError{Field: "google_application_credentials", Err: err})
	default:
		s.fail(w, err)
	}
	return true
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
		return 0, false
	}
	return id, true
}

// plainOr returns credentials just sent in a body, or else the stored ones.
func plainOr(plain string, stored func() ([]byte, error)) ([]byte, error) {
	if plain != "" {
		return []byte(plain), nil
	}
	return stored()
}

// errRefused stops an update whose bucket check already answered.
var errRefused = errors.New("api: refused")
