package main

import (
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{listen: "127.0.0.1:6380", redis: "127.0.0.1:6379", capacity: 100000, ttl: 10 * time.Second,
		maxClients: 10000, maxParallel: 256, loops: 0, backendTimeout: time.Second, shutdownTimeout: 5 * time.Second,
		tcpKeepAlive: 300 * time.Second, pinCPUs: true, logLevel: "info", pprof: false, protectedMode: true, invalidation: true, respectTTL: true,
		adminListen: "127.0.0.1:9380", logFormat: "text", redisMode: "auto"}
	if c != want {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
}

// --admin-listen= (empty) turns the admin server off.
func TestAdminOff(t *testing.T) {
	c, err := parseConfig([]string{"--admin-listen="}, env(nil), io.Discard)
	if err != nil || c.adminListen != "" {
		t.Fatalf("--admin-listen=: %q, %v", c.adminListen, err)

	}
	// The profiles are served there: --pprof without it is refused.
	if _, err := parseConfig([]string{"--admin-listen=", "--pprof"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--pprof") {
		t.Fatalf("--pprof without the admin port: %v", err)
	}
}

func TestEnvAndFlags(t *testing.T) {
	c, err := parseConfig([]string{"--ttl", "2s", "--pin-cpus=false"},
		env(map[string]string{"REDIS_PROXY_TTL": "1m", "REDIS_PROXY_CAPACITY": "7", "REDIS_PROXY_REDIS": "redis://h:1/0"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ttl != 2*time.Second || c.capacity != 7 || c.redis != "redis://h:1/0" || c.pinCPUs {
		t.Fatalf("%+v", c)
	}
}

func TestErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--capacity=-1"}, nil, "--capacity"},
		{[]string{"--ttl=-1s"}, nil, "--ttl"},
		{[]string{"--backend-timeout=0"}, nil, "--backend-timeout"},
		{[]string{"--shutdown-timeout=0s"}, nil, "--shutdown-timeout"},
		{[]string{"--loops=300"}, nil, "--loops"},
		{[]string{"--listen="}, nil, "--listen"},
		{[]string{"--max-memory=-1"}, nil, "--max-memory"},
		{[]string{"--stale-if-error=-1s"}, nil, "--stale-if-error"},
		{[]string{"--max-memory=12parsecs"}, nil, "--max-memory"},
		{[]string{"--bogus"}, nil, "unknown flag --bogus"},
		{[]string{"--ttl"}, nil, "flag needs an argument: --ttl"},
		{[]string{"--pin-cpus=maybe"}, nil, `invalid boolean value "maybe" for --pin-cpus`},
		{[]string{"--capacity", "lots"}, nil, `invalid value "lots" for flag --capacity: not a whole number`},
		{nil, map[string]string{"REDIS_PROXY_MAX_CLIENTS": "many"}, "REDIS_PROXY_MAX_CLIENTS (--max-clients)"},
		{nil, map[string]string{"REDIS_PROXY_PIN_CPUS": "maybe"}, "REDIS_PROXY_PIN_CPUS (--pin-cpus)"},
	} {
		_, err := parseConfig(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %v: %v, want one line naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "512MiB": 512 << 20, "2GB": 2e9, "1.5kib": 1536, "64 KB": 64000} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: %d %v, want %d", in, b, err, want)
		}
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	if _, err := parseConfig([]string{"--help"}, env(nil), &out); err == nil {
		t.Fatal("--help did not stop parsing")
	}
	for _, want := range []string{"--listen", "REDIS_PROXY_LISTEN", "--max-parallel", "--ttl"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %s", want)
		}
	}
}

// Every flag's range, through the flag and through its environment variable:
// a value is accepted (and read as want) or refused with one line that names
// the flag and says what is allowed.
func TestFlagRanges(t *testing.T) {
	const maxDur = "2562047h47m16.854775807s"
	pwFile, emptyFile, missing := writeFile(t, "pw", "s3cret\n"), writeFile(t, "empty", "\n"), filepath.Join(t.TempDir(), "missing")
	caFile := redistest.NewCA(t).File
	field := map[string]func(config) any{
		"listen":                func(c config) any { return c.listen },
		"redis":                 func(c config) any { return c.redis },
		"redis-user":            func(c config) any { return c.redisUser },
		"redis-mode":            func(c config) any { return c.redisMode },
		"sentinel-master":       func(c config) any { return c.sentinelMaster },
		"redis-password-file":   func(c config) any { return c.redisPassword },
		"redis-tls-ca":          func(c config) any { return c.redisTLSRoots != nil },
		"redis-tls-insecure":    func(c config) any { return c.redisTLSInsecure },
		"capacity":              func(c config) any { return c.capacity },
		"max-memory":            func(c config) any { return int64(c.maxMemory) },
		"ttl":                   func(c config) any { return c.ttl },
		"max-clients":           func(c config) any { return c.maxClients },
		"max-parallel":          func(c config) any { return c.maxParallel },
		"loops":                 func(c config) any { return c.loops },
		"backend-timeout":       func(c config) any { return c.backendTimeout },
		"stale-if-error":        func(c config) any { return c.staleIfError },
		"invalidation":          func(c config) any { return c.invalidation },
		"respect-redis-ttl":     func(c config) any { return c.respectTTL },
		"track-prefix":          func(c config) any { return c.trackPrefixes },
		"shutdown-timeout":      func(c config) any { return c.shutdownTimeout },
		"pin-cpus":              func(c config) any { return c.pinCPUs },
		"idle-timeout":          func(c config) any { return c.idleTimeout },
		"tcp-keepalive":         func(c config) any { return c.tcpKeepAlive },
		"log-level":             func(c config) any { return c.logLevel },
		"pprof":                 func(c config) any { return c.pprof },
		"rate-limit":            func(c config) any { return c.rateLimit },
		"require-pass":          func(c config) any { return c.requirePass },
		"protected-mode":        func(c config) any { return c.protectedMode },
		"rate-limit-per-client": func(c config) any { return c.rateLimitClient },
		"admin-listen":          func(c config) any { return c.adminListen },
		"log-format":            func(c config) any { return c.logFormat },
		"version":               func(c config) any { return c.version },
	}
	for _, tc := range []struct {
		flag, value string
		want        any    // the value read, when accepted
		err         string // the error, when refused
	}{
		{"listen", "0.0.0.0:6380", "0.0.0.0:6380", ""},
		{"listen", ":6380", ":6380", ""},
		{"listen", "[::1]:65535", "[::1]:65535", ""},
		{"listen", "localhost:http", "localhost:http", ""},
		{"listen", "127.0.0.1", nil, `--listen: must be host:port with a port from 1 to 65535, got "127.0.0.1"`},
		{"listen", "127.0.0.1:0", nil, "port from 1 to 65535"},
		{"listen", "127.0.0.1:65536", nil, "port from 1 to 65535"},
		{"listen", "127.0.0.1:-1", nil, "port from 1 to 65535"},
		{"listen", "127.0.0.1:", nil, "port from 1 to 65535"},

		{"redis", "redis.internal:6379", "redis.internal:6379", ""},
		{"redis", "redis://u:p@h:1/2", "redis://u:p@h:1/2", ""},
		{"redis", "rediss://h", "rediss://h", ""},
		{"redis", "redis://u:s3cret@h:99999", nil, `--redis: the port must be 1 to 65535, got "99999" in "redis://u:xxxxx@h:99999"`},
		{"redis", "h:65536", nil, `--redis: the port must be 1 to 65535, got "65536" in "h:65536"`},
		{"redis", "redis://h:0/0", nil, "--redis: the port must be 1 to 65535"},
		{"redis", "a:7000,b:7001, c:7002", "a:7000,b:7001, c:7002", ""},
		{"redis", "a:7000,b:70010", nil, `--redis: the port must be 1 to 65535, got "70010" in "a:7000,b:70010"`},
		{"redis-mode", "cluster", "cluster", ""},
		{"redis-mode", "sentinel", nil, "--redis-mode sentinel: --sentinel-master must name the primary"},
		{"redis-mode", "Cluster", nil, `--redis-mode: must be auto, standalone, cluster or sentinel, got "Cluster"`},
		{"sentinel-master", "mymaster", "mymaster", ""},

		{"redis-user", "proxy", "proxy", ""},
		{"redis-password-file", pwFile, "s3cret", ""},
		{"redis-password-file", missing, nil, "no such file"},
		{"redis-password-file", emptyFile, nil, "holds no password"},
		{"redis-tls-ca", caFile, true, ""},
		{"redis-tls-ca", missing, nil, "no such file"},
		{"redis-tls-ca", pwFile, nil, "no PEM certificate in " + pwFile},
		{"redis-tls-insecure", "true", true, ""},
		{"redis-tls-insecure", "maybe", nil, "--redis-tls-insecure"},

		{"capacity", "0", 0, ""},
		{"capacity", "0x10", 16, ""},
		{"capacity", "1099511627264", 1099511627264, ""},
		{"capacity", "1099511627265", nil, "must be 0 to 1099511627264"},
		{"capacity", "99999999999999999999", nil, "must be 0 to 1099511627264"},
		{"capacity", "-1", nil, "must be 0 to 1099511627264"},
		{"capacity", "1e6", nil, "not a whole number"},

		{"max-memory", "0", int64(0), ""},
		{"max-memory", "512MiB", int64(512 << 20), ""},
		{"max-memory", "4.35KB", int64(4350), ""},
		{"max-memory", "1e3", int64(1000), ""},
		{"max-memory", "9223372036854775807", int64(math.MaxInt64), ""},
		{"max-memory", "8388607TiB", int64(8388607 << 40), ""},
		{"max-memory", "9223372TB", int64(9223372e12), ""},
		{"max-memory", "99999999TB", nil, "must be 0 (no limit) to 9223372036854775807 bytes"},
		{"max-memory", "8388608TiB", nil, "must be 0 (no limit) to 9223372036854775807 bytes"},
		{"max-memory", "9223372036854775808", nil, "must be 0 (no limit) to 9223372036854775807 bytes"},
		{"max-memory", "8388608.0TiB", nil, "must be 0 (no limit) to 9223372036854775807 bytes"},
		{"max-memory", "1e300", nil, "must be 0 (no limit)"},
		{"max-memory", "1e999", nil, "must be 0 (no limit)"},
		{"max-memory", "-1", nil, "must be 0 (no limit)"},
		{"max-memory", "-1.5GB", nil, "must be 0 (no limit)"},
		{"max-memory", "0.1", nil, "less than a byte; 0 means no limit"},
		{"max-memory", "12parsecs", nil, "unknown unit"},
		{"max-memory", "lots", nil, "unknown unit"},
		{"max-memory", "MB", nil, "not a size"},

		{"ttl", "1ns", time.Nanosecond, ""},
		{"ttl", "2562047h", 2562047 * time.Hour, ""},
		{"ttl", maxDur, time.Duration(math.MaxInt64), ""},
		{"ttl", "2562048h", nil, "must be 1ns to " + maxDur},
		{"ttl", "9999999999999999999ns", nil, "must be 1ns to " + maxDur},
		{"ttl", "0s", nil, "must be 1ns to " + maxDur},
		{"ttl", "-1s", nil, "must be 1ns to " + maxDur},
		{"ttl", "soon", nil, "not a duration"},
		{"ttl", "10", nil, "not a duration"},

		{"max-clients", "1", 1, ""},
		{"max-clients", "2147483647", 2147483647, ""},
		{"max-clients", "2147483648", nil, "must be 1 to 2147483647"},
		{"max-clients", "0", nil, "must be 1 to 2147483647"},
		{"max-clients", "many", nil, "not a whole number"},

		{"max-parallel", "1", 1, ""},
		{"max-parallel", "1048576", 1048576, ""},
		{"max-parallel", "1048577", nil, "must be 1 to 1048576"},
		{"max-parallel", "9007199254740993", nil, "must be 1 to 1048576"},
		{"max-parallel", "0", nil, "must be 1 to 1048576"},

		{"loops", "0", 0, ""},
		{"loops", "256", 256, ""},
		{"loops", "257", nil, "must be 0 to 256"},
		{"loops", "-1", nil, "must be 0 to 256"},

		{"backend-timeout", "1ms", time.Millisecond, ""},
		{"backend-timeout", maxDur, time.Duration(math.MaxInt64), ""},
		{"backend-timeout", "0", nil, "must be 1ns to " + maxDur},
		{"backend-timeout", "-1s", nil, "must be 1ns to " + maxDur},
		{"backend-timeout", "3000000h", nil, "must be 1ns to " + maxDur},

		{"stale-if-error", "0", time.Duration(0), ""},
		{"stale-if-error", maxDur, time.Duration(math.MaxInt64), ""},
		{"stale-if-error", "-1s", nil, "must be 0s to " + maxDur},
		{"stale-if-error", "3000000h", nil, "must be 0s to " + maxDur},

		{"shutdown-timeout", "1s", time.Second, ""},
		{"shutdown-timeout", maxDur, time.Duration(math.MaxInt64), ""},
		{"shutdown-timeout", "0s", nil, "must be 1ns to " + maxDur},

		{"idle-timeout", "0", time.Duration(0), ""},
		{"idle-timeout", "5m", 5 * time.Minute, ""},
		{"idle-timeout", "-1s", nil, "must be 0s to " + maxDur},
		{"tcp-keepalive", "0", time.Duration(0), ""},
		{"tcp-keepalive", "60s", time.Minute, ""},
		{"tcp-keepalive", "-1s", nil, "must be 0s to " + maxDur},

		{"invalidation", "false", false, ""},
		{"invalidation", "maybe", nil, "parse error"},
		{"respect-redis-ttl", "0", false, ""},
		{"pin-cpus", "F", false, ""},
		{"track-prefix", "user:,session:", "user:,session:", ""},
		{"track-prefix", "user:, session:,user:1", nil, `--track-prefix: "user:" and "user:1" overlap, which Redis refuses: keep the shorter`},
		{"track-prefix", "a,a", nil, `--track-prefix: "a" and "a" overlap`},

		{"log-level", "WARN", "WARN", ""},
		{"log-level", "loud", nil, `--log-level: must be debug, info, warn or error, got "loud"`},

		{"rate-limit", "1000", 1000, ""},
		{"rate-limit", "0", 0, ""},
		{"rate-limit", "-1", nil, "must be 0 to 1000000000"},
		{"rate-limit", "1000000001", nil, "must be 0 to 1000000000"},
		{"rate-limit-per-client", "50", 50, ""},
		{"rate-limit-per-client", "x", nil, "--rate-limit-per-client"},

		{"pprof", "true", true, ""},

		{"require-pass", "s3cret", "s3cret", ""},
		{"require-pass", " s3cret", nil, "must not begin or end with white space"},
		{"protected-mode", "false", false, ""},
		{"protected-mode", "maybe", nil, "--protected-mode"},
		{"pprof", "127.0.0.1:6060", nil, "\"127.0.0.1:6060\""}, // not a switch: profiles moved to the admin port

		{"admin-listen", "0.0.0.0:9380", "0.0.0.0:9380", ""},
		{"admin-listen", "9380", nil, "--admin-listen: must be host:port"},

		{"version", "true", true, ""},

		{"log-format", "json", "json", ""},
		{"log-format", "yaml", nil, `--log-format: must be text or json, got "yaml"`},
	} {
		for _, via := range []string{"flag", "env"} {
			args, vars := []string{"--" + tc.flag + "=" + tc.value}, map[string]string(nil)
			if via == "env" {
				args, vars = nil, map[string]string{envName(tc.flag): tc.value}
			}
			c, err := parseConfig(args, env(vars), io.Discard)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("%s %s=%s: %v, want it accepted", via, tc.flag, tc.value, err)
			case tc.err == "" && field[tc.flag](c) != tc.want:
				t.Errorf("%s %s=%s: read %v, want %v", via, tc.flag, tc.value, field[tc.flag](c), tc.want)
			case tc.err != "" && err == nil:
				t.Errorf("%s %s=%s: accepted (%v), want %q", via, tc.flag, tc.value, field[tc.flag](c), tc.err)
			case tc.err != "":
				var ue usageError
				if msg := err.Error(); !errors.As(err, &ue) || !strings.Contains(msg, tc.err) ||
					!strings.Contains(msg, "--"+tc.flag) || strings.Contains(msg, "\n") {
					t.Errorf("%s %s=%s: %q, want one usage error naming --%s and saying %q", via, tc.flag, tc.value, msg, tc.flag, tc.err)
				}
			}
		}
	}
}

// Every flag is in TestFlagRanges' table, so a new one gets its range decided.
func TestFlagRangesCoverEveryFlag(t *testing.T) {
	var usage strings.Builder
	_, _ = parseConfig([]string{"--help"}, env(nil), &usage)
	src, err := os.ReadFile("main_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(usage.String(), "\n") {
		name, ok := strings.CutPrefix(line, "  --")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		if !strings.Contains(string(src), "\t\t{\""+name+"\", ") {
			t.Errorf("--%s has no row in TestFlagRanges", name)
		}
	}
}

// The help states each numeric flag's range, as the errors do.
func TestHelpStatesRanges(t *testing.T) {
	var out strings.Builder
	_, _ = parseConfig([]string{"--help"}, env(nil), &out)
	for _, want := range []string{
		"  --capacity keys\n", "allowed: 0 to 1099511627264\n",
		"  --ttl duration\n", "allowed: 1ns to 2562047h47m16.854775807s",
		"  --loops int\n", "allowed: 0 to 256\n",
		"allowed: 0 (no limit) to 9223372036854775807 bytes",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

// writeFile writes content to a file name in a temporary directory of t and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The password file's content is the password, less one line ending; the
// credentials and TLS flags refuse to say again what --redis says, or to
// both verify and not verify the certificate.
func TestRedisCredentials(t *testing.T) {
	for content, want := range map[string]string{"pw": "pw", "pw\n": "pw", "pw\r\n": "pw", "pw\n\n": "pw\n", " pw ": " pw "} {
		c, err := parseConfig([]string{"--redis-password-file", writeFile(t, "pw", content)}, env(nil), io.Discard)
		if err != nil || c.redisPassword != want {
			t.Errorf("file %q: password %q, %v; want %q", content, c.redisPassword, err, want)
		}
	}
	pwFile, caFile := writeFile(t, "pw", "s3cret"), redistest.NewCA(t).File
	for _, tc := range []struct {
		args []string
		want string // the error, "" if accepted
	}{
		{[]string{"--redis", "redis://u@h:1", "--redis-user", "v"}, "--redis-user: the --redis URL names a user too"},
		{[]string{"--redis", "redis://u:p@h:1", "--redis-password-file", pwFile}, "--redis-password-file: the --redis URL has a password too"},
		{[]string{"--redis", "redis://:p@h:1", "--redis-password-file", pwFile}, "--redis-password-file: the --redis URL has a password too"},
		{[]string{"--redis-tls-ca", caFile, "--redis-tls-insecure"}, "--redis-tls-insecure: it skips the verification --redis-tls-ca is for"},
		{[]string{"--redis", "rediss://h:1?skip_verify=true", "--redis-tls-ca", caFile}, "--redis-tls-ca: the --redis URL says skip_verify"},
		{[]string{"--redis", "unix:///run/redis.sock", "--redis-tls-insecure"}, "--redis: a unix:// socket has no TLS"},
		{[]string{"--redis", "redis://u@h:1", "--redis-password-file", pwFile}, ""}, // the user in the URL, the password in the file
		{[]string{"--redis", "redis://:p@h:1", "--redis-user", "v"}, ""},
		{[]string{"--redis", "rediss://h:1", "--redis-tls-ca", caFile}, ""},
	} {
		_, err := parseConfig(tc.args, env(nil), io.Discard)
		var ue usageError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v, want it accepted", tc.args, err)
		case tc.want != "" && (!errors.As(err, &ue) || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%v: %v, want a usage error %q", tc.args, err, tc.want)
		}
	}
}
