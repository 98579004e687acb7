package deploytest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// dashboard is what the tests read of deploy/grafana/labelsync.json.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int                      `json:"id"`
	Type        string                   `json:"type"`
	Title       string                   `json:"title"`
	Description string                   `json:"description"`
	Datasource  *datasourceRef           `json:"datasource"`
	GridPos     struct{ H, W, X, Y int } `json:"gridPos"`
	Targets     []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, "deploy/grafana/labelsync.json"), &d); err != nil {
		t.Fatalf("deploy/grafana/labelsync.json: %v", err)
	}
	return d
}

// panels are the dashboard's panels that query, rows' included.
func (d dashboard) queryPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

// The panels the issue asks for, each of which must return data in the
// end-to-end test (a worker and an exporter with a little traffic).
var corePanels = []string{
	"Notifications handled",
	"Notification lag p99",
	"Dead letters in the last hour",
	"Targets up",
	"Notifications by outcome",
	"Tasks emitted by project and event",
	"Notification lag p50 / p99",
	"Dead letters by component and reason",
	"Webhook rate and errors",
	"Sync progress by storage and outcome",
	"Sync status: running, and seconds since progress",
	"Export operations by outcome",
	"CPU",
	"Memory (RSS)",
	"Goroutines",
}

// Panels that may be empty there: the Pub/Sub backlog comes from Cloud
// Monitoring, the Label Studio connector is off.
var optionalPanels = []string{
	"Pub/Sub backlog (Cloud Monitoring)",
	"Label Studio requests by op and outcome",
	"Label Studio lag p50 / p99",
}

func TestDashboardStructure(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	if d.UID != "labelsync" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want uid labelsync, a title, schemaVersion >= 36", d.UID, d.Title, d.SchemaVersion)
	}
	hasDatasourceVar := false
	for _, v := range d.Templating.List {
		hasDatasourceVar = hasDatasourceVar || (v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus")
	}
	if !hasDatasourceVar {
		t.Error("no `datasource` variable of type datasource (query prometheus): panels select their data source through it")
	}

	ids := map[int]bool{}
	titles := map[string]bool{}
	var cells [200][24]string // which panel occupies each grid cell
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	for _, p := range all {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 || ids[p.ID] {
			t.Errorf("%s: id missing or repeated", name)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 || g.Y+g.H > len(cells) {
			t.Errorf("%s: gridPos %+v is outside the 24-column grid", name, g)
			continue
		}
		for y := g.Y; y < g.Y+g.H; y++ {
			for x := g.X; x < g.X+g.W; x++ {
				if cells[y][x] != "" {
					t.Errorf("%s overlaps %s at x=%d y=%d", name, cells[y][x], x, y)
				}
				cells[y][x] = name
			}
		}
		if p.Type == "row" {
			continue
		}
		if titles[p.Title] {
			t.Errorf("%s: title repeated", name)
		}
		titles[p.Title] = true
		if p.Description == "" {
			t.Errorf("%s: no description (an on-call engineer hovers it to learn what the panel shows)", name)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want uid ${datasource}", name, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", name)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: target %q has no expression or a missing or repeated refId", name, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: target %s datasource %+v, want uid ${datasource}", name, tg.RefID, tg.Datasource)
			}
		}
	}
	for _, title := range append(append([]string{}, corePanels...), optionalPanels...) {
		if !titles[title] {
			t.Errorf("no panel %q", title)
		}
	}
}

// Every expression names only metrics and labels the binaries export.
func TestDashboardMetrics(t *testing.T) {
	t.Parallel()
	for _, p := range loadDashboard(t).queryPanels() {
		for _, tg := range p.Targets {
			for _, problem := range checkQuery(tg.Expr) {
				t.Errorf("panel %q target %s: %s\n  %s", p.Title, tg.RefID, problem, tg.Expr)
			}
		}
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	t.Parallel()
	var ds struct {
		Datasources []struct {
			UID  string `json:"uid"`
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"datasources"`
	}
	unmarshalYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("datasources %+v: want one prometheus data source at http://prometheus:9090 (docker-compose.yml's prometheus)", ds.Datasources)
	}
	var dash struct {
		Providers []struct {
			Type    string `json:"type"`
			Options struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	unmarshalYAML(t, "deploy/grafana/provisioning/dashboards/labelsync.yml", &dash)
	if len(dash.Providers) != 1 || dash.Providers[0].Type != "file" || dash.Providers[0].Options.Path != grafanaDashboards {
		t.Errorf("dashboard providers %+v: want one file provider at %s, where docker-compose.yml mounts the dashboard", dash.Providers, grafanaDashboards)
	}
}

// grafanaDashboards is where Grafana's provisioning reads dashboards and
// docker-compose.yml mounts labelsync.json.
const grafanaDashboards = "/var/lib/grafana/dashboards"
