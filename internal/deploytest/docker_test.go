package deploytest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	stage string // the stage it belongs to
	cmd   string // upper case
	args  string
}

func dockerfile(t testing.TB) []instruction {
	t.Helper()
	var out []instruction
	stage := ""
	text := strings.ReplaceAll(string(readFile(t, "Dockerfile")), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, args, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			f := strings.Fields(args)
			stage = ""
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stage = f[2]
			}
		}
		out = append(out, instruction{stage: stage, cmd: cmd, args: strings.TrimSpace(args)})
	}
	return out
}

func dockerfileStages(t testing.TB) []string {
	t.Helper()
	var stages []string
	for _, in := range dockerfile(t) {
		if in.cmd == "FROM" {
			stages = append(stages, in.stage)
		}
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	ins := dockerfile(t)
	stages := dockerfileStages(t)
	if !slices.Equal(stages, []string{"build", "seed", "runtime"}) {
		t.Errorf("stages %q, want build, seed and runtime, runtime last (the default target)", stages)
	}
	goMod := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(readFile(t, "go.mod")))
	args := map[string]string{}
	var runtime []instruction
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if k, v, ok := strings.Cut(in.args, "="); ok {
				args[k] = v
			}
		case "FROM":
			image := strings.Fields(in.args)[0]
			image = strings.ReplaceAll(image, "${GO_VERSION}", args["GO_VERSION"])
			ref, err := reference.ParseNormalizedNamed(image)
			if err != nil {
				t.Errorf("FROM %s: %v", image, err)
			} else if tagged, ok := ref.(reference.Tagged); !ok || tagged.Tag() == "latest" {
				t.Errorf("FROM %s is not pinned to a version tag", image)
			}
		case "COPY":
			if strings.Contains(in.args, "--from=") {
				continue
			}
			f := strings.Fields(in.args)
			for _, src := range f[:len(f)-1] {
				if strings.HasPrefix(src, "--") {
					continue
				}
				if _, err := os.Stat(path(t, src)); err != nil {
					t.Errorf("COPY %s: %v", src, err)
				}
				if dockerIgnored(t, src) {
					t.Errorf("COPY %s: .dockerignore excludes it", src)
				}
			}
		}
		if in.stage == "runtime" {
			runtime = append(runtime, in)
		}
	}
	if goMod == nil || args["GO_VERSION"] != goMod[1] {
		t.Errorf("ARG GO_VERSION=%s, want go.mod's go %v", args["GO_VERSION"], goMod)
	}
	last := func(cmd string) string {
		got := ""
		for _, in := range runtime {
			if in.cmd == cmd {
				got = in.args
			}
		}
		return got
	}
	if u := last("USER"); u == "" || u == "root" || strings.HasPrefix(u, "0") {
		t.Errorf("runtime USER %q: want a non-root user", u)
	}
	if hc := last("HEALTHCHECK"); !strings.Contains(hc, `"/usr/local/bin/healthcheck"`) {
		t.Errorf("runtime HEALTHCHECK %q: want the healthcheck binary (GET /healthz)", hc)
	}
	if ep := last("ENTRYPOINT"); ep != `["/usr/local/bin/worker"]` {
		t.Errorf("runtime ENTRYPOINT %s, want the worker", ep)
	}
	// Static binaries of every command.
	text := string(readFile(t, "Dockerfile"))
	if !strings.Contains(text, "CGO_ENABLED=0") || !strings.Contains(text, "./cmd/... ./deploy/healthcheck") {
		t.Error("the build stage must build ./cmd/... and ./deploy/healthcheck with CGO_ENABLED=0 (static binaries)")
	}
	cmds, err := filepath.Glob(path(t, "cmd/*/main.go"))
	if err != nil || len(cmds) < 4 {
		t.Errorf("cmd/*/main.go: %d commands, %v", len(cmds), err)
	}
}

// dockerIgnored reports whether .dockerignore excludes rel (its patterns
// as Docker matches them, without exceptions, which it does not use).
func dockerIgnored(t testing.TB, rel string) bool {
	t.Helper()
	rel = filepath.ToSlash(filepath.Clean(rel))
	for _, line := range strings.Split(string(readFile(t, ".dockerignore")), "\n") {
		pat := strings.TrimSpace(line)
		if pat == "" || strings.HasPrefix(pat, "#") {
			continue
		}
		if strings.HasPrefix(pat, "!") {
			t.Fatalf(".dockerignore: exception %q: teach dockerIgnored about them", pat)
		}
		pat = strings.Trim(pat, "/")
		for p := rel; p != "."; p = filepath.ToSlash(filepath.Dir(p)) {
			if ok, _ := filepath.Match(pat, p); ok {
				return true
			}
		}
	}
	return false
}

func TestDockerignoreKeepsTheBuild(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"go.mod", "go.sum", "cmd/worker/main.go", "internal/worker/worker.go", "deploy/healthcheck/main.go", "deploy/compose/seed.sh", "README.md"} {
		if dockerIgnored(t, p) {
			t.Errorf(".dockerignore excludes %s, which the image builds from", p)
		}
	}
	for _, p := range []string{"bin/worker", ".git/HEAD", "deploy/terraform/main.tf"} {
		if !dockerIgnored(t, p) {
			t.Errorf(".dockerignore keeps %s in the build context", p)
		}
	}
}
