// The proxy's counters and the RESP INFO answer built from them.
//
// Counters that the request path bumps live per event loop, so a loop only
// ever writes its own cache lines; INFO sums them. Hits, misses and the rest
// of the cache's counters are the cache's own, kept under its shard locks.

package server

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// loopStats are one loop's request counters, written by the loop only.
type loopStats struct {
	respCommands atomic.Uint64
	httpRequests atomic.Uint64
}

// Version is the proxy's version, set at build time.
var Version = "dev"

// redisVersion is the Redis version the proxy answers as (HELLO, INFO):
// the command set it speaks is Redis 7's.
const redisVersion = "7.0.0"

// Stats are the front end's counters, summed over the loops when read.
type Stats struct {
	RESPCommands uint64 // RESP commands answered or queued
	HTTPRequests uint64 // HTTP requests answered or queued
	Clients      int64  // open client connections counted against --max-clients
	Accepted     uint64 // connections accepted
	Rejected     uint64 // connections refused over --max-clients
	InFlight     int64  // fetches asked for whose answers are not delivered yet
	Loops        int    // event loops
}

// Stats reads the front end's counters: cheap atomics the loops keep, summed
// here, so that reading them costs the request path nothing.
func (s *Server) Stats() Stats {
	st := Stats{Clients: s.clients.Load(), Accepted: s.accepted.Load(), Rejected: s.rejected.Load(),
		InFlight: s.pending.Load(), Loops: s.cfg.Loops}
	s.loopsMu.Lock()
	for _, lp := range s.loops {
		st.RESPCommands += lp.stats.respCommands.Load()
		st.HTTPRequests += lp.stats.httpRequests.Load()
	}
	s.loopsMu.Unlock()
	return st
}

// info renders the proxy's state in Redis INFO format.
func (s *Server) info() string {
	st := s.Stats()
	resp, http := st.RESPCommands, st.HTTPRequests
	cs := s.cache.Stats()
	bs := s.backend.Stats()

	var b strings.Builder
	section := func(name string) { fmt.Fprintf(&b, "# %s\r\n", name) }
	field := func(name string, v any) { fmt.Fprintf(&b, "%s:%v\r\n", name, v) }
	section("Server")
	field("redis_version", redisVersion)
	field("redis_mode", "standalone")
	field("proxy", "redis-proxy")
	field("proxy_version", Version)
	field("process_id", os.Getpid())
	field("tcp_listen", s.cfg.Listen)
	field("event_loops", st.Loops)
	field("uptime_in_seconds", int(time.Since(s.started).Seconds()))
	b.WriteString("\r\n")
	status := "up"
	if bs.Down {
		status = "down"
	}
	field("backend_status", status)
	field("invalidation", s.backend.TrackingState())
	b.WriteString("\r\n")
	section("Clients")
	field("connected_clients", st.Clients)
	field("maxclients", s.cfg.MaxClients)
	b.WriteString("\r\n")
	section("Stats")
	field("total_connections_received", st.Accepted)
	field("rejected_connections", st.Rejected)
	field("total_commands_processed", resp)
	field("total_http_requests", http)
	field("keyspace_hits", cs.Hits)
	field("keyspace_misses", cs.Misses)
	field("evicted_keys", cs.Evictions)
	field("expired_keys", cs.Expirations)
	field("invalidated_keys", cs.Invalidations)
	field("backend_fetches", bs.Fetches)
	field("backend_coalesced", bs.Coalesced)
	field("backend_errors", bs.Errors)
	field("backend_queued", bs.Queued)
	field("backend_in_flight", st.InFlight)
	b.WriteString("\r\n")
	section("Memory")
	field("cached_bytes", cs.Bytes)
	field("cache_arena_bytes", cs.ArenaBytes)
	b.WriteString("\r\n")
	section("Keyspace")
	field("cached_keys", cs.Len)
	return b.String()
}
