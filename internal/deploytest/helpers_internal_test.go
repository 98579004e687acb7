package deploytest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr string
		want query
	}{
		{
			`sum by (outcome) (rate(labelsync_notifications_total[$__rate_interval]))`,
			query{metrics: []string{"labelsync_notifications_total"}, labels: []string{"outcome"}},
		},
		{
			`histogram_quantile(0.99, sum by (le) (rate(labelsync_notification_lag_seconds_bucket[5m]))) > 60`,
			query{metrics: []string{"labelsync_notification_lag_seconds_bucket"}, labels: []string{"le"}},
		},
		{
			`(sum(rate(a_total[10m])) or on() vector(0)) == 0 and on() sum(delta(b{subscription_id=~"x{1}.*", c!="}"}[10m])) > 0`,
			query{metrics: []string{"a_total", "b"}, labels: []string{"subscription_id", "c"}},
		},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, parseQuery(tt.expr), cmp.AllowUnexported(query{})); diff != "" {
			t.Errorf("parseQuery(%q) (-want +got):\n%s", tt.expr, diff)
		}
	}
}

func TestCheckQuery(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string]bool{
		`sum by (outcome) (rate(labelsync_notifications_total[1m]))`:                   false,
		`sum by (le) (rate(labelsync_notification_lag_seconds_bucket[1m]))`:            false,
		`sum by (job, instance) (rate(process_cpu_seconds_total{job="x"}[1m]))`:        false,
		`sum by (outcome) (rate(labelsync_notification_total[1m]))`:                    true, // renamed metric
		`sum by (result) (rate(labelsync_notifications_total[1m]))`:                    true, // renamed label
		`sum(rate(labelsync_webhook_requests_total{status="401"}[1m]))`:                true,
		`sum(rate(labelsync_notifications_total_bucket[1m]))`:                          true, // not a histogram
		`sum by (subscription_id) (` + backlogMetric + `{subscription_id=~"l.*"})`:     false,
		`sum(rate(labelsync_labelstudio_lag_seconds_bucket[1m])) by (le)`:              false,
		`up{job=~"labelsync-worker|labelsync-exporter"} == 0`:                          false,
		`sum(go_goroutines{job=~"labelsync-.*"}) + sum(process_resident_memory_bytes)`: false,
	} {
		if got := checkQuery(expr); (len(got) > 0) != want {
			t.Errorf("checkQuery(%q) = %q, want problems: %t", expr, got, want)
		}
	}
}
