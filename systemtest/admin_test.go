package systemtest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// adminGet fetches path from the admin server at addr.
func adminGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// scrape parses /metrics with Prometheus's own text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return families
}

// value is the value of the metric name whose labels include labels.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok {
		t.Fatalf("no %s in /metrics", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s%v in /metrics", name, labels)
	return 0
}

// The admin server: /healthz while the process serves; /readyz while Redis
// answers, and not from the moment SIGTERM arrives; /metrics in Prometheus's
// format, counting what the proxy did.
func TestAdminServer(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	admin := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	p := startProxy(t, redis.Addr, "--admin-listen", admin, "--backend-timeout", "300ms")

	if code, body := adminGet(t, admin, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := adminGet(t, admin, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}

	before := scrape(t, admin)
	rc := dialRESP(t, p.addr)
	for range 3 {
		if got := respGet(rc, "k"); got != "v" {
			t.Fatalf("GET k: %q", got)
		}
	}
	if status, body := dialHTTP(t, p.addr).get("k"); status != 200 || body != "v" {
		t.Fatalf("HTTP GET /k: %d %q", status, body)
	}
	m := scrape(t, admin)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64 // for counters, the increase over the traffic above
	}{
		{"redis_proxy_requests_total", []string{"protocol", "resp"}, 3},
		{"redis_proxy_requests_total", []string{"protocol", "http"}, 1},
		{"redis_proxy_cache_hits_total", nil, 3},
		{"redis_proxy_cache_misses_total", nil, 1},
		{"redis_proxy_cache_keys", nil, 1},
		{"redis_proxy_backend_fetches_total", nil, 1},
		{"redis_proxy_backend_fetch_duration_seconds", nil, 1},
		{"redis_proxy_backend_up", nil, 1},
		{"redis_proxy_tracking_state", []string{"state", "on"}, 1},
		{"redis_proxy_connections_open", nil, 2},
		{"redis_proxy_event_loops", nil, 2},
	} {
		got := value(t, m, c.name, c.labels...)
		if strings.HasSuffix(c.name, "_total") || c.name == "redis_proxy_backend_fetch_duration_seconds" {
			got -= value(t, before, c.name, c.labels...)
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "redis_proxy_build_info"} {
		value(t, m, name)
	}

	// Redis stops answering: not ready, with the reason; back: ready again.
	redis.Pause()
	code, body := adminGet(t, admin, "/readyz")
	redis.Resume()
	if code != 503 || !strings.HasPrefix(body, "redis: ") {
		t.Fatalf("/readyz with Redis paused: %d %q", code, body)
	}
	eventually(t, "ready again", func() string {
		if code, body := adminGet(t, admin, "/readyz"); code != 200 {
			return fmt.Sprintf("%d %q", code, body)
		}
		return ""
	})

	// SIGTERM while a miss is held up: not ready at once, while the proxy
	// still drains (the miss is answered once Redis is back).
	redis.Pause()
	rc.send([]string{"GET", "held"})
	time.Sleep(50 * time.Millisecond) // the GET reaches the held Redis
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not ready after SIGTERM", func() string {
		if code, body := adminGet(t, admin, "/readyz"); code != 503 || body != "shutting down\n" {
			return fmt.Sprintf("%d %q", code, body)
		}
		return ""
	})
	if code, _ := adminGet(t, admin, "/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d", code)
	}
	redis.Resume()
	if v := rc.read(); v.Type().String() != "Error" && !v.IsNull() {
		t.Fatalf("the held GET was answered %s", show(v))
	}
}
