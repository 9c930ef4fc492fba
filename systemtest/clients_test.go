package systemtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/valyala/fasthttp"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// Real clients, as users run them, against the proxy: each must connect with
// its own handshake, read hits, misses and MGETs, and see a refused write as
// an ordinary error.

func TestGoRedisClient(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	redis.Do("SET", "k2", "v2")
	p := startProxy(t, redis.Addr)
	for _, protocol := range []int{2, 3} {
		t.Run(fmt.Sprint("RESP", protocol), func(t *testing.T) {
			ctx := context.Background()
			rdb := goredis.NewClient(&goredis.Options{Addr: p.addr, Protocol: protocol, MaxRetries: -1})
			defer rdb.Close()
			if v, err := rdb.Get(ctx, "k").Result(); err != nil || v != "v" {
				t.Fatalf("GET: %q %v", v, err)
			}
			if _, err := rdb.Get(ctx, "missing").Result(); !errors.Is(err, goredis.Nil) {
				t.Fatalf("GET missing: %v", err)
			}
			vals, err := rdb.MGet(ctx, "k", "missing", "k2").Result()
			if err != nil || fmt.Sprint(vals) != "[v <nil> v2]" {
				t.Fatalf("MGET: %v %v", vals, err)
			}
			if err := rdb.Set(ctx, "k", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "unknown command") {
				t.Fatalf("SET: %v", err)
			}
			if err := rdb.Ping(ctx).Err(); err != nil {
				t.Fatalf("PING after a refused command: %v", err)
			}
			cmds, err := rdb.Pipelined(ctx, func(pipe goredis.Pipeliner) error {
				for range 50 {
					pipe.Get(ctx, "k")
					pipe.Get(ctx, "k2")
				}
				return nil
			})
			if err != nil || len(cmds) != 100 || cmds[99].(*goredis.StringCmd).Val() != "v2" {
				t.Fatalf("pipeline: %d commands, %v", len(cmds), err)
			}
		})
	}
}

func TestRueidisClient(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr)
	for _, resp2 := range []bool{false, true} {
		t.Run(fmt.Sprint("RESP2=", resp2), func(t *testing.T) {
			// The proxy does no client-side-caching tracking: rueidis needs DisableCache.
			c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{p.addr}, DisableCache: true, AlwaysRESP2: resp2})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			if v, err := c.Do(ctx, c.B().Get().Key("k").Build()).ToString(); err != nil || v != "v" {
				t.Fatalf("GET: %q %v", v, err)
			}
			if err := c.Do(ctx, c.B().Get().Key("missing").Build()).Error(); !rueidis.IsRedisNil(err) {
				t.Fatalf("GET missing: %v", err)
			}
			vals, err := c.Do(ctx, c.B().Mget().Key("k", "missing").Build()).ToArray()
			if err != nil || len(vals) != 2 || !vals[1].IsNil() {
				t.Fatalf("MGET: %v %v", vals, err)
			}
			if v, _ := vals[0].ToString(); v != "v" {
				t.Fatalf("MGET first: %q", v)
			}
			if err := c.Do(ctx, c.B().Set().Key("k").Value("x").Build()).Error(); err == nil || !strings.Contains(err.Error(), "unknown command") {
				t.Fatalf("SET: %v", err)
			}
		})
	}
}

func TestHTTPClients(t *testing.T) {
	redis := redistest.Start(t)
	keys := []string{"plain", "with space", "a/b//../c", "q?x=1", "\x00\xff"}
	for _, k := range keys {
		redis.Do("SET", k, "value of "+k)
	}
	p := startProxy(t, redis.Addr)

	client := &http.Client{Timeout: 10 * time.Second}
	for _, k := range keys {
		u := &url.URL{Scheme: "http", Host: p.addr, Path: "/" + k, RawPath: "/" + escape(k)}
		res, err := client.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != "value of "+k {
			t.Errorf("net/http %q: %d %q", k, res.StatusCode, body)
		}
	}

	hc := &fasthttp.HostClient{Addr: p.addr, DisablePathNormalizing: true}
	for _, k := range keys {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("/" + escape(k))
		req.Header.SetHost(p.addr)
		if err := hc.DoTimeout(req, res, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if res.StatusCode() != 200 || string(res.Body()) != "value of "+k {
			t.Errorf("fasthttp %q: %d %q", k, res.StatusCode(), res.Body())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(res)
	}
}

func TestCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	redis := redistest.Start(t)
	redis.Do("SET", "a b", "spaced")
	p := startProxy(t, redis.Addr)
	out, err := exec.Command("curl", "-sS", "--path-as-is", "http://"+p.addr+"/a%20b", "http://"+p.addr+"/missing", "-w", " %{http_code}\n").CombinedOutput()
	if err != nil || string(out) != "spaced 200\nkey not found\n 404\n" {
		t.Fatalf("curl: %q %v", out, err)
	}
}

func TestRedisCLIPipe(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr)
	_, port, _ := net.SplitHostPort(p.addr)
	var in strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&in, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(fmt.Sprint("k", i%3)), fmt.Sprint("k", i%3))
	}
	cmd := exec.Command("redis-cli", "-p", port, "--pipe")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "errors: 0, replies: 1000") {
		t.Fatalf("redis-cli --pipe: %v\n%s", err, out)
	}
}

// A request trickled in one byte at a time still parses.
func TestTrickledRequests(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr)
	rc := dialRESP(t, p.addr)
	for _, b := range []byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") {
		rc.write(string(b))
		time.Sleep(time.Millisecond)
	}
	if got := show(rc.read()); got != "v" {
		t.Fatalf("RESP: %q", got)
	}
	hc := dialHTTP(t, p.addr)
	for _, b := range []byte("GET /k HTTP/1.1\r\nHost: x\r\n\r\n") {
		hc.write(string(b))
		time.Sleep(time.Millisecond)
	}
	if res, body := hc.read("GET"); res.StatusCode != 200 || body != "v" {
		t.Fatalf("HTTP: %d %q", res.StatusCode, body)
	}
}

// The RESP limits Redis has: each is a protocol error, and the connection closes.
func TestRESPLimits(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	for name, tc := range map[string]struct{ raw, want string }{
		"bulk over 512 MiB":   {"*2\r\n$3\r\nGET\r\n$536870913\r\n", "ERR: ERR Protocol error: invalid bulk length"},
		"multibulk over 1M":   {"*1048577\r\n", "ERR: ERR Protocol error: invalid multibulk length"},
		"inline over 64 KiB":  {strings.Repeat("x", 70<<10), "ERR: ERR Protocol error: too big inline request"},
		"count line too long": {"*" + strings.Repeat("1", 70<<10), "ERR: ERR Protocol error: too big mbulk count string"},
	} {
		rc := dialRESP(t, p.addr)
		rc.write(tc.raw)
		if got := show(rc.read()); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
			continue
		}
		rc.expectClosed()
	}
}

// A client that sends without reading is cut off once its unread answers
// pass the output limit, and the proxy keeps serving everyone else.
func TestClientThatNeverReads(t *testing.T) {
	redis := redistest.Start(t)
	big := strings.Repeat("x", 1<<20)
	redis.Do("SET", "big", big)
	p := startProxy(t, redis.Addr)
	respGet(dialRESP(t, p.addr), "big") // cached: every GET below is a hit
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	req := []byte(strings.Repeat("GET big\r\n", 16))
	deadline := time.Now().Add(30 * time.Second)
	sent := 0
	for {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(req); err != nil {
			t.Logf("write failed after %d requests, %v: %v", sent, time.Since(deadline.Add(-30*time.Second)), err)
			break // the proxy closed the connection
		}
		sent += 16
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never cut off a client that asked for %d MiB without reading", sent)
		}
	}
	// Everything the proxy still sends ends in a close, well short of what was asked.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !isConnReset(err) {
		t.Fatalf("reading after the cut-off: %v", err)
	}
	if n >= int64(sent)<<20 {
		t.Fatalf("received all %d answers; expected a cut-off", sent)
	}
	if got := respGet(dialRESP(t, p.addr), "big"); got != big {
		t.Fatalf("other clients: %d bytes", len(got))
	}
}

func isConnReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}
