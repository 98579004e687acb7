package deploytest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/distribution/reference"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/exporter"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/worker"
)

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir := root(t)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir),
		cli.WithEnv(nil), // the file alone decides, not this machine's environment
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

// Variables another engineer is adding; docker-compose.yml sets them
// already. Remove a name once its Config field exists.
var pendingVariables = map[string]bool{"LABELSYNC_STREAM_REPLICAS": true}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	want := []string{"exporter", "gcs", "grafana", "nats-1", "nats-2", "nats-3", "prometheus", "pubsub", "seed", "worker"}
	if got := p.ServiceNames(); !slices.Equal(sorted(got), want) {
		t.Errorf("services %q, want %q", sorted(got), want)
	}
	stages := dockerfileStages(t)
	published := map[string]string{}
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		// Images: pinned, well-formed; builds: a Dockerfile stage.
		if s.Build != nil {
			if s.Build.Context != root(t) || s.Build.Dockerfile != "Dockerfile" {
				t.Errorf("%s: build context %q dockerfile %q, want the repository and its Dockerfile", name, s.Build.Context, s.Build.Dockerfile)
			}
			if !slices.Contains(stages, s.Build.Target) {
				t.Errorf("%s: build target %q is not a Dockerfile stage (%q)", name, s.Build.Target, stages)
			}
		}
		ref, err := reference.ParseNormalizedNamed(s.Image)
		if err != nil {
			t.Errorf("%s: image %q: %v", name, s.Image, err)
		} else if tagged, ok := ref.(reference.Tagged); !ok || tagged.Tag() == "latest" {
			t.Errorf("%s: image %q is not pinned to a version tag", name, s.Image)
		}
		// Volumes: bind sources exist, named volumes are declared.
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				rel, err := filepath.Rel(root(t), v.Source)
				if err != nil || strings.HasPrefix(rel, "..") {
					t.Errorf("%s: bind mount %s is outside the repository", name, v.Source)
				} else if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s: bind mount source %s: %v", name, rel, err)
				}
				if !v.ReadOnly {
					t.Errorf("%s: bind mount %s is writable; mount repository files read-only", name, rel)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s: volume %q is not declared", name, v.Source)
				}
			default:
				t.Errorf("%s: volume type %s", name, v.Type)
			}
		}
		// Ports: each host port once.
		for _, port := range s.Ports {
			if port.Published == "" || port.Target == 0 {
				t.Errorf("%s: port %+v publishes nothing", name, port)
				continue
			}
			if other, ok := published[port.Published]; ok {
				t.Errorf("%s: host port %s is also %s's", name, port.Published, other)
			}
			published[port.Published] = name
		}
		// Dependencies: they exist and can meet their condition.
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				t.Errorf("%s: depends on %q, which is not a service", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if target.HealthCheck == nil || len(target.HealthCheck.Test) == 0 {
					t.Errorf("%s: waits for %s to be healthy, which has no healthcheck", name, dep)
				}
			case types.ServiceConditionStarted:
			default:
				t.Errorf("%s: depends on %s with condition %q", name, dep, d.Condition)
			}
		}
		if name != "seed" && s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want unless-stopped", name, s.Restart)
		}
	}
	if s := p.Services["seed"]; s.Restart != types.RestartPolicyNo {
		t.Errorf("seed: restart %q, want no (a one-shot)", s.Restart)
	}
	for _, name := range []string{"worker", "exporter"} {
		hc := p.Services[name].HealthCheck
		if hc == nil || len(hc.Test) < 2 || hc.Test[1] != "/usr/local/bin/healthcheck" || !strings.HasSuffix(hc.Test[len(hc.Test)-1], "/readyz") {
			t.Errorf("%s: healthcheck %+v, want the image's /usr/local/bin/healthcheck on /readyz", name, hc)
		}
	}
}

// The worker's and exporter's environment is a valid configuration of
// each, with the NATS cluster at 3 replicas.
func TestComposeConfiguration(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	for _, name := range []string{"worker", "exporter"} {
		env := map[string]string{}
		for k, v := range p.Services[name].Environment {
			if v != nil {
				env[k] = *v
			}
		}
		known := configVariables(t, name)
		for k := range env {
			if !known[k] && !pendingVariables[k] && !standardVariables[k] {
				t.Errorf("%s: %s is not one of its variables", name, k)
			}
		}
		for k := range pendingVariables {
			if known[k] {
				t.Logf("%s now declares %s: drop it from pendingVariables", name, k)
			}
		}
		if env["LABELSYNC_STREAM_REPLICAS"] != "3" {
			t.Errorf("%s: LABELSYNC_STREAM_REPLICAS=%q, want 3 (three NATS nodes)", name, env["LABELSYNC_STREAM_REPLICAS"])
		}
		if n := strings.Count(env["LABELSYNC_NATS_URL"], "nats://nats-"); n != 3 {
			t.Errorf("%s: LABELSYNC_NATS_URL=%q, want the three NATS nodes", name, env["LABELSYNC_NATS_URL"])
		}
		var err error
		switch name {
		case "worker":
			_, err = worker.LoadConfig(context.Background(), nil, envconfig.MapLookuper(env))
		case "exporter":
			_, err = exporter.LoadConfig(context.Background(), nil, envconfig.MapLookuper(env))
		}
		if err != nil {
			t.Errorf("%s: its environment is not a valid configuration: %v", name, err)
		}
	}

	// Prometheus scrapes the worker and the exporter where they listen.
	prom := string(readFile(t, "deploy/prometheus/prometheus.yml"))
	for _, target := range []string{`"worker:8080"`, `"exporter:8081"`} {
		if !strings.Contains(prom, target) {
			t.Errorf("deploy/prometheus/prometheus.yml does not scrape %s", target)
		}
	}
	mounts := func(service, source, target string) {
		t.Helper()
		for _, v := range p.Services[service].Volumes {
			if v.Source == path(t, source) && v.Target == target {
				return
			}
		}
		t.Errorf("%s does not mount %s at %s", service, source, target)
	}
	mounts("prometheus", "deploy/prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml")
	mounts("prometheus", "deploy/prometheus/alerts.yml", "/etc/prometheus/alerts.yml")
	mounts("grafana", "deploy/grafana/provisioning", "/etc/grafana/provisioning")
	mounts("grafana", "deploy/grafana/labelsync.json", grafanaDashboards+"/labelsync.json")
	for _, name := range []string{"worker", "exporter"} {
		mounts(name, "deploy/compose/storages.json", "/etc/labelsync/storages.json")
	}
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		mounts(name, "deploy/compose/nats.conf", "/etc/nats/labelsync.conf")
		if got := p.Services[name].Environment["SERVER_NAME"]; got == nil || *got != name {
			t.Errorf("%s: SERVER_NAME %v, want %s", name, got, name)
		}
	}
}

// standardVariables are Google's and OpenTelemetry's, honoured as they
// define them (SPEC §5).
var standardVariables = map[string]bool{"PUBSUB_EMULATOR_HOST": true, "STORAGE_EMULATOR_HOST": true, "GOOGLE_APPLICATION_CREDENTIALS": true}

// configVariables are the environment variables a command's Config reads.
func configVariables(t testing.TB, command string) map[string]bool {
	t.Helper()
	var typ reflect.Type
	switch command {
	case "worker":
		typ = reflect.TypeFor[worker.Config]()
	case "exporter":
		typ = reflect.TypeFor[exporter.Config]()
	default:
		t.Fatalf("no command %q", command)
	}
	out := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if tag, ok := f.Tag.Lookup("env"); ok {
				out[strings.TrimSpace(strings.Split(tag, ",")[0])] = true
			} else if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
		}
	}
	walk(typ)
	if len(out) < 5 {
		t.Fatalf("%s.Config declares only %d variables: env tags changed?", command, len(out))
	}
	return out
}

// The NATS nodes' configuration parses as nats-server reads it:
// JetStream on file storage with sync_interval: always, one cluster of
// the three compose services. Not parallel: the file names $SERVER_NAME.
func TestComposeNATSConfig(t *testing.T) {
	t.Setenv("SERVER_NAME", "nats-2")
	opts, err := server.ProcessConfigFile(path(t, "deploy/compose/nats.conf"))
	if err != nil {
		t.Fatalf("deploy/compose/nats.conf: %v", err)
	}
	if !opts.JetStream || !opts.SyncAlways || opts.StoreDir != "/data" {
		t.Errorf("jetstream %t, sync_interval always %t, store_dir %q: want true, true, /data (the nats-N volume)", opts.JetStream, opts.SyncAlways, opts.StoreDir)
	}
	if opts.ServerName != "nats-2" || opts.Port != 4222 || opts.HTTPPort != 8222 {
		t.Errorf("server_name %q, port %d, http_port %d: want $SERVER_NAME, 4222, 8222 (the healthcheck's)", opts.ServerName, opts.Port, opts.HTTPPort)
	}
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
	}
	if want := []string{"nats-1:6222", "nats-2:6222", "nats-3:6222"}; opts.Cluster.Port != 6222 || !slices.Equal(routes, want) {
		t.Errorf("cluster port %d routes %q, want 6222 and %q", opts.Cluster.Port, routes, want)
	}
}

// docker compose up shows the same demo as make run: same storages.
func TestComposeDemoMatchesMakeRun(t *testing.T) {
	t.Parallel()
	run := string(readFile(t, "scripts/run.sh"))
	m := regexp.MustCompile(`(?s)storages\.json" <<'JSON'\n(.*?)\nJSON\n`).FindStringSubmatch(run)
	if m == nil {
		t.Fatal("scripts/run.sh: no storages.json here-document")
	}
	var fromRun, fromCompose any
	if err := json.Unmarshal([]byte(m[1]), &fromRun); err != nil {
		t.Fatalf("scripts/run.sh storages: %v", err)
	}
	if err := json.Unmarshal(readFile(t, "deploy/compose/storages.json"), &fromCompose); err != nil {
		t.Fatalf("deploy/compose/storages.json: %v", err)
	}
	if _, err := storages.Parse(readFile(t, "deploy/compose/storages.json"), storages.ParseOptions{}); err != nil {
		t.Errorf("deploy/compose/storages.json: %v", err)
	}
	if diff := cmp.Diff(fromRun, fromCompose); diff != "" {
		t.Errorf("deploy/compose/storages.json differs from scripts/run.sh's (-run +compose):\n%s", diff)
	}
	seed := string(readFile(t, "deploy/compose/seed.sh"))
	for _, step := range []string{`lsctl upload acme-raw "incoming/cat 1.jpg"`, "lsctl watch -count 1", "lsctl annotate --project 7 --task 1 --id 1 --label cat", "lsctl cat acme-labels annotations/1"} {
		if !strings.Contains(run, strings.Replace(step, "lsctl", `"$bin/lsctl"`, 1)) || !strings.Contains(seed, step) {
			t.Errorf("step %q is not in both scripts/run.sh and deploy/compose/seed.sh", step)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}
