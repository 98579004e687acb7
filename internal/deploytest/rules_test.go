package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func unmarshalYAML(t testing.TB, rel string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, rel), v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func loadAlerts(t testing.TB) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string      `json:"name"`
			Rules []alertRule `json:"rules"`
		} `json:"groups"`
	}
	unmarshalYAML(t, "deploy/prometheus/alerts.yml", &f)
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// The alerts the issue asks for: lag high, dead letters rising, export
// failures, no messages handled while the backlog grows, a sync that
// stopped (stuck in_progress), a target down.
var wantAlerts = []string{
	"LabelsyncNotificationLagHigh",
	"LabelsyncDeadLettersRising",
	"LabelsyncExportFailures",
	"LabelsyncBacklogNotConsumed",
	"LabelsyncSyncStalled",
	"LabelsyncTargetDown",
}

func TestAlertRules(t *testing.T) {
	t.Parallel()
	rules := loadAlerts(t)
	var names []string
	ops := string(readFile(t, "docs/operations.md"))
	for _, r := range rules {
		names = append(names, r.Alert)
		if r.Alert == "" {
			t.Errorf("a recording rule or a rule without a name: %+v (alerts.yml holds alerts only)", r)
			continue
		}
		for _, problem := range checkQuery(r.Expr) {
			t.Errorf("%s: %s\n  %s", r.Alert, problem, r.Expr)
		}
		if r.For == "" {
			t.Errorf("%s: no `for`: a single bad scrape would page", r.Alert)
		}
		if s := r.Labels["severity"]; s != "info" && s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want info, warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook", "runbook_url"} {
			if v := r.Annotations[a]; strings.TrimSpace(v) == "" || strings.Contains(v, "\n") {
				t.Errorf("%s: annotation %s is empty or more than one line", r.Alert, a)
			}
		}
		anchor := strings.ToLower(r.Alert)
		if want := "docs/operations.md#" + anchor; !strings.HasSuffix(r.Annotations["runbook_url"], want) {
			t.Errorf("%s: runbook_url %q does not end in %s", r.Alert, r.Annotations["runbook_url"], want)
		}
		if !regexp.MustCompile(`(?m)^#+ ` + r.Alert + `\s*$`).MatchString(ops) {
			t.Errorf("%s: docs/operations.md has no heading %q for its runbook_url", r.Alert, r.Alert)
		}
	}
	if !slices.Equal(names, wantAlerts) {
		t.Errorf("alerts %q, want %q", names, wantAlerts)
	}
}

// alerts_test.yml fires every alert at least once, and checks at least one
// moment when it must not fire.
func TestAlertUnitTestsCoverEveryAlert(t *testing.T) {
	t.Parallel()
	var f struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	unmarshalYAML(t, "deploy/prometheus/alerts_test.yml", &f)
	if !slices.Equal(f.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("rule_files %q, want [alerts.yml]", f.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range loadAlerts(t) {
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("%s: alerts_test.yml must test it firing (%t) and not firing (%t)", r.Alert, fires[r.Alert], quiet[r.Alert])
		}
	}
}

func TestPromtool(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = root(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("check", "rules", "deploy/prometheus/alerts.yml")
	run("test", "rules", "deploy/prometheus/alerts_test.yml")

	// docker-compose.yml's Prometheus configuration, with the rules file
	// where the container mounts it replaced by the repository's.
	cfg := strings.ReplaceAll(string(readFile(t, "deploy/prometheus/prometheus.yml")),
		"/etc/prometheus/alerts.yml", path(t, "deploy/prometheus/alerts.yml"))
	if !strings.Contains(cfg, path(t, "deploy/prometheus/alerts.yml")) {
		t.Error("deploy/prometheus/prometheus.yml does not load /etc/prometheus/alerts.yml, where docker-compose.yml mounts the rules")
	}
	file := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	run("check", "config", file)
}
