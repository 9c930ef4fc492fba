// Package docker holds the container files; its tests check, without
// docker (which the build machines do not run), what can be checked: that
// compose.yaml is valid YAML wiring what `make docker-test` expects, and
// that the Dockerfile's build step, run as written outside docker, gives a
// static binary that reports the version it was given.
package docker

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string                               `yaml:"image"`
			Build       struct{ Context, Dockerfile string } `yaml:"build"`
			Environment map[string]string                    `yaml:"environment"`
			DependsOn   []string                             `yaml:"depends_on"`
			Command     any                                  `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	proxy, ok := compose.Services["proxy"]
	if !ok || proxy.Build.Dockerfile != "docker/Dockerfile" || proxy.Build.Context != ".." {
		t.Fatalf("the proxy service does not build docker/Dockerfile from the repository root: %+v", proxy)
	}
	if _, err := os.Stat(filepath.Join(proxy.Build.Context, proxy.Build.Dockerfile)); err != nil {
		t.Fatal(err)
	}
	if proxy.Environment["REDIS_PROXY_REDIS"] != "redis:6379" || compose.Services["redis"].Image == "" {
		t.Fatalf("the proxy is not wired to the redis service: %+v", compose.Services)
	}
	if smoke := compose.Services["smoke"]; smoke.Command == nil || len(smoke.DependsOn) == 0 {
		t.Fatalf("no smoke test service: %+v", smoke)
	}
	makefile, err := os.ReadFile("../Makefile")
	if err != nil || !strings.Contains(string(makefile), "--exit-code-from smoke") {
		t.Fatal("make docker-test does not exit with the smoke test's status")
	}
}

// The Dockerfile's `go build` line, run as written (its output directed to
// a temporary one), builds a static binary stamped with the version: what
// the distroless image needs, as it has no C library.
func TestDockerfileBuildStep(t *testing.T) {
	if os.Getenv("DOCKER_BUILD_STEP") == "" {
		// A full -trimpath build: make test runs it on its own, after the
		// timing-sensitive system tests, with DOCKER_BUILD_STEP=1.
		t.Skip("set DOCKER_BUILD_STEP=1 to run the Dockerfile's build step")
	}
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .*) -o /out/redis-proxy (\./cmd/redis-proxy)$`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("no `RUN CGO_ENABLED=0 go build ... -o /out/redis-proxy ./cmd/redis-proxy` step in the Dockerfile")
	}
	out := filepath.Join(t.TempDir(), "redis-proxy")
	cmd := exec.Command("sh", "-c", m[1]+" -o "+out+" "+m[2])
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "VERSION=docker-test")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatal("the binary is dynamically linked")
		}
	}
	if v, err := exec.Command(out, "--version").Output(); err != nil || string(v) != "redis-proxy docker-test\n" {
		t.Fatalf("--version: %q %v", v, err)
	}
}
