// Package backend fetches cache misses from the backing Redis.
//
// How it works. Fetch hands a key to a fixed pool of MaxParallel worker
// goroutines through a bounded queue and returns at once, so the caller (an
// event loop) never waits on Redis; the worker's GET goes through one shared
// rueidis client and its answer goes to the caller's callback, on the worker.
// rueidis auto-pipelines: GETs issued concurrently by the workers are written
// to Redis together in one flush and answered in one read, so a burst of
// misses from every loop costs a few round trips, not one each.
//
// The client is built for a proxy rather than an application:
//   - AlwaysPipelining: a timed-out GET is abandoned, not answered by closing
//     the shared connection (rueidis's sync mode would close it);
//   - DisableRetry and a dial timeout no longer than the fetch timeout: a
//     fetch fails within its timeout when Redis is away, instead of retrying
//     until its deadline, so the proxy answers 502 fast and 504 only for a
//     Redis that is there but slow;
//   - DisableCache: the proxy has its own cache, rueidis's would be a second;
//   - ForceSingleClient: the proxy starts, and serves what it can, while
//     Redis is still down; rueidis redials by itself once it is back.
//
// The proxy is read-only: GET is the only command this package sends.
package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Config says where Redis is and how hard to use it.
type Config struct {
	// Addr is host:port, or a redis://[user:pass@]host:port[/db] or rediss:// URL.
	Addr string
	// Timeout bounds one fetch, dialling included.
	Timeout time.Duration
	// MaxParallel is the number of fetches in flight at once.
	MaxParallel int
	// QueueLen is how many fetches may wait for a worker; beyond it Fetch
	// refuses with ErrOverloaded.
	QueueLen int
}

// Result is the outcome of one fetch: a value, no such key (Found false, Err
// nil), or an error.
type Result struct {
	Value []byte
	Found bool
	Err   error
}

// Errors a fetch can end in besides a ReplyError.
var (
	ErrTimeout    = errors.New("backend timeout")
	ErrOverloaded = errors.New("too many backend fetches waiting")
)

// ReplyError is an error reply from Redis (such as WRONGTYPE), passed through
// to the client word for word.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

// UnavailableError means Redis could not be reached or the connection failed.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "backend unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Stats are the client's counters.
type Stats struct {
	Fetches uint64 // GETs sent
	Errors  uint64 // fetches that ended in an error (not counting a missing key)
	Queued  int    // fetches waiting for a worker now
}

type job struct {
	key      string
	done     func(Result)
	deadline time.Time // the fetch's timeout runs from when it was queued
}

// Client fetches keys from Redis. Create it with New, stop it with Close.
type Client struct {
	rc      rueidis.Client
	timeout time.Duration
	jobs    chan job
	workers sync.WaitGroup
	fetches atomic.Uint64
	errors  atomic.Uint64
}

// New parses cfg, connects to Redis and starts the workers. It fails only for
// a bad configuration; Redis being down is not an error here (see Ping).
func New(cfg Config) (*Client, error) {
	opt, err := clientOptions(cfg.Addr)
	if err != nil {
		return nil, err
	}
	opt.Dialer.Timeout = cfg.Timeout
	opt.AlwaysPipelining = true
	opt.DisableRetry = true
	opt.DisableCache = true
	opt.ForceSingleClient = true
	rc, err := rueidis.NewClient(opt)
	if rc == nil {
		return nil, err
	}
	c := &Client{rc: rc, timeout: cfg.Timeout, jobs: make(chan job, cfg.QueueLen)}
	c.workers.Add(cfg.MaxParallel)
	for range cfg.MaxParallel {
		go c.work()
	}
	return c, nil
}

// clientOptions reads a host:port or a redis:// / rediss:// URL.
func clientOptions(addr string) (rueidis.ClientOption, error) {
	if strings.Contains(addr, "://") {
		opt, err := rueidis.ParseURL(addr)
		if err != nil {
			return opt, fmt.Errorf("invalid Redis URL %q: %v", addr, err)
		}
		return opt, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return rueidis.ClientOption{}, fmt.Errorf("invalid Redis address %q: want host:port or redis://host:port", addr)
	}
	return rueidis.ClientOption{InitAddress: []string{addr}}, nil
}

// Ping checks that Redis answers.
func (c *Client) Ping(ctx context.Context) error {
	return c.rc.Do(ctx, c.rc.B().Ping().Build()).Error()
}

// Fetch queues a GET of key; done is called with its result, on a worker
// goroutine, unless Fetch returns ErrOverloaded (queue full), in which case
// done is never called. The timeout counts from now, so time spent waiting
// for a worker counts too: no caller waits much longer than Timeout.
func (c *Client) Fetch(key string, done func(Result)) error {
	select {
	case c.jobs <- job{key, done, time.Now().Add(c.timeout)}:
		return nil
	default:
		return ErrOverloaded
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Fetches: c.fetches.Load(), Errors: c.errors.Load(), Queued: len(c.jobs)}
}

// Close finishes the queued fetches, stops the workers and closes the
// connections. No Fetch may be called after Close.
func (c *Client) Close() {
	close(c.jobs)
	c.workers.Wait()
	c.rc.Close()
}

func (c *Client) work() {
	defer c.workers.Done()
	for j := range c.jobs {
		r := c.get(j.key, j.deadline)
		if r.Err != nil {
			c.errors.Add(1)
		}
		j.done(r)
	}
}

func (c *Client) get(key string, deadline time.Time) Result {
	if time.Now().After(deadline) { // waited out its timeout in the queue
		return Result{Err: ErrTimeout}
	}
	c.fetches.Add(1)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	v, err := c.rc.Do(ctx, c.rc.B().Get().Key(key).Build()).AsBytes()
	cancel()
	switch {
	case err == nil:
		return Result{Value: v, Found: true}
	case rueidis.IsRedisNil(err):
		return Result{}
	}
	return Result{Err: classify(err)}
}

// classify turns a rueidis error into ErrTimeout, a ReplyError or an
// *UnavailableError.
func classify(err error) error {
	if re, ok := rueidis.IsRedisErr(err); ok {
		return ReplyError(withCode(re.Error()))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return &UnavailableError{err}
}

// withCode restores the "ERR " that rueidis strips from generic error
// replies: a reply whose first word is not an upper-case code had it.
func withCode(msg string) string {
	code, _, _ := strings.Cut(msg, " ")
	if code == "" || strings.ToUpper(code) != code {
		return "ERR " + msg
	}
	return msg
}
