// Package metrics defines labelsync's Prometheus metrics (SPEC §6). Metrics
// are registered on the Registerer the caller passes in, never on the global
// default registry, so tests and several components in one process do not
// collide.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics holds every labelsync metric. Components use the ones they need.
type Metrics struct {
	Notifications   *prometheus.CounterVec
	TasksEmitted    *prometheus.CounterVec
	NotificationLag prometheus.Histogram
	SyncObjects     *prometheus.CounterVec
	// SyncRunning is 1 while this process runs a sync of the storage, 0
	// after; SyncProgress is when that sync last moved (a page applied, an
	// annotation written). Together: a sync stuck in_progress.
	SyncRunning     *prometheus.GaugeVec
	SyncProgress    *prometheus.GaugeVec
	ExportOps       *prometheus.CounterVec
	DeadLetters     *prometheus.CounterVec
	WebhookRequests *prometheus.CounterVec

	// The Label Studio connector's (SPEC §8).
	LabelStudioRequests  *prometheus.CounterVec
	LabelStudioLag       prometheus.Histogram
	LabelStudioBatchSize prometheus.Histogram
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "labelsync_notifications_total",
			Help: "GCS notifications handled, by event type and first applicable outcome (ledger.Outcome).",
		}, []string{"event_type", "outcome"}),
		TasksEmitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "labelsync_tasks_emitted_total",
			Help: "Task events acknowledged by JetStream, by project and event.",
		}, []string{"project", "event"}),
		NotificationLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "labelsync_notification_lag_seconds",
			Help:    "Time from the GCS event time to the JetStream acknowledgement of its task events.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}),
		SyncObjects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "labelsync_sync_objects_total",
			Help: "Objects seen by sync (backfill) scans, by storage and outcome.",
		}, []string{"storage", "outcome"}),
		ExportOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "labelsync_export_operations_total",
			Help: "Target-storage operations, by op (write, delete, skip) and outcome.",
		}, []string{"op", "outcome"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "labelsync_deadletter_total",
			Help: "Inputs written to the dead-letter stream, by component and reason.",
		}, []string{"component", "reason"}),
		WebhookRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "labelsync_webhook_requests_total",
			Help: "Label Studio webhook requests, by outcome (accepted, skipped, unauthorized, invalid, too_large, unavailable).",
		}, []string{"outcome"}),
	}
	m.SyncRunning = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "labelsync_sync_running",
		Help: "1 while this process runs a sync of the storage (kind import or export), 0 once it ended.",
	}, []string{"kind", "storage"})
	m.SyncProgress = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "labelsync_sync_progress_timestamp_seconds",
		Help: "When the storage's sync in this process last made progress (start, a page applied, annotations written), Unix seconds.",
	}, []string{"kind", "storage"})
	m.LabelStudioRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "labelsync_labelstudio_requests_total",
		Help: "Label Studio API requests, by op (import, update, delete, lookup, …) and outcome (ok, throttled, unavailable, unauthorized, not_found, rejected).",
	}, []string{"op", "outcome"})
	m.LabelStudioLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "labelsync_labelstudio_lag_seconds",
		Help:    "Time from a task event's publication to Label Studio's acknowledgement of its effect.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300, 900, 3600},
	})
	m.LabelStudioBatchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "labelsync_labelstudio_import_batch_size",
		Help:    "Tasks per Label Studio import request.",
		Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500},
	})
	reg.MustRegister(m.Notifications, m.TasksEmitted, m.NotificationLag, m.SyncObjects, m.ExportOps, m.DeadLetters, m.WebhookRequests,
		m.LabelStudioRequests, m.LabelStudioLag, m.LabelStudioBatchSize, m.SyncRunning, m.SyncProgress)
	return m
}
