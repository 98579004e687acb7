package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/labelsync/labelsync/internal/metrics"
)

// root is the repository's root directory.
func root(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return dir
}

// path is a repository file's path.
func path(t testing.TB, rel string) string {
	t.Helper()
	return filepath.Join(root(t), filepath.FromSlash(rel))
}

func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tool finds a Prometheus tool on PATH. Without it the test skips, or
// fails when LABELSYNC_REQUIRE_PROMETHEUS=1.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " is not installed (Debian: apt-get install -y --no-install-recommends prometheus)"
	if os.Getenv("LABELSYNC_REQUIRE_PROMETHEUS") == "1" {
		t.Fatalf("%s, and LABELSYNC_REQUIRE_PROMETHEUS=1 requires it", msg)
	}
	t.Skipf("SKIPPED: %s; set LABELSYNC_REQUIRE_PROMETHEUS=1 to make this a failure", msg)
	return ""
}

// metric is one metric family the binaries export.
type metric struct {
	histogram bool
	labels    map[string]bool
}

// exportedMetrics are the families the worker and the exporter register:
// package metrics' and the Go and process collectors' (internal/worker,
// internal/exporter), with their variable labels.
var exportedMetrics = sync.OnceValue(func() map[string]metric {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	out := map[string]metric{}
	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range families {
		labels := map[string]bool{}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		out[f.GetName()] = metric{histogram: f.GetType() == dto.MetricType_HISTOGRAM, labels: labels}
	}
	// Vectors export nothing until a label set is used: describe them.
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Field(i).IsNil() {
			continue
		}
		_, isHistVec := c.(*prometheus.HistogramVec)
		_, isHist := c.(prometheus.Histogram)
		ch := make(chan *prometheus.Desc, 4)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			name, labels := parseDesc(d.String())
			out[name] = metric{histogram: isHist || isHistVec, labels: labels}
		}
	}
	return out
})

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}\}$`)
)

func parseDesc(s string) (string, map[string]bool) {
	labels := map[string]bool{}
	if m := descLabels.FindStringSubmatch(s); m != nil && m[1] != "" {
		for _, l := range strings.Split(m[1], ",") {
			labels[strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")")] = true
		}
	}
	name := ""
	if m := descName.FindStringSubmatch(s); m != nil {
		name = m[1]
	}
	return name, labels
}

// External metrics: Prometheus's own `up`, and the Pub/Sub backlog from
// Cloud Monitoring through stackdriver-exporter. They may return nothing
// in the end-to-end test.
const backlogMetric = "stackdriver_pubsub_subscription_pubsub_googleapis_com_subscription_num_undelivered_messages"

var externalMetrics = map[string]map[string]bool{
	"up":          {},
	backlogMetric: {"project_id": true, "subscription_id": true, "unit": true},
}

// Target labels every scraped series has.
var targetLabels = map[string]bool{"job": true, "instance": true}

// query is what a PromQL expression names: metric names and label names
// (in matchers and in by/without/on/ignoring/group_* lists).
type query struct {
	metrics []string
	labels  []string
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promMatchers = regexp.MustCompile(`\{([^}]*)\}`)
	promMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
	}
)

// parseQuery extracts what expr names. It is no PromQL parser (the real
// Prometheus test parses every expression); it is enough to find a metric
// or label that the binaries do not export, without Prometheus.
func parseQuery(expr string) query {
	var q query
	s := promString.ReplaceAllString(expr, `""`)
	s = promRange.ReplaceAllString(s, "")
	for _, m := range promGrouping.FindAllStringSubmatch(s, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				q.labels = append(q.labels, l)
			}
		}
	}
	s = promGrouping.ReplaceAllString(s, " ")
	for _, m := range promMatchers.FindAllStringSubmatch(s, -1) {
		for _, l := range promMatcher.FindAllStringSubmatch(m[1], -1) {
			q.labels = append(q.labels, l[1])
		}
	}
	s = promMatchers.ReplaceAllString(s, " ")
	for _, m := range promIdent.FindAllStringSubmatch(s, -1) {
		ident := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(m[0]), "("))
		if m[1] != "" || promKeywords[strings.ToLower(ident)] {
			continue // a function call or a keyword
		}
		q.metrics = append(q.metrics, ident)
	}
	return q
}

// checkQuery reports every metric of expr that the binaries do not
// export, and every label that none of its metrics has.
func checkQuery(expr string) []string {
	q := parseQuery(expr)
	var problems []string
	known := map[string]bool{}
	for k := range targetLabels {
		known[k] = true
	}
	if len(q.metrics) == 0 {
		problems = append(problems, "names no metric")
	}
	exported := exportedMetrics()
	for _, name := range q.metrics {
		if labels, ok := externalMetrics[name]; ok {
			for l := range labels {
				known[l] = true
			}
			continue
		}
		m, ok := exported[name]
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut && exported[base].histogram {
					m, ok = exported[base], true
					if suffix == "_bucket" {
						known["le"] = true
					}
				}
			}
		}
		if !ok {
			problems = append(problems, "metric "+name+" is not exported by the worker or the exporter")
			continue
		}
		for l := range m.labels {
			known[l] = true
		}
	}
	for _, l := range q.labels {
		if !known[l] {
			problems = append(problems, "label "+l+" is not a label of "+strings.Join(q.metrics, ", "))
		}
	}
	sort.Strings(problems)
	return problems
}
