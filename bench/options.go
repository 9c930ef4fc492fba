// What the proxy's optional features cost the hit path: the same cached
// proxy with the admin server off, on (scraped once a second, as Prometheus
// would, more often than its usual 15 s), and with both rate limits on but
// far from limiting. The variants take turns run after run, so that the
// machine's drift spreads over all of them.

package main

import (
	"net/http"
	"strings"
	"time"
)

type optionsRow struct {
	name, flags string
	p1, p16     result
}

func optionsCost(lb *lab, redis *target, s settings) []optionsRow {
	adminAddr := freeAddr()
	variants := []struct {
		name  string
		flags []string
	}{
		{"admin off, no rate limits", nil},
		{"admin on, scraped every second", []string{"--admin-listen", adminAddr}},
		{"rate limits on, not limiting", []string{"--rate-limit", "1000000000", "--rate-limit-per-client", "1000000000"}},
	}
	var targets []*target
	rows := make([]optionsRow, len(variants))
	for i, v := range variants {
		t := lb.startProxy("redis-proxy (hits, "+v.name+")", *proxyBin, redis.addr,
			append([]string{"--ttl", "1h", "--capacity", "100000"}, v.flags...)...)
		t.backend = redis
		targets = append(targets, t)
		rows[i].name, rows[i].flags = v.name, strings.Join(v.flags, " ")
	}
	load(redis, keys, valueSize, targets...)

	stopScrapes := make(chan struct{})
	defer close(stopScrapes)
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopScrapes:
				return
			case <-tick.C:
				if res, err := http.Get("http://" + adminAddr + "/metrics"); err == nil {
					res.Body.Close()
				}
			}
		}
	}()

	for i, r := range takingTurns(targets, s) {
		rows[i].p1, rows[i].p16 = r[0], r[1]
		progress("options %-32s -P 1 %s, -P 16 %s", rows[i].name, r[0], r[1])
	}
	for _, t := range targets {
		lb.stop(t)
	}
	return rows
}

// takingTurns runs redis-benchmark -t get -c 50 against each target in
// turn, s.runs rounds at -P 1 and then at -P 16, so that the machine's drift
// spreads over all of them, and returns each target's median at both depths.
func takingTurns(targets []*target, s settings) [][2]result {
	medians := make([][2]result, len(targets))
	for d, p := range []int{1, 16} {
		n := s.requestsP1
		if p == 16 {
			n = s.requestsP16
		}
		runs := make([][]result, len(targets))
		for range s.runs {
			for i, t := range targets {
				runs[i] = append(runs[i], redisBenchmark(t, keys, 50, p, n))
			}
		}
		for i := range targets {
			medians[i][d] = middle(runs[i])
		}
	}
	return medians
}

func (rep *report) optionsMarkdown(w func(string, ...any)) {
	if len(rep.options) == 0 {
		return
	}
	base := rep.options[0]
	w("\n### What the options cost the hit path\n\n")
	w("The hits proxy (`--ttl 1h --capacity 100000`) three ways, taking turns run after run; redis-benchmark -t get -c 50, server CPU per request.\n\n")
	w("| variant | extra flags | -P 1 req/s | CPU µs/req | / first | -P 16 req/s | CPU µs/req | / first |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.options {
		w("| %s | `%s` | %s | %s | %s | %s | %s | %s |\n", r.name, r.flags,
			cell(r.p1, r.p1.err == ""), cpuCell(r.p1, r.p1.err == ""), ratio(r.p1, r.p1.err == "", base.p1, base.p1.err == ""),
			cell(r.p16, r.p16.err == ""), cpuCell(r.p16, r.p16.err == ""), ratio(r.p16, r.p16.err == "", base.p16, base.p16.err == ""))
	}
}
