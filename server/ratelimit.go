// Throttling (--rate-limit, --rate-limit-per-client): token buckets that
// refuse key reads over a rate before they reach the cache or Redis, so that
// a backlog cannot grow past what the operator chose to serve.
//
// Every bucket holds at most one second's worth of tokens (its burst) and
// refills continuously at its rate; a read takes one token or is refused.
// Only key reads count (RESP GET and MGET, one token each; HTTP GET and HEAD
// of a key): handshakes, PING and INFO pass, so that clients can still
// connect and health-check their connections while their reads are refused.
//
// The proxy-wide limit is one shared bucket, but the hit path does not take
// its lock per read: each event loop draws a handful of tokens at a time
// (rateChunk) into a count of its own and spends them without any shared
// write, going back to the shared bucket when they run out. At most a
// chunk per loop is drawn and not yet spent, about 1% of a second's worth.
//
// The per-client limit is a bucket per client IP (per /64 for IPv6, which
// hands a host a /64 to pick addresses from), shared by that IP's
// connections (which may sit on different loops: each bucket has its own
// lock, taken by that client's reads only). The buckets live in a map
// looked up when a connection opens; a bucket outlives its connections until
// it is full again (a second at most), so that reconnecting does not refill
// it, and the sweep in OnTick drops it then: the map holds the clients of
// the last second, never more.

package server

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// tokenBucket is rate tokens a second, at most burst of them at once.
// Times are nanoseconds on the limiter's clock. Not safe for concurrent use.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64 // as of last
	last   int64
}

func newTokenBucket(rate float64) tokenBucket {
	burst := max(rate, 1) // one second's worth, and at least one read
	return tokenBucket{rate: rate, burst: burst, tokens: burst}
}

// refill brings the bucket up to now.
func (b *tokenBucket) refill(now int64) {
	if now > b.last {
		b.tokens = min(b.burst, b.tokens+float64(now-b.last)*b.rate/1e9)
		b.last = now
	}
}

// take takes up to n whole tokens at now and returns how many it took.
func (b *tokenBucket) take(now int64, n int64) int64 {
	b.refill(now)
	n = min(n, int64(b.tokens))
	b.tokens -= float64(n)
	return n
}

// full reports whether the bucket is full at now: as good as a new one.
func (b *tokenBucket) full(now int64) bool {
	b.refill(now)
	return b.tokens >= b.burst
}

// sharedBucket is a tokenBucket several goroutines take from.
type sharedBucket struct {
	mu sync.Mutex
	tokenBucket
}

func (b *sharedBucket) take(now int64, n int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokenBucket.take(now, n)
}

// giveBack returns a token taken for a read that was refused after all.
func (b *sharedBucket) giveBack() {
	b.mu.Lock()
	b.tokens = min(b.burst, b.tokens+1)
	b.mu.Unlock()
}

// rateLimits are the proxy's throttles; nil fields are off.
type rateLimits struct {
	start   time.Time     // the clock's zero
	proxy   *sharedBucket // --rate-limit
	chunk   int64         // tokens a loop draws from proxy at a time
	refill  int64         // ns proxy takes to refill a chunk: how long a loop that found it empty refuses without asking again
	perIP   float64       // --rate-limit-per-client, 0: off
	mu      sync.Mutex    // guards clients
	clients map[netip.Addr]*clientBucket
}

// clientBucket is one client IP's bucket.
type clientBucket struct {
	sharedBucket
	conns int // open connections using it (rateLimits.mu)
}

// Limit names, as metrics and INFO label the reads each refused.
const (
	limitProxy = iota
	limitClient
	numLimits
)

// LimitNames name the limits in metrics: RateLimited[i] counts LimitNames[i].
var LimitNames = [numLimits]string{"proxy", "client"}

// newRateLimits returns the limits for the given rates (reads a second;
// 0: that limit is off), for a proxy of loops event loops; nil if both are off.
func newRateLimits(proxy, perClient float64, loops int) *rateLimits {
	if proxy <= 0 && perClient <= 0 {
		return nil
	}
	rl := &rateLimits{start: time.Now(), perIP: perClient}
	if perClient > 0 {
		rl.clients = map[netip.Addr]*clientBucket{}
	}
	if proxy > 0 {
		rl.proxy = &sharedBucket{tokenBucket: newTokenBucket(proxy)}
		rl.chunk = max(1, int64(proxy/100)/int64(loops))
		rl.refill = int64(float64(rl.chunk) * 1e9 / proxy)
	}
	return rl
}

func (rl *rateLimits) now() int64 { return int64(time.Since(rl.start)) }

// open returns the bucket of the client at remote, nil if clients are not
// limited (or remote is not an IP address).
func (rl *rateLimits) open(remote net.Addr) *clientBucket {
	tcp, ok := remote.(*net.TCPAddr)
	if rl.perIP <= 0 || !ok {
		return nil
	}
	ip := tcp.AddrPort().Addr().Unmap()
	if ip.Is6() {
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	b := rl.clients[ip]
	if b == nil {
		b = &clientBucket{sharedBucket: sharedBucket{tokenBucket: newTokenBucket(rl.perIP)}}
		rl.clients[ip] = b
	}
	b.conns++
	return b
}

// close releases a bucket open returned, when its connection closes.
func (rl *rateLimits) close(b *clientBucket) {
	rl.mu.Lock()
	b.conns--
	rl.mu.Unlock()
}

// sweep drops the buckets of clients with no connection whose buckets are
// full again, which a new connection would get anyway.
func (rl *rateLimits) sweep() {
	if rl.perIP <= 0 {
		return
	}
	now := rl.now()
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for ip, b := range rl.clients {
		if b.conns > 0 {
			continue
		}
		b.mu.Lock()
		full := b.full(now)
		b.mu.Unlock()
		if full {
			delete(rl.clients, ip)
		}
	}
}

// admit reports whether cn may read a key now: it spends a token of cn's
// client bucket, then one of its loop's share of the proxy's. A refusal is
// counted, by the limit that refused it.
func (s *Server) admit(cn *conn) bool {
	rl := s.limits
	if rl == nil {
		return true
	}
	var now int64
	if cn.limit != nil {
		now = rl.now()
		if cn.limit.take(now, 1) == 0 {
			cn.lp.stats.rateLimited[limitClient].Add(1)
			return false
		}
	}
	if rl.proxy != nil {
		lp := cn.lp
		if lp.tokens == 0 {
			if now == 0 {
				now = rl.now()
			}
			// Over the limit, the loop refuses on its own until a chunk
			// has had time to refill: the shared lock is not taken per read.
			if now >= lp.tokensAt {
				if lp.tokens = rl.proxy.take(now, rl.chunk); lp.tokens == 0 {
					lp.tokensAt = now + rl.refill
				}
			}
		}
		if lp.tokens == 0 {
			if cn.limit != nil { // the client's own budget is not spent on a read it did not get
				cn.limit.giveBack()
			}
			lp.stats.rateLimited[limitProxy].Add(1)
			return false
		}
		lp.tokens--
	}
	return true
}
