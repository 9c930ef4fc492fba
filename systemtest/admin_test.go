package systemtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
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
	redis.Do("LPUSH", "list", "x")
	admin := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	// A held GET must outlast the checks made while the proxy drains.
	p := startProxy(t, redis.Addr, "--admin-listen", admin, "--backend-timeout", "3s")

	if code, body := adminGet(t, admin, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := adminGet(t, admin, "/readyz"); code != 200 || body != "ready\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, _ := adminGet(t, admin, "/debug/pprof/"); code != 404 { // only with --pprof (TestRedisFaultsUnderLoad reads it)
		t.Fatalf("/debug/pprof/ without --pprof: %d", code)
	}

	before := scrape(t, admin)
	rc := dialRESP(t, p.addr)
	for range 3 {
		if got := respGet(rc, "k"); got != "v" {
			t.Fatalf("GET k: %q", got)
		}
	}
	hc := dialHTTP(t, p.addr)
	if status, body := hc.get("k"); status != 200 || body != "v" {
		t.Fatalf("HTTP GET /k: %d %q", status, body)
	}
	if status, _ := hc.get("nothere"); status != 404 {
		t.Fatalf("HTTP GET /nothere: %d", status)
	}
	if got := respGet(rc, "nothere"); got != "(nil)" {
		t.Fatalf("GET nothere: %q", got)
	}
	for _, cmd := range [][]string{{"GET", "list"}, {"SET", "k", "w"}, {"GET"}, {"PING"}, {"MGET", "k", "k"}, {"MGET", "k", "absent"}} {
		rc.do(cmd...)
	}
	m := scrape(t, admin)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64 // for counters, the increase over the traffic above
	}{
		{"redis_proxy_requests_total", []string{"protocol", "resp", "result", "hit"}, 3},     // GET k twice, MGET k k
		{"redis_proxy_requests_total", []string{"protocol", "resp", "result", "miss"}, 3},    // GET k, GET nothere, MGET k absent
		{"redis_proxy_requests_total", []string{"protocol", "resp", "result", "error"}, 3},   // WRONGTYPE, SET, GET without a key
		{"redis_proxy_requests_total", []string{"protocol", "resp", "result", "other"}, 1},   // PING
		{"redis_proxy_requests_total", []string{"protocol", "resp", "result", "stale"}, 0},   // no --stale-if-error
		{"redis_proxy_requests_total", []string{"protocol", "resp", "result", "refused"}, 0}, // within the limits
		{"redis_proxy_requests_total", []string{"protocol", "http", "result", "hit"}, 1},     // GET /k
		{"redis_proxy_requests_total", []string{"protocol", "http", "result", "miss"}, 1},    // GET /nothere
		{"redis_proxy_requests_total", []string{"protocol", "http", "result", "error"}, 0},   // none
		{"redis_proxy_cache_hits_total", nil, 6},                                             // GET k twice, GET /k, MGET's k three times
		{"redis_proxy_cache_misses_total", nil, 5},                                           // GET k, nothere twice, list, absent
		{"redis_proxy_rate_limited_total", []string{"limit", "proxy"}, 0},                    // no --rate-limit
		{"redis_proxy_cache_keys", nil, 1},
		{"redis_proxy_backend_fetches_total", nil, 5},
		{"redis_proxy_backend_fetch_duration_seconds", nil, 5},
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

	// The hot keys: about 256 reads of k in a row lead the sample.
	for range 256 {
		rc.send([]string{"GET", "k"})
	}
	for range 256 {
		rc.read()
	}
	code, body := adminGet(t, admin, "/debug/hotkeys")
	var hot []struct {
		Key   string `json:"key"`
		Reads int    `json:"reads"`
	}
	if err := json.Unmarshal([]byte(body), &hot); code != 200 || err != nil || len(hot) == 0 || hot[0].Key != "k" || hot[0].Reads < 192 {
		t.Fatalf("/debug/hotkeys: %d %q (%v)", code, body, err)
	}
	if info := rc.do("INFO", "hotkeys").String(); !strings.HasPrefix(info, fmt.Sprintf("# Hotkeys\r\nhotkey_1:reads=%d,key=\"k\"\r\n", hot[0].Reads)) {
		t.Fatalf("INFO hotkeys: %q", info)
	}

	// Redis stops answering: not ready, with the reason; back: ready again.
	redis.Pause()
	code, body = adminGet(t, admin, "/readyz")
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
	// still drains (the miss is answered once Redis is back, within its 3 s).
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

// --log-format json: every line is one JSON object; the "started" line gives
// the configuration without the password; Redis going away and coming back,
// tracking lost and regained, and refused clients each give one line.
func TestJSONLogs(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	_, port, _ := net.SplitHostPort(redis.Addr)
	p := startProxy(t, "redis://default:s3cret@127.0.0.1:"+port, "--log-format", "json", "--log-level", "info", "--max-clients", "2")
	admitted := func() *respConn {
		var rc *respConn
		eventually(t, "a client admitted (the start-up probes' connections may still count)", func() string {
			rc = dialRESP(t, p.addr)
			if v := rc.do("PING"); v.String() != "PONG" {
				rc.c.Close()
				return show(v)
			}
			return ""
		})
		return rc
	}
	rc, _ := admitted(), admitted()
	if got := respGet(rc, "k"); got != "v" {
		t.Fatalf("GET k: %q", got)
	}
	refused := dialRESP(t, p.addr) // over --max-clients 2
	refused.write("PING\r\n")
	if v := refused.read(); !strings.Contains(v.String(), "max number of clients") {
		t.Fatalf("over --max-clients: %s", show(v))
	}
	refused.expectClosed()
	// Counted as refused (so may the start-up probes' connections have been).
	info := rc.do("INFO", "stats").String()
	if counts := infoField(t, info, "resp_requests"); !strings.HasPrefix(counts, "hit=") || strings.Contains(counts, ",refused=0,") {
		t.Fatalf("the refusal is not counted:\n%s", info)
	}

	redis.Stop()
	if got := respGet(rc, "gone"); !strings.HasPrefix(got, "ERR: ERR backend unavailable") {
		t.Fatalf("GET with Redis stopped: %q", got)
	}
	redis.Restart()
	redis.Do("SET", "back", "1")
	eventually(t, "a GET through the restarted Redis", func() string {
		if got := respGet(rc, "back"); got != "1" {
			return got
		}
		return ""
	})
	want := []string{"started", "invalidation tracking on", "clients refused: --max-clients reached",
		"Redis unreachable; misses fail until it answers (cached keys are still served)", "Redis answers again",
		"invalidation tracking lost; reconnecting (keys cached meanwhile are revalidated)"}
	eventually(t, "every line logged", func() string {
		seen := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
			var entry map[string]any
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("not a JSON line: %q", line)
			}
			msg, _ := entry["msg"].(string)
			seen[msg] = true
			if msg == "started" && entry["redis"] != "redis://default:xxxxx@127.0.0.1:"+port {
				t.Fatalf("start-up line: redis %v", entry["redis"])
			}
		}
		for _, w := range want {
			if !seen[w] {
				return "no line " + w
			}
		}
		return ""
	})
	if strings.Contains(p.stderr.String(), "s3cret") {
		t.Fatal("the password was logged")
	}
}

// INFO is laid out as Redis lays it out: every line in a "# Section", the
// sections asked for (in any case) or all of them, nothing for an unknown
// one; after a known sequence of requests its counts are exact.
func TestInfoSections(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr)
	rc := dialRESP(t, p.addr)
	before := rc.do("INFO", "stats").String()
	count := func(info, field string) int {
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("%s: %q", field, v)
				}
				return n
			}
		}
		t.Fatalf("no %s in %q", field, info)
		return 0
	}
	for range 3 {
		respGet(rc, "k")
	}
	respGet(rc, "nothere")
	dialHTTP(t, p.addr).get("k")
	after := rc.do("INFO", "STATS").String()
	for field, want := range map[string]int{
		"keyspace_hits":            3, // the 2nd and 3rd GET k, and the HTTP one
		"keyspace_misses":          2, // the 1st GET k, and nothere
		"total_commands_processed": 5, // 4 GETs and this INFO (the one before counted before it was read)
		"total_http_requests":      1,
	} {
		if got := count(after, field) - count(before, field); got != want {
			t.Errorf("%s grew by %d, want %d", field, got, want)
		}
	}
	if strings.Contains(after, "# Server") || !strings.HasPrefix(after, "# Stats\r\n") {
		t.Fatalf("INFO STATS:\n%s", after)
	}
	if got := rc.do("INFO", "nosuch").String(); got != "" {
		t.Fatalf("INFO nosuch: %q", got)
	}
	two := rc.do("INFO", "backend", "keyspace").String()
	if !strings.HasPrefix(two, "# Backend\r\n") || !strings.Contains(two, "\r\n\r\n# Keyspace\r\ndb0:keys=1,") {
		t.Fatalf("INFO backend keyspace:\n%s", two)
	}
	section := ""
	for _, line := range strings.Split(rc.do("INFO").String(), "\r\n") {
		switch {
		case strings.HasPrefix(line, "# "):
			section = line
		case line != "" && section == "":
			t.Fatalf("INFO line outside a section: %q", line)
		}
	}
	if section != "# Keyspace" {
		t.Fatalf("INFO's last section: %q", section)
	}
}
