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
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
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
	listen            string
	redis             string
	redisUser         string
	redisMode         string
	sentinelMaster    string
	redisPasswordFile string
	redisPassword     string // read from redisPasswordFile by validate
	redisTLSCA        string
	redisTLSRoots     *x509.CertPool // read from redisTLSCA by validate
	redisTLSInsecure  bool
	capacity          int
	maxMemory         byteSize
	ttl               time.Duration
	maxClients        int
	maxParallel       int
	loops             int
	rateLimit         int
	rateLimitClient   int
	requirePass       string
	protectedMode     bool
	backendTimeout    time.Duration
	staleIfError      time.Duration
	invalidation      bool
	respectTTL        bool
	trackPrefixes     string
	shutdownTimeout   time.Duration
	idleTimeout       time.Duration
	tcpKeepAlive      time.Duration
	pinCPUs           bool
	logLevel          string
	logFormat         string
	pprof             bool
	adminListen       string
	version           bool
}

// version is the proxy's version: the one the build stamped in (make
// build), else the module version `go install` recorded, with the VCS
// revision when the build knows it.
func version() string {
	if server.Version != "dev" {
		return server.Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return server.Version
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 7 {
			if v == "" || v == "(devel)" {
				return s.Value[:7]
			}
			return v + " (" + s.Value[:7] + ")"
		}
	}
	if v == "" {
		return server.Version
	}
	return v
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
	fs.StringVar(&c.redis, "redis", "127.0.0.1:6379", "backing Redis: `host:port`, several (a cluster's seed nodes, or the sentinels: host:port,host:port), or redis://[user:pass@]host:port[/db] (rediss:// for TLS)")
	fs.StringVar(&c.redisMode, "redis-mode", backend.ModeAuto, "what --redis names: auto (sentinel with --sentinel-master, else a cluster if the first node reached is in one, else one server), standalone, cluster or sentinel")
	fs.StringVar(&c.sentinelMaster, "sentinel-master", "", "`name` of the primary the sentinels --redis lists watch (Sentinel mode)")
	fs.StringVar(&c.redisUser, "redis-user", "", "ACL `user` to authenticate to Redis as (empty: the default user; not with a user in the --redis URL too)")
	fs.StringVar(&c.redisPasswordFile, "redis-password-file", "", "`file` holding the password for Redis, less one trailing newline (not with a password in the --redis URL too); never logged")
	fs.StringVar(&c.redisTLSCA, "redis-tls-ca", "", "PEM `file` of the authorities Redis's certificate is verified against (empty: the system's); turns TLS on, with host:port too")
	fs.BoolVar(&c.redisTLSInsecure, "redis-tls-insecure", false, "TLS to Redis without verifying its certificate, for tests only: anyone on the path could pose as Redis; turns TLS on")
	intFlag(fs, &c.capacity, "capacity", 100000, 0, maxCapacity, "cache capacity in `keys` (0 caches nothing)")
	fs.Var(&c.maxMemory, "max-memory", "most `bytes` of keys and values cached, e.g. 512MiB or 2GB (0 = no limit besides --capacity)")
	durationFlag(fs, &c.ttl, "ttl", 10*time.Second, 1, "how long an entry is served after it was fetched (at most 4660h, about 194 days: longer is taken as that)")
	intFlag(fs, &c.maxClients, "max-clients", 10000, 1, maxClients, "open client connections allowed at once")
	intFlag(fs, &c.maxParallel, "max-parallel", 256, 1, maxParallel, "backend fetches in flight at once (more are queued)")
	intFlag(fs, &c.loops, "loops", 0, 0, maxLoops, "event loops (0 = half the CPUs, at least 1)")
	intFlag(fs, &c.rateLimit, "rate-limit", 0, 0, maxRate, "key `reads` a second served by the whole proxy; more get 503 / -ERR rate limit exceeded (0 = no limit)")
	fs.StringVar(&c.requirePass, "require-pass", "", "`password` clients must give: RESP AUTH, HTTP Authorization: Bearer (empty: none; prefer the environment variable, which ps does not show)")
	fs.BoolVar(&c.protectedMode, "protected-mode", true, "listening on every interface without --require-pass, serve loopback clients only")
	intFlag(fs, &c.rateLimitClient, "rate-limit-per-client", 0, 0, maxRate, "key `reads` a second served to one client IP (0 = no limit)")
	durationFlag(fs, &c.backendTimeout, "backend-timeout", time.Second, 1, "longest wait for Redis on a miss (then 504 / -ERR backend timeout)")
	durationFlag(fs, &c.staleIfError, "stale-if-error", 0, 0, "when Redis fails, serve an entry expired less than this ago (0 = off)")
	fs.BoolVar(&c.invalidation, "invalidation", true, "drop keys Redis says changed (CLIENT TRACKING BCAST); false: TTL only")
	fs.BoolVar(&c.respectTTL, "respect-redis-ttl", true, "expire each entry no later than its key in Redis (a PTTL with every fetch)")
	fs.StringVar(&c.trackPrefixes, "track-prefix", "", "comma-separated key `prefixes` to track (empty: all keys)")
	durationFlag(fs, &c.shutdownTimeout, "shutdown-timeout", 5*time.Second, 1, "on SIGINT/SIGTERM, longest wait for answers in flight")
	durationFlag(fs, &c.idleTimeout, "idle-timeout", 0, 0, "close a client that has sent nothing for this long and waits for no answer (0 = never)")
	durationFlag(fs, &c.tcpKeepAlive, "tcp-keepalive", 300*time.Second, 0, "TCP keep-alive period of client sockets, so vanished peers are closed (0 = off)")
	fs.BoolVar(&c.pinCPUs, "pin-cpus", true, "pin each event loop's thread to its own CPU")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text (logfmt) or json, one object a line")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's /debug/pprof/ profiles on the admin port (--admin-listen)")
	fs.StringVar(&c.adminListen, "admin-listen", "127.0.0.1:9380", "`host:port` of the admin HTTP server: /metrics (Prometheus), /healthz, /readyz (empty: off)")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.Usage = func() {} // flag calls it on every error; help is printed below, once
	printUsage := func() {
		fmt.Fprintf(usage, "Usage: redis-proxy [flags]\n\nEvery flag can also be set by its environment variable; the flag wins.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			name, text := flag.UnquoteUsage(f)
			if t, ok := f.Value.(interface{ typeName() string }); ok && name == "value" {
				name = t.typeName()
			}
			fmt.Fprintf(usage, "  --%s %s\n        %s (env %s, default %q)\n", f.Name, name, text, envName(f.Name), f.DefValue)
			if r, ok := f.Value.(interface{ allowed() string }); ok {
				fmt.Fprintf(usage, "        allowed: %s\n", r.allowed())
			}
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
		// The flag package names flags with one dash: "invalid value ... for
		// flag -ttl", "invalid boolean value ... for -pin-cpus", "flag needs
		// an argument: -ttl".
		msg := err.Error()
		for _, before := range []string{"for flag -", "for -", "argument: -"} {
			if i := strings.Index(msg, before); i >= 0 {
				msg = msg[:i+len(before)] + "-" + msg[i+len(before):]
				break
			}
		}
		return c, usageError{msg}
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

// validate checks what the flag values cannot check one by one, and reads
// the files the --redis-* flags name. Numbers and durations are
// range-checked as they are parsed (intRange, durationRange, byteSize), so
// that a value too large for its type is refused with the range rather than
// wrapped.
func (c *config) validate() error {
	if err := checkAddr("--listen", c.listen); err != nil {
		return err
	}
	u := redisURL(c.redis)
	if err := checkRedis(c.redis, u); err != nil {
		return err
	}
	if err := c.readRedisFiles(u); err != nil {
		return err
	}
	switch c.redisMode {
	case backend.ModeAuto, backend.ModeStandalone, backend.ModeCluster, backend.ModeSentinel:
	default:
		return usageError{fmt.Sprintf("--redis-mode: must be auto, standalone, cluster or sentinel, got %q", c.redisMode)}
	}
	if c.sentinelMaster != "" && c.redisMode != backend.ModeAuto && c.redisMode != backend.ModeSentinel {
		return usageError{"--sentinel-master: the primary's name is for --redis-mode sentinel, not " + c.redisMode}
	}
	if c.redisMode == backend.ModeSentinel && c.sentinelMaster == "" && (u == nil || !u.Query().Has("master_set")) {
		return usageError{"--redis-mode sentinel: --sentinel-master must name the primary the sentinels watch"}
	}
	prefixes := trackPrefixes(c.trackPrefixes)
	for i, p := range prefixes {
		for _, q := range prefixes[i+1:] {
			if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) {
				return usageError{fmt.Sprintf("--track-prefix: %q and %q overlap, which Redis refuses: keep the shorter", p, q)}
			}
		}
	}
	if strings.TrimSpace(c.requirePass) != c.requirePass {
		return usageError{"--require-pass: must not begin or end with white space (HTTP drops it from the Authorization header)"}
	}
	if c.pprof && c.adminListen == "" {
		return usageError{"--pprof: profiles are served on the admin port, which --admin-listen \"\" turns off"}
	}
	if c.adminListen != "" {
		if err := checkAddr("--admin-listen", c.adminListen); err != nil {
			return err
		}
	}
	if _, err := logLevel(c.logLevel); err != nil {
		return err
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return usageError{fmt.Sprintf("--log-format: must be text or json, got %q", c.logFormat)}
	}
	return nil
}

// trackPrefixes are the prefixes --track-prefix lists.
func trackPrefixes(list string) []string {
	var prefixes []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			prefixes = append(prefixes, p)
		}
	}
	return prefixes
}

// checkAddr accepts host:port with a port from 1 to 65535 (or a service name
// such as "http"); the host may be empty, meaning every interface.
func checkAddr(flagName, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		err = checkPort(port)
	}
	if err != nil {
		return usageError{fmt.Sprintf("%s: must be host:port with a port from 1 to 65535, got %q", flagName, addr)}
	}
	return nil
}

func checkPort(port string) error {
	n, err := net.LookupPort("tcp", port)
	if err == nil && n == 0 {
		err = errors.New("port 0")
	}
	return err
}

// redisURL is --redis parsed, if it is a URL that parses; nil for host:port
// (or a list of them), and for a URL that does not parse, which the backend
// refuses with the reason.
func redisURL(addr string) *url.URL {
	if !strings.Contains(addr, "://") {
		return nil
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil
	}
	return u
}

// checkRedis checks the ports of --redis (u, when it is a URL), in any
// form; the rest of the address (and the URL) is for the backend to judge.
func checkRedis(addr string, u *url.URL) error {
	var ports []string
	if u != nil {
		ports = append(ports, u.Port())
	} else if !strings.Contains(addr, "://") {
		for _, a := range strings.Split(addr, ",") {
			if _, p, err := net.SplitHostPort(strings.TrimSpace(a)); err == nil {
				ports = append(ports, p)
			}
		}
	}
	for _, port := range ports {
		if port != "" && checkPort(port) != nil {
			return usageError{fmt.Sprintf("--redis: the port must be 1 to 65535, got %q in %q", port, backend.Redacted(addr))}
		}
	}
	return nil
}

// readRedisFiles reads the password and the CA bundle the --redis-* flags
// name, after checking that they do not say twice what --redis (u, when it
// is a URL) says.
func (c *config) readRedisFiles(u *url.URL) error {
	var inURL *url.Userinfo // nil for host:port; its methods take nil
	scheme, skipVerify := "", false
	if u != nil {
		inURL, scheme = u.User, u.Scheme
		skipVerify, _ = strconv.ParseBool(u.Query().Get("skip_verify"))
	}
	tlsFlags := c.redisTLSCA != "" || c.redisTLSInsecure
	if tlsFlags && scheme == "unix" {
		return usageError{"--redis: a unix:// socket has no TLS, which --redis-tls-ca and --redis-tls-insecure ask for"}
	}
	if c.redisTLSCA != "" && skipVerify {
		return usageError{"--redis-tls-ca: the --redis URL says skip_verify, which skips the verification the CA is for; give one or the other"}
	}
	if c.redisUser != "" && inURL.Username() != "" {
		return usageError{"--redis-user: the --redis URL names a user too; give it in one place"}
	}
	if _, has := inURL.Password(); has && c.redisPasswordFile != "" {
		return usageError{"--redis-password-file: the --redis URL has a password too; give it in one place"}
	}
	if c.redisTLSCA != "" && c.redisTLSInsecure {
		return usageError{"--redis-tls-insecure: it skips the verification --redis-tls-ca is for; give one or the other"}
	}
	if c.redisPasswordFile != "" {
		b, err := os.ReadFile(c.redisPasswordFile)
		if err != nil {
			return usageError{"--redis-password-file: " + err.Error()}
		}
		c.redisPassword = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if c.redisPassword == "" {
			return usageError{fmt.Sprintf("--redis-password-file: %s holds no password", c.redisPasswordFile)}
		}
	}
	if c.redisTLSCA != "" {
		b, err := os.ReadFile(c.redisTLSCA)
		if err != nil {
			return usageError{"--redis-tls-ca: " + err.Error()}
		}
		c.redisTLSRoots = x509.NewCertPool()
		if !c.redisTLSRoots.AppendCertsFromPEM(b) {
			return usageError{fmt.Sprintf("--redis-tls-ca: no PEM certificate in %s", c.redisTLSCA)}
		}
	}
	return nil
}

// The limits of the numeric flags, beyond which a value cannot mean anything.
const (
	// maxCapacity is what lru can index: 256 shards of 2^32-2 entries each
	// (uint32 entry indices, entry 0 the list's sentinel); lru's
	// TestCapacityLimit checks the figure.
	maxCapacity = min(256*(1<<32-2), math.MaxInt)
	// maxClients: a process cannot have more descriptors open than a C int
	// counts, so no more connections than this can ever be open at once.
	maxClients = math.MaxInt32
	// maxParallel: every fetch in flight is a worker goroutine started up
	// front; past a million they take gigabytes before the first request,
	// and far more than one Redis can be kept busy with.
	maxParallel = 1 << 20
	// maxLoops is gnet's cap on event loops (gfd.EventLoopIndexMax).
	maxLoops = 256
	// maxRate is the largest --rate-limit: far past what a proxy serves.
	maxRate = 1e9
	// maxDuration is Go's longest duration, about 292 years.
	maxDuration = time.Duration(math.MaxInt64)
)

// intRange is an int flag that takes only min..max (base prefixes such as
// 0x allowed, as the flag package's ints do).
type intRange struct {
	p        *int
	min, max int64
}

func intFlag(fs *flag.FlagSet, p *int, name string, value int, min, max int64, usage string) {
	*p = value
	fs.Var(&intRange{p, min, max}, name, usage)
}

func (r *intRange) String() string {
	if r.p == nil {
		return "0"
	}
	return strconv.Itoa(*r.p)
}

func (r *intRange) typeName() string { return "int" }

func (r *intRange) allowed() string { return fmt.Sprintf("%d to %d", r.min, r.max) }

func (r *intRange) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return errors.New("not a whole number")
	}
	if err != nil || n < r.min || n > r.max {
		return fmt.Errorf("must be %s", r.allowed())
	}
	*r.p = int(n)
	return nil
}

// durationRange is a duration flag that takes only min up to Go's longest
// duration. A value longer than that cannot be held, and is refused with the
// range, not with the flag package's "parse error".
type durationRange struct {
	p   *time.Duration
	min time.Duration
}

func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, value, min time.Duration, usage string) {
	*p = value
	fs.Var(&durationRange{p, min}, name, usage)
}

func (r *durationRange) typeName() string { return "duration" }

func (r *durationRange) String() string {
	if r.p == nil {
		return "0s"
	}
	return r.p.String()
}

func (r *durationRange) allowed() string {
	return fmt.Sprintf("%s to %s (about 292 years)", r.min, maxDuration)
}

// durationSyntax is time.ParseDuration's grammar: what matches it and still
// fails to parse is too long for a time.Duration.
var durationSyntax = regexp.MustCompile(`^[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$`)

func (r *durationRange) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil && !durationSyntax.MatchString(s) {
		return errors.New("not a duration (such as 300ms, 10s or 1h30m)")
	}
	if err != nil || d < r.min {
		return fmt.Errorf("must be %s", r.allowed())
	}
	*r.p = d
	return nil
}

// byteSize is a flag value in bytes: a number with an optional unit, decimal
// (KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB), case-insensitive.
type byteSize int64

var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) allowed() string {
	return fmt.Sprintf("0 (no limit) to %d bytes (about 9.2 million TB)", int64(math.MaxInt64))
}

// Set reads a size, refusing one that does not fit in an int64 of bytes
// (rather than wrapping it to a negative number) and a fraction of a byte
// (which would otherwise become 0, no limit). Whole numbers are multiplied
// exactly; fractions are rounded to the nearest byte.
func (b *byteSize) Set(s string) error {
	num := strings.TrimRightFunc(s, unicode.IsLetter)
	mult, ok := byteUnits[strings.ToLower(s[len(num):])]
	if !ok {
		return fmt.Errorf("unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s[len(num):])
	}
	num = strings.TrimSpace(num)
	if n, err := strconv.ParseInt(num, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if err != nil || n < 0 || n > math.MaxInt64/mult {
			return fmt.Errorf("must be %s", b.allowed())
		}
		*b = byteSize(n * mult)
		return nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("not a size: %q", s)
	}
	v := math.Round(f * float64(mult))
	if err != nil || !(v >= 0 && v < math.MaxInt64) { // MaxInt64 as a float is 2^63, one past
		return fmt.Errorf("must be %s", b.allowed())
	}
	if v == 0 && f != 0 {
		return fmt.Errorf("%q is less than a byte; 0 means no limit", s)
	}
	*b = byteSize(v)
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
	if cfg.version {
		fmt.Println("redis-proxy", version())
		return
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

// setGCPolicy tunes the garbage collector, unless the operator has with
// GOGC. The cache's records live outside the Go heap (package lru), all but
// values over 16 KiB, so the heap holds the proxy's own small live state plus
// what misses leave behind: collecting at 50% growth instead of Go's 100%
// keeps its resident size near what is live, for cycles that cost little (a
// small heap, mostly without pointers). There is no soft memory limit
// (GOMEMLIMIT): what the heap legitimately holds besides cached values
// (clients' unparsed pipelines, answers not yet read) has no fixed bound, and
// a limit below it would keep the collector running without end.
func setGCPolicy() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
}

func run(cfg config) error {
	level, _ := logLevel(cfg.logLevel)
	var handler slog.Handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	if cfg.logFormat == "json" {
		handler = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)
	setGCPolicy()

	cache := lru.New(lru.Config{Capacity: cfg.capacity, MaxBytes: int64(cfg.maxMemory), TTL: cfg.ttl, StaleFor: cfg.staleIfError})
	defer cache.Close()
	var tracking *backend.Tracking
	if cfg.invalidation {
		tracking = server.CacheTracking(cache, trackPrefixes(cfg.trackPrefixes), func(err error) {
			log.Warn("Redis refused CLIENT TRACKING; running on TTLs only", "err", err)
		})
		resync := tracking.OnResync
		tracking.OnResync = func(node string) {
			log.Info("invalidation tracking on", "node", node)
			resync(node)
		}
		tracking.OnDrop = func(err error) {
			log.Warn("invalidation tracking lost; reconnecting (keys cached meanwhile are revalidated)", "err", err)
		}
	}
	be, err := backend.New(backend.Config{
		Addr:           cfg.redis,
		Mode:           cfg.redisMode,
		SentinelMaster: cfg.sentinelMaster,
		User:           cfg.redisUser,
		Password:       cfg.redisPassword,
		TLSRoots:       cfg.redisTLSRoots,
		TLSInsecure:    cfg.redisTLSInsecure,
		Timeout:        cfg.backendTimeout,
		MaxParallel:    cfg.maxParallel,
		QueueLen:       min(1024*cfg.maxParallel, 1<<20),
		Versions:       cache,
		OnResult:       server.CacheFill(cache),
		Tracking:       tracking,
		FetchTTL:       cfg.respectTTL,
		OnReachable: func(up bool, err error) {
			if up {
				log.Info("Redis answers again", "redis", backend.Redacted(cfg.redis))
			} else {
				log.Warn("Redis unreachable; misses fail until it answers (cached keys are still served)", "redis", backend.Redacted(cfg.redis), "err", err)
			}
		},
	})
	if err != nil {
		return usageError{"--redis: " + err.Error()}
	}
	defer be.Close()
	srv := server.New(server.Config{
		Listen:             cfg.listen,
		Loops:              cfg.loops,
		MaxClients:         cfg.maxClients,
		PinCPUs:            cfg.pinCPUs,
		IdleTimeout:        cfg.idleTimeout,
		TCPKeepAlive:       cfg.tcpKeepAlive,
		RateLimit:          float64(cfg.rateLimit),
		RateLimitPerClient: float64(cfg.rateLimitClient),
		RequirePass:        cfg.requirePass,
		ProtectedMode:      cfg.protectedMode,
		Logger:             log,
	}, cache, be)

	// A readiness probe gives up after 1 s by default (Kubernetes): /readyz
	// answers before that.
	adm := &admin{srv: srv, cache: cache, be: be, invalidation: cfg.invalidation, pprof: cfg.pprof,
		pingTimeout: min(cfg.backendTimeout, 500*time.Millisecond)}
	if cfg.adminListen != "" {
		l, err := net.Listen("tcp", cfg.adminListen)
		if err != nil {
			return fmt.Errorf("--admin-listen %s: %v", cfg.adminListen, err)
		}
		hs := &http.Server{Handler: adm.handler(), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(handler, slog.LevelWarn)}
		go func() { _ = hs.Serve(l) }()
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
	// The configuration, once it has proved good: a bad one is one line.
	log.Info("started", "version", version(), "listen", cfg.listen, "redis", backend.Redacted(cfg.redis),
		"redis_mode", be.Mode(), "redis_tls", be.TLS(), "redis_user", be.User(),
		"admin", cfg.adminListen, "capacity", cfg.capacity, "max_memory", int64(cfg.maxMemory), "ttl", cfg.ttl.String(),
		"loops", srv.Stats().Loops, "max_clients", cfg.maxClients, "invalidation", cfg.invalidation,
		"rate_limit", cfg.rateLimit, "rate_limit_per_client", cfg.rateLimitClient,
		"require_pass", cfg.requirePass != "", "protected_mode", cfg.protectedMode)
	// The first ping only informs, so it runs beside the wait for a signal:
	// with a long --backend-timeout and a Redis that does not answer, a
	// SIGTERM must not wait for it.
	pingCtx, stopPing := context.WithTimeout(context.Background(), cfg.backendTimeout)
	defer stopPing() // before be.Close, deferred earlier
	go func() {
		if err := be.Ping(pingCtx); err != nil && !errors.Is(pingCtx.Err(), context.Canceled) {
			log.Warn("Redis does not answer yet; serving anyway and retrying on each miss", "redis", backend.Redacted(cfg.redis), "err", err)
		}
	}()

	select {
	case err := <-served:
		return err
	case sig := <-signals:
		adm.stopping.Store(true) // /readyz fails from now on, before the drain
		log.Info("shutting down", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
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
