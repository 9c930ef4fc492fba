// The proxy's own connections to Redis: through TLS, and as an ACL user.
//
// Each test starts a redis-server that serves TLS only (a throwaway CA,
// redistest) or has an ACL user, and proxies configured right and wrong
// against it. A proxy configured right serves misses and hits, and its
// invalidation tracking works over the same kind of connection, so a write
// in Redis shows through it within invalidationBudget (its TTL is an hour).
// A proxy configured wrong answers misses with an error and logs the real
// cause on its "Redis unreachable" line; its tracking is off (--invalidation
// =false), since startProxy waits for tracking to settle and it never would.
// No proxy's log ever holds the password.

package systemtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
	"github.com/tidwall/resp"
)

// A proxy reading from Redis over TLS (rediss:// and --redis-tls-ca) serves
// misses and hits, and tracking on the TLS connection brings writes in.
func TestTLSBackend(t *testing.T) {
	redis := redistest.StartWith(t, redistest.Options{TLS: true})
	redis.Do("SET", "k", "v1")
	p := startProxy(t, fmt.Sprintf("rediss://127.0.0.1:%d", redis.Port), "--backend-timeout", "10s", "--redis-tls-ca", redis.CA.File,
		"--ttl", "1h", "--log-level", "info")
	rc := dialRESP(t, p.addr)
	for _, want := range []string{"v1", "v1"} { // a miss, then a hit
		if got := respGet(rc, "k"); got != want {
			t.Fatalf("GET k: %q, want %q", got, want)
		}
	}
	if got := respGet(rc, "missing"); got != "(nil)" {
		t.Fatalf("GET missing: %q", got)
	}
	if hits := proxyInfo(t, p.addr, "keyspace_hits"); hits != "1" {
		t.Fatalf("keyspace_hits:%s, want 1 (the second GET of k)", hits)
	}
	if state := proxyInfo(t, p.addr, "invalidation"); state != "on" {
		t.Fatalf("invalidation: %s", state)
	}
	servesWithin(t, rc, redis.Do, "k", "v2")
	if !strings.Contains(startedLine(t, p), "redis_tls=true redis_user=default") {
		t.Fatalf("the started line does not say TLS:\n%s", p.stderr)
	}
}

// A proxy that cannot verify Redis's certificate (another CA; a name the
// certificate is not for) serves no misses and logs the certificate error;
// --redis-tls-insecure reads with neither the CA nor the right name, and
// turns TLS on for a plain host:port.
func TestTLSBackendVerification(t *testing.T) {
	redis := redistest.StartWith(t, redistest.Options{TLS: true,
		Config: []string{"--bind", "127.0.0.1", "127.0.0.2"}}) // the certificate is for 127.0.0.1 and localhost only
	redis.Do("SET", "k", "v")
	for _, tc := range []struct {
		what, redis, ca, want string
	}{
		{"another CA", fmt.Sprintf("rediss://127.0.0.1:%d", redis.Port), redistest.NewCA(t).File,
			"x509: certificate signed by unknown authority"},
		{"another name", fmt.Sprintf("rediss://127.0.0.2:%d", redis.Port), redis.CA.File,
			"x509: certificate is valid for 127.0.0.1, not 127.0.0.2"},
	} {
		p := startProxy(t, tc.redis, "--backend-timeout", "10s", "--redis-tls-ca", tc.ca, "--invalidation=false")
		if got := respGet(dialRESP(t, p.addr), "k"); !strings.HasPrefix(got, "ERR: ERR backend unavailable: tls: failed to verify certificate: "+tc.want) {
			t.Errorf("%s: GET k: %q", tc.what, got)
		}
		unreachableLogged(t, p, tc.want)
	}

	p := startProxy(t, fmt.Sprintf("127.0.0.2:%d", redis.Port), "--backend-timeout", "10s", "--redis-tls-insecure", "--ttl", "1h")
	rc := dialRESP(t, p.addr)
	if got := respGet(rc, "k"); got != "v" {
		t.Fatalf("GET k without verification: %q", got)
	}
	servesWithin(t, rc, redis.Do, "k", "v2")
}

// A proxy with an ACL user (--redis-user, --redis-password-file) allowed
// only what the proxy sends serves GETs and tracks invalidations; with a
// wrong password, or as a user that may not GET, misses fail and the log
// says why. The passwords are in no log, the start-up line included.
func TestACLUser(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("ACL", "SETUSER", "proxy", "on", ">pw-s3cret", "~*", "+get", "+pttl", "+ping", "+client|tracking")
	redis.Do("ACL", "SETUSER", "noget", "on", ">pw-s3cret", "~*", "+pttl", "+ping", "+client|tracking")
	redis.Do("SET", "k", "v1")
	dir := t.TempDir()
	passwordFile := func(password string) string {
		path := filepath.Join(dir, password)
		if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	noPassword := func(p *proxy) {
		t.Helper()
		if log := p.stderr.String(); strings.Contains(log, "s3cret") {
			t.Fatalf("a password was logged:\n%s", log)
		}
	}

	p := startProxy(t, redis.Addr, "--backend-timeout", "10s", "--redis-user", "proxy", "--redis-password-file", passwordFile("pw-s3cret"),
		"--ttl", "1h", "--log-level", "info")
	rc := dialRESP(t, p.addr)
	if got := respGet(rc, "k"); got != "v1" {
		t.Fatalf("GET k as proxy: %q", got)
	}
	if state := proxyInfo(t, p.addr, "invalidation"); state != "on" {
		t.Fatalf("invalidation as proxy: %s", state)
	}
	servesWithin(t, rc, redis.Do, "k", "v2")
	if line := startedLine(t, p); !strings.Contains(line, "redis_tls=false redis_user=proxy") {
		t.Fatalf("the started line does not name the user: %s", line)
	}
	noPassword(p)

	for _, tc := range []struct {
		what, user, password, want string
	}{
		{"a wrong password", "proxy", "wrong-s3cret", "WRONGPASS invalid username-password pair or user is disabled."},
		{"a user that may not GET", "noget", "pw-s3cret", "permissions to run the 'get' command"}, // Redis 7.0: "NOPERM this user has no", 7.2: "NOPERM User noget has no"
	} {
		p := startProxy(t, redis.Addr, "--backend-timeout", "10s", "--redis-user", tc.user, "--redis-password-file", passwordFile(tc.password),
			"--invalidation=false", "--log-level", "info")
		if got := respGet(dialRESP(t, p.addr), "k"); !strings.HasPrefix(got, "ERR: ERR backend unavailable: ") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: GET k: %q", tc.what, got)
		}
		unreachableLogged(t, p, tc.want)
		noPassword(p)
	}
}

// servesWithin sets key to want in Redis (through do: a Server's or a
// Cluster's Do) and waits, at most invalidationBudget, until the proxy
// behind rc serves it.
func servesWithin(t *testing.T, rc *respConn, do func(...any) resp.Value, key, want string) {
	t.Helper()
	do("SET", key, want)
	changed := time.Now()
	for got := respGet(rc, key); got != want; got = respGet(rc, key) {
		if time.Since(changed) > invalidationBudget {
			t.Fatalf("after SET %s %s: %q still served %v after the change", key, want, got, time.Since(changed))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startedLine is p's "started" log line (it logs it once it listens, which
// startProxy has waited for; the line may still be on its way).
func startedLine(t *testing.T, p *proxy) string {
	t.Helper()
	var started string
	eventually(t, "the started line", func() string {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(line, `msg=started`) {
				started = line
				return ""
			}
		}
		return "not logged"
	})
	return started
}

// unreachableLogged waits until p has logged that Redis is unreachable for
// a cause that says want.
func unreachableLogged(t *testing.T, p *proxy, want string) {
	t.Helper()
	eventually(t, "a Redis unreachable line saying "+want, func() string {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(line, "Redis unreachable") && strings.Contains(line, want) {
				return ""
			}
		}
		return "not logged:\n" + p.stderr.String()
	})
}
