package api

import (
	"net/http"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/secrets"
)

// WithCatalog serves create, PATCH and DELETE through c (in progress).
func (s *Server) WithCatalog(c *catalog.Catalog, box *secrets.Box) *Server {
	s.catalog, s.box = c, box
	return s
}

func (s *Server) registerWrites(*http.ServeMux)       {}
func (s *Server) registerExportWrites(*http.ServeMux) {}
