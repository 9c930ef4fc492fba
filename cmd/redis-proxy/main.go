// Command redis-proxy is a read-through caching proxy for Redis: clients GET
// keys over HTTP (GET /<key>) or the Redis protocol (GET key) on one port, and
// the proxy answers from its local LRU cache, fetching misses from Redis.
//
// Configuration comes from flags, each with a REDIS_PROXY_* environment
// variable; a flag on the command line wins. Bad configuration exits with
// status 2 and one line on stderr naming the flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/lru"
	"github.com/redis-proxy/redis-proxy/server"
)

type config struct {
	listen          string
	redis           string
	capacity        int
	maxMemory       byteSize
	ttl             time.Duration
	maxClients      int
	maxParallel     int
	loops           int
	backendTimeout  time.Duration
	staleIfError    time.Duration
	invalidation    bool
	respectTTL      bool
	trackPrefixes   string
	shutdownTimeout time.Duration
	pinCPUs         bool
	logLevel        string
	pprof           string
}

// usageError is a configuration error; main prints it as one line and exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func envName(flagName string) string {
	return "REDIS_PROXY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads the environment, then args, and validates the result.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("redis-proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:6380", "`host:port` serving both HTTP and RESP")
	fs.StringVar(&c.redis, "redis", "127.0.0.1:6379", "backing Redis: `host:port` or redis://[user:pass@]host:port[/db] (rediss:// for TLS)")
	fs.IntVar(&c.capacity, "capacity", 100000, "cache capacity in `keys` (0 caches nothing)")
	fs.Var(&c.maxMemory, "max-memory", "most `bytes` of keys and values cached, e.g. 512MiB or 2GB (0 = no limit besides --capacity)")
	fs.DurationVar(&c.ttl, "ttl", 10*time.Second, "how long an entry is served after it was fetched")
	fs.IntVar(&c.maxClients, "max-clients", 10000, "open client connections allowed at once")
	fs.IntVar(&c.maxParallel, "max-parallel", 256, "backend fetches in flight at once (more are queued)")
	fs.IntVar(&c.loops, "loops", 0, "event loops (0 = one per CPU)")
	fs.DurationVar(&c.backendTimeout, "backend-timeout", time.Second, "longest wait for Redis on a miss (then 504 / -ERR backend timeout)")
	fs.DurationVar(&c.staleIfError, "stale-if-error", 0, "when Redis fails, serve an entry expired less than this ago (0 = off)")
	fs.BoolVar(&c.invalidation, "invalidation", true, "drop keys Redis says changed (CLIENT TRACKING BCAST); false: TTL only")
	fs.BoolVar(&c.respectTTL, "respect-redis-ttl", true, "expire each entry no later than its key in Redis (a PTTL with every fetch)")
	fs.StringVar(&c.trackPrefixes, "track-prefix", "", "comma-separated key `prefixes` to track (empty: all keys)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 5*time.Second, "on SIGINT/SIGTERM, longest wait for answers in flight")
	fs.BoolVar(&c.pinCPUs, "pin-cpus", true, "pin each event loop's thread to its own CPU")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.pprof, "pprof", "", "`host:port` serving Go's /debug/pprof/ profiles (empty: off)")
	fs.Usage = func() {} // flag calls it on every error; help is printed below, once
	printUsage := func() {
		fmt.Fprintf(usage, "Usage: redis-proxy [flags]\n\nEvery flag can also be set by its environment variable; the flag wins.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			name, text := flag.UnquoteUsage(f)
			fmt.Fprintf(usage, "  --%s %s\n        %s (env %s, default %q)\n", f.Name, name, text, envName(f.Name), f.DefValue)
		})
	}

	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, name := getenv(envName(f.Name)), envName(f.Name)
		if v == "" || envErr != nil {
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = usageError{fmt.Sprintf("invalid value %q for %s (--%s): %v", v, name, f.Name, unwrapParse(err))}
		}
	})
	if envErr != nil {
		return c, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage()
			return c, err
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			return c, usageError{"unknown flag --" + name + " (redis-proxy --help lists them)"}
		}
		return c, usageError{strings.Replace(err.Error(), "flag -", "flag --", 1)}
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Sprintf("unexpected argument %q: every setting is a --flag", fs.Arg(0))}
	}
	return c, c.validate()
}

// unwrapParse shortens strconv's "strconv.ParseInt: parsing "x": invalid syntax".
func unwrapParse(err error) error {
	var ne interface{ Unwrap() error }
	if errors.As(err, &ne) && ne.Unwrap() != nil {
		return ne.Unwrap()
	}
	return err
}

func (c *config) validate() error {
	switch {
	case c.listen == "":
		return usageError{"--listen: must be host:port"}
	case c.capacity < 0:
		return usageError{fmt.Sprintf("--capacity: must be 0 or more keys, got %d", c.capacity)}
	case c.maxMemory < 0:
		return usageError{fmt.Sprintf("--max-memory: must be 0 (no limit) or more bytes, got %d", c.maxMemory)}
	case c.ttl <= 0:
		return usageError{fmt.Sprintf("--ttl: must be positive, got %s", c.ttl)}
	case c.maxClients < 1:
		return usageError{fmt.Sprintf("--max-clients: must be at least 1, got %d", c.maxClients)}
	case c.maxParallel < 1:
		return usageError{fmt.Sprintf("--max-parallel: must be at least 1, got %d", c.maxParallel)}
	case c.loops < 0 || c.loops > 256:
		return usageError{fmt.Sprintf("--loops: must be 0 (one per CPU) to 256, got %d", c.loops)}
	case c.backendTimeout <= 0:
		return usageError{fmt.Sprintf("--backend-timeout: must be positive, got %s", c.backendTimeout)}
	case c.staleIfError < 0:
		return usageError{fmt.Sprintf("--stale-if-error: must be 0 (off) or positive, got %s", c.staleIfError)}
	case c.shutdownTimeout <= 0:
		return usageError{fmt.Sprintf("--shutdown-timeout: must be positive, got %s", c.shutdownTimeout)}
	}
	if _, err := logLevel(c.logLevel); err != nil {
		return err
	}
	return nil
}

// byteSize is a flag value in bytes: a number with an optional unit, decimal
// (KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB), case-insensitive.
type byteSize int64

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	num := strings.TrimRightFunc(s, unicode.IsLetter)
	mult, ok := byteUnits[strings.ToLower(s[len(num):])]
	if !ok {
		return fmt.Errorf("unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s[len(num):])
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil {
		return fmt.Errorf("not a size: %q", s)
	}
	*b = byteSize(n * mult)
	return nil
}

func logLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, usageError{fmt.Sprintf("--log-level: must be debug, info, warn or error, got %q", s)}
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "redis-proxy: %v\n", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "redis-proxy: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(cfg config) error {
	level, _ := logLevel(cfg.logLevel)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cache := lru.New(lru.Config{Capacity: cfg.capacity, MaxBytes: int64(cfg.maxMemory), TTL: cfg.ttl, StaleFor: cfg.staleIfError})
	defer cache.Close()
	prepare, onResult := server.CacheFill(cache)
	var tracking *backend.Tracking
	if cfg.invalidation {
		var prefixes []string
		for _, p := range strings.Split(cfg.trackPrefixes, ",") {
			if p = strings.TrimSpace(p); p != "" {
				prefixes = append(prefixes, p)
			}
		}
		tracking = server.CacheTracking(cache, prefixes, func(err error) {
			log.Warn("Redis refused CLIENT TRACKING; running on TTLs only", "err", err)
		})
	}
	be, err := backend.New(backend.Config{
		Addr:        cfg.redis,
		Timeout:     cfg.backendTimeout,
		MaxParallel: cfg.maxParallel,
		QueueLen:    min(1024*cfg.maxParallel, 1<<20),
		Prepare:     prepare,
		OnResult:    onResult,
		Tracking:    tracking,
		FetchTTL:    cfg.respectTTL,
	})
	if err != nil {
		return usageError{"--redis: " + err.Error()}
	}
	defer be.Close()
	srv := server.New(server.Config{
		Listen:     cfg.listen,
		Loops:      cfg.loops,
		MaxClients: cfg.maxClients,
		PinCPUs:    cfg.pinCPUs,
		Logger:     log,
	}, cache, be)

	if cfg.pprof != "" {
		l, err := net.Listen("tcp", cfg.pprof)
		if err != nil {
			return usageError{"--pprof " + cfg.pprof + ": " + err.Error()}
		}
		// The default mux carries net/http/pprof's handlers, and only those.
		go func() { _ = http.Serve(l, nil) }()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)

	// Listening comes first, so that a port in use is the one error reported.
	select {
	case err := <-served:
		return err
	case <-srv.Listening():
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.backendTimeout)
	if err := be.Ping(ctx); err != nil {
		log.Warn("Redis does not answer yet; serving anyway and retrying on each miss", "redis", cfg.redis, "err", err)
	}
	cancel()

	select {
	case err := <-served:
		return err
	case sig := <-signals:
		log.Info("shutting down", "signal", sig.String())
	}
	ctx, cancel = context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown did not finish cleanly", "err", err)
	}
	if err := <-served; err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
