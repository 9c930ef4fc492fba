// The admin HTTP server (--admin-listen): Prometheus metrics and the health
// checks load balancers and orchestrators ask for. Plain net/http, off the
// request path: every metric is read at scrape time from the counters the
// event loops, cache shards and backend keep anyway, so serving them adds
// nothing to a hit.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/lru"
	"github.com/redis-proxy/redis-proxy/server"
)

// buildVersion is version(), read once.
var buildVersion = sync.OnceValue(version)

// hotKeysShown is how many of the most read keys /debug/hotkeys lists.
const hotKeysShown = 20

// admin serves /metrics, /healthz, /readyz and /debug/hotkeys for one proxy.
type admin struct {
	srv          *server.Server
	cache        *lru.Cache
	be           *backend.Client
	invalidation bool          // tracking was asked for: not ready while it reconnects
	pprof        bool          // serve Go's profiles under /debug/pprof/ (--pprof)
	pingTimeout  time.Duration // how long /readyz waits for Redis's PONG
	stopping     atomic.Bool   // a signal arrived: not ready, so balancers stop sending
}

func (a *admin) handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(a, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok") // the process serves
	})
	mux.HandleFunc("GET /readyz", a.ready)
	if a.pprof {
		// Not /debug/pprof/cmdline: the command line may hold --redis's password.
		mux.HandleFunc("/debug/pprof/", a.guarded(pprof.Index)) // and every profile by name under it
		mux.HandleFunc("/debug/pprof/profile", a.guarded(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", a.guarded(pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", a.guarded(pprof.Trace))
	}
	mux.HandleFunc("GET /debug/hotkeys", a.guarded(func(w http.ResponseWriter, _ *http.Request) {
		type hotKey struct {
			Key   string `json:"key"`
			Reads uint64 `json:"reads"`
		}
		hot := []hotKey{}
		for _, h := range a.srv.HotKeys(hotKeysShown) {
			hot = append(hot, hotKey{h.Key, h.Reads})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(hot)
	}))
	return mux
}

// guarded serves h only to requests the client port would serve: with
// --require-pass, those carrying the password as a bearer token. What it
// guards tells of the data: hot keys name keys, profiles show memory.
func (a *admin) guarded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.srv.Authorized([]byte(r.Header.Get("Authorization"))) {
			w.Header().Set("WWW-Authenticate", server.BearerChallenge)
			http.Error(w, server.Unauthorized, http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

// ready answers 200 while the proxy should get traffic: Redis answers PING
// and invalidation tracking is on (or off by choice, or refused by Redis, in
// which case entries live out their TTLs); 503 with the reason otherwise,
// and from the moment SIGINT or SIGTERM arrives, before the drain.
func (a *admin) ready(w http.ResponseWriter, r *http.Request) {
	notReady := func(why string) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, why)
	}
	if a.stopping.Load() {
		notReady("shutting down")
		return
	}
	select {
	case <-a.srv.Listening():
	default:
		notReady("starting")
		return
	}
	// The PING runs apart, so that the answer is bounded by pingTimeout
	// even where rueidis waits for a dial without looking at the context.
	ctx, cancel := context.WithTimeout(r.Context(), a.pingTimeout)
	defer cancel()
	pinged := make(chan error, 1)
	go func() { pinged <- a.be.Ping(ctx) }()
	select {
	case err := <-pinged:
		if err != nil {
			notReady("redis: " + err.Error())
			return
		}
	case <-ctx.Done():
		notReady("redis: no PONG within " + a.pingTimeout.String())
		return
	}
	if state := a.be.TrackingState(); a.invalidation && state == "reconnecting" {
		notReady("invalidation tracking: " + state)
		return
	}
	fmt.Fprintln(w, "ready")
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("redis_proxy_"+name, help, labels, nil)
}

var (
	descRequests      = desc("requests_total", "Requests answered, by protocol (RESP commands, HTTP requests) and result: hit (from the cache), miss (fetched from Redis), stale (a stale value for a failed fetch), error, refused (over the proxy's limits), other (commands that read no key).", "protocol", "result")
	descHits          = desc("cache_hits_total", "Lookups answered from the cache (Redis's keyspace_hits).")
	descMisses        = desc("cache_misses_total", "Lookups the cache could not answer (Redis's keyspace_misses).")
	descEvictions     = desc("cache_evictions_total", "Entries dropped to make room.")
	descExpirations   = desc("cache_expirations_total", "Entries dropped because their deadline passed.")
	descInvalidations = desc("cache_invalidations_total", "Entries dropped because Redis said their key changed, or the cache was cleared.")
	descKeys          = desc("cache_keys", "Keys cached.")
	descBytes         = desc("cache_bytes", "Bytes of keys and values cached.")
	descArenaBytes    = desc("cache_arena_bytes", "Bytes the cache's arenas hold, used or free.")
	descRateLimited   = desc("rate_limited_total", "Key reads refused over --rate-limit (limit=\"proxy\") or --rate-limit-per-client (limit=\"client\"); also counted as requests with result=\"refused\".", "limit")
	descStale         = desc("stale_answers_total", "Failed fetches answered with a stale value (--stale-if-error).")
	descStreamed      = desc("streamed_values_total", "Large values streamed from Redis as they arrived (misses of keys the cache does not keep).")
	descFetches       = desc("backend_fetches_total", "GETs sent to Redis.")
	descErrors        = desc("backend_errors_total", "GETs that ended in an error (a missing key is not one).")
	descCoalesced     = desc("backend_coalesced_total", "Fetches that joined a GET of the same key already under way.")
	descQueued        = desc("backend_queued_jobs", "Batches of GETs waiting for a backend worker.")
	descPending       = desc("backend_answers_pending", "Fetches asked for whose answers have not reached their connections yet.")
	descUp            = desc("backend_up", "0 from a GET that fails to reach Redis until GETs have reached it for a second without a failure, else 1.")
	descTracking      = desc("tracking_state", "Invalidation tracking: 1 for the current state (on, off, reconnecting, unsupported).", "state")
	descOpen          = desc("connections_open", "Client connections open (counted against --max-clients).")
	descAccepted      = desc("connections_accepted_total", "Client connections accepted.")
	descRefused       = desc("connections_refused_total", "Client connections refused: over --max-clients (reason=\"max-clients\"), or turned away by protected mode (reason=\"protected-mode\").", "reason")
	descLoops         = desc("event_loops", "Event loops serving clients.")
	descLatency       = desc("backend_fetch_duration_seconds", "Round trip of a GET to Redis (the miss path only).")
	descBuild         = desc("build_info", "The proxy's version; always 1.", "version", "goversion")
)

// Describe sends nothing: the metrics are built at each scrape (an
// "unchecked" collector), from counters the proxy keeps anyway.
func (a *admin) Describe(chan<- *prometheus.Desc) {}

func (a *admin) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	ss, cs, bs := a.srv.Stats(), a.cache.Stats(), a.be.Stats()
	for r, name := range server.ResultNames {
		counter(descRequests, ss.RESP[r], "resp", name)
		counter(descRequests, ss.HTTP[r], "http", name)
	}
	counter(descHits, cs.Hits)
	counter(descMisses, cs.Misses)
	counter(descEvictions, cs.Evictions)
	counter(descExpirations, cs.Expirations)
	counter(descInvalidations, cs.Invalidations)
	gauge(descKeys, float64(cs.Len))
	gauge(descBytes, float64(cs.Bytes))
	gauge(descArenaBytes, float64(cs.ArenaBytes))
	counter(descStale, ss.StaleAnswers)
	counter(descStreamed, ss.Streamed)
	for l, name := range server.LimitNames {
		counter(descRateLimited, ss.RateLimited[l], name)
	}
	counter(descFetches, bs.Fetches)
	counter(descErrors, bs.Errors)
	counter(descCoalesced, bs.Coalesced)
	gauge(descQueued, float64(bs.Queued))
	gauge(descPending, float64(ss.InFlight))
	up := 1.0
	if bs.Down {
		up = 0
	}
	gauge(descUp, up)
	state := a.be.TrackingState()
	for _, s := range []string{"on", "off", "reconnecting", "unsupported"} {
		v := 0.0
		if s == state {
			v = 1
		}
		gauge(descTracking, v, s)
	}
	gauge(descOpen, float64(ss.Clients))
	counter(descAccepted, ss.Accepted)
	counter(descRefused, ss.Rejected, "max-clients")
	counter(descRefused, ss.Denied, "protected-mode")
	gauge(descLoops, float64(ss.Loops))
	buckets := make(map[float64]uint64, len(backend.LatencyBounds))
	for i, b := range backend.LatencyBounds {
		buckets[b] = bs.Latency.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(descLatency, bs.Latency.Count, bs.Latency.Sum.Seconds(), buckets)
	gauge(descBuild, 1, buildVersion(), runtime.Version())
}
