// The proxy's counters and the RESP INFO answer built from them.
//
// Counters that the request path bumps live per event loop, so a loop only
// ever writes its own cache lines; INFO sums them. Hits, misses and the rest
// of the cache's counters are the cache's own, kept under its shard locks.

package server

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis-proxy/redis-proxy/proto"
)

// Result is how a request was answered, as the request counters tell it.
type Result uint8

const (
	ResultHit     Result = iota // every key it read came from the cache
	ResultMiss                  // a key was fetched from Redis (found or not)
	ResultStale                 // a failed fetch was answered with a stale value (--stale-if-error)
	ResultError                 // answered with an error: a bad request or a failed fetch
	ResultRefused               // refused by the proxy's limits (--max-clients, protected mode, the rate limits, a full backend queue)
	ResultOther                 // a command that reads no key (PING, INFO, HELLO...)
	NumResults
)

// ResultNames are the results' names in metrics and INFO.
var ResultNames = [NumResults]string{"hit", "miss", "stale", "error", "refused", "other"}

// loopStats are one loop's request counters, by protocol and result, written
// by the loop only.
type loopStats struct {
	resp        [NumResults]atomic.Uint64
	http        [NumResults]atomic.Uint64
	rateLimited [numLimits]atomic.Uint64 // reads refused, by the limit that refused them
}

// count counts one request of protocol p answered with result r.
func (st *loopStats) count(p proto.Protocol, r Result) {
	if p == proto.HTTP {
		st.http[r].Add(1)
	} else {
		st.resp[r].Add(1) // RESP, or unknown for a refusal before the first command
	}
}

// Version is the proxy's version, set at build time.
var Version = "dev"

// redisVersion is the Redis version the proxy answers as (HELLO, INFO):
// the command set it speaks is Redis 7's.
const redisVersion = "7.0.0"

// Stats are the front end's counters, summed over the loops when read.
type Stats struct {
	RESP         [NumResults]uint64 // RESP commands answered, by result
	HTTP         [NumResults]uint64 // HTTP requests answered, by result
	RateLimited  [numLimits]uint64  // reads refused over --rate-limit and --rate-limit-per-client (counted as refused too)
	Clients      int64              // open client connections counted against --max-clients
	Accepted     uint64             // connections accepted
	Rejected     uint64             // connections refused over --max-clients
	Denied       uint64             // connections protected mode turned away
	InFlight     int64              // fetches asked for whose answers are not delivered yet
	StaleAnswers uint64             // failed fetches answered with a stale value (--stale-if-error)
	Streamed     uint64             // large values streamed from Redis as they arrived
	Loops        int                // event loops
}

// Stats reads the front end's counters: cheap atomics the loops keep, summed
// here, so that reading them costs the request path nothing.
func (s *Server) Stats() Stats {
	st := Stats{Clients: s.clients.Load(), Accepted: s.accepted.Load(), Rejected: s.refused[refusedMaxClients].Load(), Denied: s.refused[refusedProtected].Load(),
		InFlight: s.pending.Load(), Loops: s.cfg.Loops, StaleAnswers: s.staleAnswers.Load(),
		Streamed: s.streamed.Load()}
	s.loopsMu.Lock()
	for _, lp := range s.loops {
		for r := range NumResults {
			st.RESP[r] += lp.stats.resp[r].Load()
			st.HTTP[r] += lp.stats.http[r].Load()
		}
		for l := range numLimits {
			st.RateLimited[l] += lp.stats.rateLimited[l].Load()
		}
	}
	s.loopsMu.Unlock()
	return st
}

// infoSections are INFO's sections, in order; "all", "everything" and
// "default" (and no argument) ask for every one, as in Redis.
var infoSections = []string{"server", "clients", "memory", "stats", "proxy", "backend", "hotkeys", "keyspace"}

// info renders the proxy's state in Redis INFO format: the sections asked
// for (names as Redis takes them, in any case), every one if none is.
func (s *Server) info(asked [][]byte) string {
	want := func(section string) bool {
		if len(asked) == 0 {
			return true
		}
		for _, a := range asked {
			if proto.EqualFold(a, section) || proto.EqualFold(a, "all") || proto.EqualFold(a, "everything") || proto.EqualFold(a, "default") {
				return true
			}
		}
		return false
	}
	st := s.Stats()
	cs := s.cache.Stats()
	bs := s.backend.Stats()

	var b strings.Builder
	field := func(name string, v any) { fmt.Fprintf(&b, "%s:%v\r\n", name, v) }
	for _, section := range infoSections {
		if !want(section) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		fmt.Fprintf(&b, "# %s\r\n", strings.ToUpper(section[:1])+section[1:])
		switch section {
		case "server":
			field("redis_version", redisVersion)
			field("redis_mode", "standalone")
			field("proxy", "redis-proxy")
			field("proxy_version", Version)
			field("process_id", os.Getpid())
			field("tcp_listen", s.cfg.Listen)
			field("uptime_in_seconds", int(time.Since(s.started).Seconds()))
		case "clients":
			field("connected_clients", st.Clients)
			field("maxclients", s.cfg.MaxClients)
		case "memory":
			field("cached_bytes", cs.Bytes)
			field("cache_arena_bytes", cs.ArenaBytes)
		case "stats":
			field("total_connections_received", st.Accepted)
			field("rejected_connections", st.Rejected)
			field("denied_connections", st.Denied)
			field("total_commands_processed", sum(st.RESP[:]))
			field("total_http_requests", sum(st.HTTP[:]))
			field("resp_requests", byResult(&st.RESP))
			field("http_requests", byResult(&st.HTTP))
			field("keyspace_hits", cs.Hits)
			field("keyspace_misses", cs.Misses)
			field("evicted_keys", cs.Evictions)
			field("expired_keys", cs.Expirations)
			field("invalidated_keys", cs.Invalidations)
			field("stale_answers", st.StaleAnswers)
			field("streamed_values", st.Streamed)
			field("rate_limited_proxy", st.RateLimited[limitProxy])
			field("rate_limited_client", st.RateLimited[limitClient])
		case "proxy":
			field("event_loops", st.Loops)
			field("cached_keys", cs.Len)
		case "backend":
			status := "up"
			if bs.Down {
				status = "down"
			}
			field("backend_status", status)
			field("backend_mode", s.backend.Mode())
			field("invalidation", s.backend.TrackingState())
			field("backend_fetches", bs.Fetches)
			field("backend_coalesced", bs.Coalesced)
			field("backend_errors", bs.Errors)
			field("backend_queued_jobs", bs.Queued)
			field("backend_answers_pending", st.InFlight)
		case "hotkeys": // the most read keys over about the last minute (hotkeys.go)
			for i, h := range s.HotKeys(10) {
				fmt.Fprintf(&b, "hotkey_%d:reads=%d,key=%s\r\n", i+1, h.Reads, strconv.Quote(h.Key))
			}
		case "keyspace":
			if cs.Len > 0 { // as Redis, which lists only databases that hold keys
				fmt.Fprintf(&b, "db0:keys=%d,expires=%d,avg_ttl=0\r\n", cs.Len, cs.Len)
			}
		}
	}
	return b.String()
}

func sum(counts []uint64) (total uint64) {
	for _, n := range counts {
		total += n
	}
	return total
}

// byResult renders counts by result as INFO renders a record: hit=1,miss=2,...
func byResult(counts *[NumResults]uint64) string {
	var b []byte
	for r, n := range counts {
		if r > 0 {
			b = append(b, ',')
		}
		b = append(b, ResultNames[r]...)
		b = append(b, '=')
		b = strconv.AppendUint(b, n, 10)
	}
	return string(b)
}
