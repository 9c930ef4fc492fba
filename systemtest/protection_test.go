// Client-side protection against the real binary: --require-pass over RESP
// and HTTP, and protected mode turning away a client that is not on
// loopback (reached through this machine's own non-loopback address).

package systemtest

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

func TestRequirePass(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	admin := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	p := startProxy(t, redis.Addr, "--require-pass", "s3cret", "--admin-listen", admin)
	rc := dialRESP(t, p.addr)
	for _, step := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"GET", "k"}, "ERR: NOAUTH Authentication required."},
		{[]string{"AUTH", "nope"}, "ERR: WRONGPASS invalid username-password pair or user is disabled."},
		{[]string{"AUTH", "s3cret"}, "OK"},
		{[]string{"GET", "k"}, "v"},
	} {
		if got := show(rc.do(step.cmd...)); got != step.want {
			t.Fatalf("%v: %q, want %q", step.cmd, got, step.want)
		}
	}
	hc := dialHTTP(t, p.addr)
	hc.write(getRequest("k"))
	if res, body := hc.read("GET"); res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != `Bearer realm="redis-proxy"` || res.Close {
		t.Fatalf("without a token: %d %q %v", res.StatusCode, body, res.Header)
	}
	hc.write("GET /k HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer s3cret\r\n\r\n")
	if res, body := hc.read("GET"); res.StatusCode != 200 || body != "v" {
		t.Fatalf("with the token: %d %q", res.StatusCode, body)
	}

	// The admin port: health and metrics for anyone, but the hot keys name
	// keys, so they need the password too.
	if code, _ := adminGet(t, admin, "/metrics"); code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	if code, _ := adminGet(t, admin, "/debug/hotkeys"); code != 401 {
		t.Fatalf("/debug/hotkeys without the token: %d", code)
	}
	req, _ := http.NewRequest("GET", "http://"+admin+"/debug/hotkeys", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("/debug/hotkeys with the token: %v %v", res, err)
	}
	res.Body.Close()
}

// nonLoopbackIP returns an IPv4 address of this machine that is not on
// loopback, or skips the test.
func nonLoopbackIP(t *testing.T) net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok && !ipnet.IP.IsLoopback() && ipnet.IP.To4() != nil {
			return ipnet.IP
		}
	}
	t.Skip("no non-loopback IPv4 address to connect through")
	return nil
}

func TestProtectedMode(t *testing.T) {
	ip := nonLoopbackIP(t)
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	port := strconv.Itoa(redistest.FreePort(t))
	p := startProxy(t, redis.Addr, "--listen", "0.0.0.0:"+port) // every interface, no password
	if got := respGet(dialRESP(t, p.addr), "k"); got != "v" {
		t.Fatalf("a loopback client: %q", got)
	}
	remote := net.JoinHostPort(ip.String(), port)
	rc := dialRESP(t, remote)
	rc.write("GET k\r\n")
	if got := show(rc.read()); !strings.HasPrefix(got, "ERR: DENIED redis-proxy is in protected mode") || !strings.Contains(got, "--require-pass") {
		t.Fatalf("a client from %s: %q", ip, got)
	}
	rc.expectClosed()
	if got := proxyInfo(t, p.addr, "denied_connections"); got != "1" {
		t.Fatalf("denied_connections %s", got)
	}

	port = strconv.Itoa(redistest.FreePort(t))
	startProxy(t, redis.Addr, "--listen", "0.0.0.0:"+port, "--protected-mode=false")
	if got := respGet(dialRESP(t, net.JoinHostPort(ip.String(), port)), "k"); got != "v" {
		t.Fatalf("with --protected-mode=false, a client from %s: %q", ip, got)
	}
}
