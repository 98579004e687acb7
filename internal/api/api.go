// Package api serves the worker's storage API on Label Studio's paths
// (SPEC §4): storages with their sync status, sync, preview and connection
// checks. Every route needs `Authorization: Bearer <LABELSYNC_API_TOKEN>`;
// with no token configured every request is 401. Credentials are never
// returned. Request bodies are limited to MaxBodyBytes.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/export"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/syncer"
)

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 1 << 20

type syncs interface {
	Status(ctx context.Context, id int64) (syncer.Status, error)
	Request(ctx context.Context, id int64, reconcile bool) (syncer.Status, error)
}

// exportSyncs queues export syncs and reads their status (export.Syncs).
type exportSyncs interface {
	Status(ctx context.Context, id int64) (export.Status, error)
	Request(ctx context.Context, id int64) (export.Status, error)
}

// ClientFor returns a storage client for credentials (nil: ADC).
type ClientFor func(ctx context.Context, credentialsJSON []byte) (*storage.Client, error)

// SavedClientFor returns the storage client of a saved import storage,
// opening its sealed credentials.
type SavedClientFor func(ctx context.Context, st *storages.Import) (*storage.Client, error)

// Server holds the API's dependencies.
type Server struct {
	token   string
	current func() *storages.Set
	exports func() []storages.Export
	syncs   syncs
	client  ClientFor
	saved   SavedClientFor
	logger  *slog.Logger
	// exportSyncs, when set, makes export storages' status fields real and
	// serves their sync.
	exportSyncs exportSyncs
	limits      *limiter
	// catalog, when set, serves create, PATCH and DELETE (crud.go).
	catalog *catalog.Catalog
	box     *secrets.Box
}

// WithExportSyncs serves export syncs and status through es.
func (s *Server) WithExportSyncs(es exportSyncs) *Server {
	s.exportSyncs = es
	return s
}

// New builds the API. token empty refuses every request. client serves
// storages posted with the request (their credentials used once, never
// stored); saved serves storages named by id.
func New(token string, current func() *storages.Set, exports func() []storages.Export, s syncs, client ClientFor, saved SavedClientFor, logger *slog.Logger) *Server {
	return &Server{token: token, current: current, exports: exports, syncs: s, client: client, saved: saved, logger: logger}
}

// Register adds the routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("GET /api/storages/gcs", s.auth(s.listImports))
	mux.Handle("GET /api/storages/gcs/{$}", s.auth(s.listImports))
	mux.Handle("GET /api/storages/gcs/{id}", s.auth(s.getImport))
	mux.Handle("POST /api/storages/gcs/{id}/sync", s.auth(s.sync))
	mux.Handle("POST /api/storages/gcs/validate", s.auth(s.validateImport))
	mux.Handle("POST /api/storages/gcs/files", s.auth(s.files))
	if s.catalog != nil {
		s.registerWrites(mux)
	}
	s.RegisterExports(mux)
}

// RegisterExports adds the export storages' routes only (the exporter
// serves them too).
func (s *Server) RegisterExports(mux *http.ServeMux) {
	mux.Handle("GET /api/storages/export/gcs", s.auth(s.listExports))
	mux.Handle("GET /api/storages/export/gcs/{$}", s.auth(s.listExports))
	mux.Handle("GET /api/storages/export/gcs/{id}", s.auth(s.getExport))
	mux.Handle("POST /api/storages/export/gcs/validate", s.auth(s.validateExport))
	mux.Handle("POST /api/storages/export/gcs/{id}/sync", s.auth(s.syncExport))
	if s.catalog != nil {
		s.registerExportWrites(mux)
	}
}

// Authorized reports whether r carries the bearer token; the resolver uses
// it too.
func Authorized(token string, r *http.Request) bool {
	if token == "" {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func (s *Server) auth(h http.HandlerFunc) http.Handler {
	if s.limits == nil {
		s.limits = newLimiter(Limits{})
	}
	return s.limits.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Authorized(s.token, r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="labelsync"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"detail": "Authentication credentials were not provided or are invalid."})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		h(w, r)
	}))
}

// importView is an import storage as the API shows it: its fields (never
// its credentials) plus Label Studio's status fields.
type importView struct {
	storages.Import
	Type          string         `json:"type"`
	Status        string         `json:"status"`
	LastSync      *time.Time     `json:"last_sync"`
	LastSyncCount *int64         `json:"last_sync_count"`
	Traceback     *string        `json:"traceback"`
	Meta          map[string]any `json:"meta"`
}

func (s *Server) view(ctx context.Context, st *storages.Import) (importView, error) {
	v := importView{Import: *st, Type: "gcs"}
	v.GoogleApplicationCredentials = ""
	status, err := s.syncs.Status(ctx, st.ID)
	if err != nil {
		return v, err
	}
	v.Status, v.LastSync, v.LastSyncCount, v.Traceback = status.Status, status.LastSync, status.LastSyncCount, status.Traceback
	b, _ := json.Marshal(status.Meta)
	_ = json.Unmarshal(b, &v.Meta)
	return v, nil
}

func (s *Server) listImports(w http.ResponseWriter, r *http.Request) {
	project, ok := projectFilter(w, r)
	if !ok {
		return
	}
	out := []importView{}
	for _, st := range s.current().All() {
		if project != 0 && st.Project != project {
			continue
		}
		v, err := s.view(r.Context(), st)
		if err != nil {
			s.fail(w, err)
			return
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getImport(w http.ResponseWriter, r *http.Request) {
	st, ok := s.importByID(w, r)
	if !ok {
		return
	}
	v, err := s.view(r.Context(), st)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	st, ok := s.importByID(w, r)
	if !ok {
		return
	}
	reconcile := r.URL.Query().Get("reconcile") == "true"
	if _, err := s.syncs.Request(r.Context(), st.ID, reconcile); err != nil {
		s.fail(w, err)
		return
	}
	v, err := s.view(r.Context(), st)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// files is the preview: the first `limit` keys that would import.
func (s *Server) files(w http.ResponseWriter, r *http.Request) {
	st, c, ok := s.decodeImport(w, r)
	if !ok {
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "limit must be 1..10000"})
			return
		}
		limit = n
	}
	objs, truncated, err := gcs.Preview(r.Context(), c, st, limit, 10*time.Second)
	if err != nil {
		validationError(w, err)
		return
	}
	type file struct {
		Key          string    `json:"key"`
		LastModified time.Time `json:"last_modified"`
		Size         int64     `json:"size"`
	}
	out := struct {
		Files     []file `json:"files"`
		Truncated bool   `json:"truncated"`
	}{Files: []file{}, Truncated: truncated}
	for _, o := range objs {
		out.Files = append(out.Files, file{Key: o.Key, LastModified: o.Updated, Size: o.Size})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) validateImport(w http.ResponseWriter, r *http.Request) {
	st, c, ok := s.decodeImport(w, r)
	if !ok {
		return
	}
	if err := gcs.ValidateImport(r.Context(), gcs.Bucket(c, st.Bucket, st.GoogleProjectID), st.Prefix); err != nil {
		validationError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (s *Server) validateExport(w http.ResponseWriter, r *http.Request) {
	b, ok := body(w, r)
	if !ok {
		return
	}
	var base *storages.Export
	if id := bodyID(b); id > 0 {
		for _, ex := range s.exports() {
			if ex.ID == id {
				base = &ex
				break
			}
		}
	}
	ex, err := storages.DecodeExport(b, base)
	if err != nil {
		bodyError(w, err)
		return
	}
	creds, err := plainOr(ex.GoogleApplicationCredentials, func() ([]byte, error) { return ex.Credentials(s.box) })
	if err != nil {
		validationError(w, &gcs.ValidationError{Field: "google_application_credentials", Message: "Google credentials are invalid", Err: err})
		return
	}
	c, ok := s.clientOf(w, r, creds)
	if !ok {
		return
	}
	if err := gcs.ValidateExport(r.Context(), gcs.Bucket(c, ex.Bucket, ex.GoogleProjectID)); err != nil {
		validationError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (s *Server) listExports(w http.ResponseWriter, r *http.Request) {
	project, ok := projectFilter(w, r)
	if !ok {
		return
	}
	out := []exportView{}
	for _, ex := range s.exports() {
		if project != 0 && ex.Project != project {
			continue
		}
		v, err := s.exportView(r.Context(), ex)
		if err != nil {
			s.fail(w, err)
			return
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) exportByID(w http.ResponseWriter, r *http.Request) (storages.Export, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err == nil {
		for _, ex := range s.exports() {
			if ex.ID == id {
				return ex, true
			}
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
	return storages.Export{}, false
}

func (s *Server) getExport(w http.ResponseWriter, r *http.Request) {
	ex, ok := s.exportByID(w, r)
	if !ok {
		return
	}
	v, err := s.exportView(r.Context(), ex)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// syncExport queues an export sync, or returns the one queued or running.
func (s *Server) syncExport(w http.ResponseWriter, r *http.Request) {
	ex, ok := s.exportByID(w, r)
	if !ok {
		return
	}
	if s.exportSyncs == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"detail": "export sync is not available here"})
		return
	}
	if _, err := s.exportSyncs.Request(r.Context(), ex.ID); err != nil {
		s.fail(w, err)
		return
	}
	v, err := s.exportView(r.Context(), ex)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

type exportView struct {
	storages.Export
	Type          string         `json:"type"`
	Status        string         `json:"status"`
	LastSync      *time.Time     `json:"last_sync"`
	LastSyncCount *int64         `json:"last_sync_count"`
	Traceback     *string        `json:"traceback"`
	Meta          map[string]any `json:"meta"`
}

func (s *Server) exportView(ctx context.Context, ex storages.Export) (exportView, error) {
	ex.GoogleApplicationCredentials = ""
	v := exportView{Export: ex, Type: "gcs", Status: export.StatusInitialized, Meta: map[string]any{}}
	if s.exportSyncs == nil {
		return v, nil
	}
	st, err := s.exportSyncs.Status(ctx, ex.ID)
	if err != nil {
		return v, err
	}
	v.Status, v.LastSync, v.LastSyncCount, v.Traceback = st.Status, st.LastSync, st.LastSyncCount, st.Traceback
	b, _ := json.Marshal(st.Meta)
	_ = json.Unmarshal(b, &v.Meta)
	delete(v.Meta, "owner")
	delete(v.Meta, "heartbeat")
	return v, nil
}

func (s *Server) importByID(w http.ResponseWriter, r *http.Request) (*storages.Import, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err == nil {
		if st, ok := s.current().Get(id); ok {
			return st, true
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not found."})
	return nil, false
}

// decodeImport reads an unsaved import storage from the body, the way
// Label Studio's preview and validate forms send it. Inline credentials
// are used for this request only and never stored.
func (s *Server) decodeImport(w http.ResponseWriter, r *http.Request) (*storages.Import, *storage.Client, bool) {
	b, ok := body(w, r)
	if !ok {
		return nil, nil, false
	}
	// A saved storage named by id is the base, as Label Studio's validate
	// does for a storage being edited: the body's fields replace its
	// fields, and its own credentials serve unless the body sends others.
	var base *storages.Import
	if id := bodyID(b); id > 0 && s.current != nil {
		if saved, ok := s.current().Get(id); ok {
			base = saved
		}
	}
	st, err := storages.DecodeImport(b, base)
	if err != nil {
		bodyError(w, err)
		return nil, nil, false
	}
	if st.GoogleApplicationCredentials == "" && base != nil && st.HasCredentials() {
		c, err := s.saved(r.Context(), &st)
		if err != nil {
			validationError(w, &gcs.ValidationError{Field: "google_application_credentials", Message: "Google credentials are invalid", Err: err})
			return nil, nil, false
		}
		return &st, c, true
	}
	creds := st.GoogleApplicationCredentials
	st.GoogleApplicationCredentials = ""
	c, ok := s.clientOf(w, r, []byte(creds))
	if !ok {
		return nil, nil, false
	}
	return &st, c, true
}

// bodyID reads the "id" a body names (a number or a numeric string), or 0.
func bodyID(b []byte) int64 {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return 0
	}
	// The decoder's integer forms: 7, "7", " 7 ", 7.0, "7.0", 7e0.
	text := strings.TrimSpace(strings.Trim(strings.TrimSpace(string(probe.ID)), `"`))
	if id, err := strconv.ParseInt(text, 10, 64); err == nil {
		return id
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || f != math.Trunc(f) || f < 1 || f > 1<<53 {
		return 0
	}
	return int64(f)
}

func (s *Server) clientOf(w http.ResponseWriter, r *http.Request, creds []byte) (*storage.Client, bool) {
	if len(creds) == 0 {
		creds = nil
	}
	c, err := s.client(r.Context(), creds)
	if err != nil {
		validationError(w, &gcs.ValidationError{Field: "google_application_credentials", Message: "Google credentials are invalid", Err: err})
		return nil, false
	}
	return c, true
}

func projectFilter(w http.ResponseWriter, r *http.Request) (int64, bool) {
	v := r.URL.Query().Get("project")
	if v == "" {
		return 0, true
	}
	p, err := strconv.ParseInt(v, 10, 64)
	if err != nil || p < 1 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "project must be a positive integer"})
		return 0, false
	}
	return p, true
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"detail": fmt.Sprintf("request body over %d bytes", MaxBodyBytes)})
			return false
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "invalid JSON body: " + err.Error()})
		return false
	}
	return true
}

// validationError answers 400 in Label Studio's shape.
func validationError(w http.ResponseWriter, err error) {
	field, msg := "non_field_errors", err.Error()
	var ve *gcs.ValidationError
	var fe *storages.FieldError
	switch {
	case errors.As(err, &ve):
		field, msg = ve.Field, ve.Message
	case errors.As(err, &fe):
		field = fe.Field
	}
	writeJSON(w, http.StatusBadRequest, map[string]any{
		"detail":            msg,
		"validation_errors": map[string][]string{field: {msg}},
	})
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	s.logger.Error("api", "err", err)
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"detail": "temporarily unavailable, try again"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
