package export

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/storages"
)

// TaskLister is what export sync reads of Label Studio: its task list,
// with each task's annotations (package labelstudio's Client).
type TaskLister interface {
	EachTask(ctx context.Context, q labelstudio.TaskQuery, fn func(labelstudio.Task) error) error
}

// WithLabelStudio makes export sync also write every annotation Label
// Studio has for the storage's project (SPEC §3, §8): the source of truth,
// not only the annotations labelsync's webhook has seen. Its tasks are read
// a page at a time, with their annotations; each annotation is written as
// an ANNOTATION_UPDATED webhook for it would be, newest-wins.
func WithLabelStudio(ls TaskLister) Option { return func(x *Exporter) { x.labelStudio = ls } }

// lsPageSize is the tasks per page of export sync's reading: with their
// annotations, pages are heavy.
const lsPageSize = 100

// syncLabelStudio writes every annotation of target's project in Label
// Studio to target.
func (x *Exporter) syncLabelStudio(ctx context.Context, target *storages.Export, seen, written, failed *atomic.Int64) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	project := []byte(`{"id":` + strconv.FormatInt(target.Project, 10) + `}`)
	err := x.labelStudio.EachTask(gctx, labelstudio.TaskQuery{Project: target.Project, Annotations: true, PageSize: lsPageSize, Op: "export_sync"}, func(t labelstudio.Task) error {
		task := taskOnly(t.Raw)
		for _, ann := range t.Annotations {
			seen.Add(1)
			body, err := json.Marshal(map[string]json.RawMessage{
				"action": json.RawMessage(`"` + annotation.Updated + `"`), "annotation": ann, "task": task, "project": project,
			})
			if err != nil {
				failed.Add(1)
				continue
			}
			g.Go(func() error { return x.syncOne(gctx, body, target, written, failed) })
		}
		return gctx.Err()
	})
	if werr := g.Wait(); werr != nil {
		return fmt.Errorf("export sync from Label Studio: %w", werr)
	}
	if err != nil {
		return fmt.Errorf("export sync from Label Studio: %w", err)
	}
	return nil
}

// taskOnly is a task of the task list without its annotations and
// predictions, as a webhook's "task" carries it.
func taskOnly(raw json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	delete(m, "annotations")
	delete(m, "predictions")
	out, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return out
}
