// The Grafana dashboard, docker/grafana-dashboard.json, against the real
// proxy: every metric its queries use (panel targets and template variables)
// and every label they match, group or name a legend by must be in what the
// proxy's /metrics serves, so that a metric or label renamed in
// cmd/redis-proxy/admin.go fails here instead of leaving an empty panel.

package systemtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// dashboardPanel is what the test reads of a panel; a row holds its panels
// in Panels when it is collapsed.
type dashboardPanel struct {
	Title   string           `json:"title"`
	Type    string           `json:"type"`
	Panels  []dashboardPanel `json:"panels"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

// dashboardQuery is one PromQL query of the dashboard and where it is.
type dashboardQuery struct {
	where, expr, legend string
	panel               bool // a panel's target, not a template variable's query
}

var (
	// A selector: a metric name the proxy exports (its own, the Go
	// collector's, the process collector's) and its matchers if any; the
	// label names in the matchers.
	dashSelector = regexp.MustCompile(`\b((?:redis_proxy|process|go)_[a-zA-Z0-9_]*)(?:\s*\{([^}]*)\})?`)
	dashMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	// Labels grouped by, and labels a legend shows.
	dashGrouping = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	dashLegend   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	// label_values(metric, label) in a template variable.
	dashLabelValues = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// targetLabels are the labels Prometheus adds to every series it scrapes.
var targetLabels = []string{"instance", "job"}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../docker/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string           `json:"title"`
		UID        string           `json:"uid"`
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("not a dashboard: title %q, uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}

	var queries []dashboardQuery
	var walk func(panels []dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, p := range panels {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				queries = append(queries, dashboardQuery{fmt.Sprintf("panel %q", p.Title), tg.Expr, tg.LegendFormat, true})
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		// A string, or {"query": "...", ...} as Grafana 10's editor writes it.
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("variable %q: query %s", v.Name, v.Query)
			}
			q = obj.Query
		}
		queries = append(queries, dashboardQuery{where: fmt.Sprintf("variable %q", v.Name), expr: q})
	}

	// The proxy, after a miss, hits over RESP and HTTP, and a missing key.
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	admin := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	p := startProxy(t, redis.Addr, "--admin-listen", admin)
	rc := dialRESP(t, p.addr)
	for range 3 {
		if got := respGet(rc, "k"); got != "v" {
			t.Fatalf("GET k: %q", got)
		}
	}
	respGet(rc, "nothere")
	if status, body := dialHTTP(t, p.addr).get("k"); status != 200 || body != "v" {
		t.Fatalf("HTTP GET /k: %d %q", status, body)
	}
	families := scrape(t, admin)

	// family finds the family a name in a query stands for: itself, or the
	// histogram or summary it is a _bucket, _sum or _count series of.
	family := func(name string) *dto.MetricFamily {
		if f, ok := families[name]; ok {
			return f
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base, ok := strings.CutSuffix(name, suffix)
			if !ok {
				continue
			}
			f, ok := families[base]
			if ok && (f.GetType() == dto.MetricType_HISTOGRAM || suffix != "_bucket" && f.GetType() == dto.MetricType_SUMMARY) {
				return f
			}
		}
		return nil
	}
	// labels are the label names a family's series have once scraped.
	labels := func(f *dto.MetricFamily) []string {
		names := slices.Clone(targetLabels)
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			names = append(names, "le")
		case dto.MetricType_SUMMARY:
			names = append(names, "quantile")
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if !slices.Contains(names, l.GetName()) {
					names = append(names, l.GetName())
				}
			}
		}
		return names
	}

	problems := map[string]bool{} // each said once, however many panels share it
	missing := map[string]bool{}
	for _, q := range queries {
		if q.expr == "" {
			t.Errorf("%s: empty query", q.where)
			continue
		}
		selectors := dashSelector.FindAllStringSubmatch(q.expr, -1)
		if len(selectors) == 0 {
			t.Errorf("%s uses no redis_proxy_, go_ or process_ metric: %q", q.where, q.expr)
		}
		// known: the label names of the families the query reads (all of
		// them, unless one is missing).
		var known []string
		allFound := true
		for _, m := range selectors {
			name := m[1]
			f := family(name)
			if f == nil {
				allFound = false
				missing[name] = true
				problems[fmt.Sprintf("%s not in /metrics (used by %s)", name, q.where)] = true
				continue
			}
			for _, l := range labels(f) {
				if !slices.Contains(known, l) {
					known = append(known, l)
				}
			}
		}
		for _, m := range selectors {
			if q.panel && !strings.Contains(m[2], `instance=~"$instance"`) {
				t.Errorf("%s: %s is not filtered by instance=~\"$instance\"", q.where, m[0])
			}
			f := family(m[1])
			if f == nil {
				continue
			}
			for _, lm := range dashMatcher.FindAllStringSubmatch(m[2], -1) {
				if have := labels(f); !slices.Contains(have, lm[1]) {
					problems[fmt.Sprintf("%s has no label %q (has %s; used by %s)", m[1], lm[1], strings.Join(have, ", "), q.where)] = true
				}
			}
		}
		for _, m := range dashLabelValues.FindAllStringSubmatch(q.expr, -1) {
			if f := family(m[1]); f != nil && !slices.Contains(labels(f), m[2]) {
				problems[fmt.Sprintf("%s has no label %q (used by %s)", m[1], m[2], q.where)] = true
			}
		}
		var grouped []string
		for _, m := range dashGrouping.FindAllStringSubmatch(q.expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				if l = strings.TrimSpace(l); l != "" {
					grouped = append(grouped, l)
				}
			}
		}
		for _, m := range dashLegend.FindAllStringSubmatch(q.legend, -1) {
			grouped = append(grouped, m[1])
		}
		for _, l := range grouped {
			if allFound && !slices.Contains(known, l) {
				problems[fmt.Sprintf("no metric of %s has label %q (they have %s)", q.where, l, strings.Join(known, ", "))] = true
			}
		}
	}
	for _, msg := range slices.Sorted(maps.Keys(problems)) {
		t.Error(msg)
	}
	if len(missing) > 0 {
		t.Errorf("metrics the dashboard uses that /metrics lacks: %s", strings.Join(slices.Sorted(maps.Keys(missing)), ", "))
	}
	t.Logf("%d queries checked against %d metric families", len(queries), len(families))
}
