package systemtest

import (
	"bufio"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

func TestRESPCommands(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	redis.Do("SET", "k2", "v2")
	redis.Do("RPUSH", "list", "x")
	p := startProxy(t, redis.Addr)
	rc := dialRESP(t, p.addr)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "PONG"},
		{[]string{"ping", "hello"}, "hello"},
		{[]string{"ECHO", "a b"}, "a b"},
		{[]string{"SELECT", "0"}, "OK"},
		{[]string{"SELECT", "1"}, "ERR: ERR DB index is out of range"},
		{[]string{"SELECT", "x"}, "ERR: ERR value is not an integer or out of range"},
		{[]string{"CLIENT", "SETNAME", "tester"}, "OK"},
		{[]string{"CLIENT", "GETNAME"}, "tester"},
		{[]string{"CLIENT", "SETINFO", "LIB-NAME", "go-test"}, "OK"},
		{[]string{"COMMAND", "COUNT"}, "0"},
		{[]string{"GET"}, "ERR: ERR wrong number of arguments for 'get' command"},
		{[]string{"SET", "k", "x"}, "ERR: ERR unknown command 'SET', with args beginning with: 'k' 'x' "},
		{[]string{"DEL", "k"}, "ERR: ERR unknown command 'DEL', with args beginning with: 'k' "},
		{[]string{"GET", "k"}, "v"},
		{[]string{"GET", "list"}, "ERR: WRONGTYPE Operation against a key holding the wrong kind of value"},
	} {
		if got := show(rc.do(tc.args...)); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.args, got, tc.want)
		}
	}
	if v := rc.do("COMMAND"); len(v.Array()) != 0 || v.IsNull() {
		t.Errorf("COMMAND: %v", v)
	}
	if v := rc.do("COMMAND", "DOCS"); len(v.Array()) != 0 || v.IsNull() {
		t.Errorf("COMMAND DOCS: %v", v)
	}
	for pattern, want := range map[string]string{"save": "[save ]", "appendonly": "[appendonly no]", "nosuch": "[]"} {
		v := rc.do("CONFIG", "GET", pattern)
		var got []string
		for _, e := range v.Array() {
			got = append(got, e.String())
		}
		if s := "[" + strings.Join(got, " ") + "]"; s != want {
			t.Errorf("CONFIG GET %s: %s, want %s", pattern, s, want)
		}
	}
	v := rc.do("MGET", "k", "missing", "list", "k2")
	var got []string
	for _, e := range v.Array() {
		got = append(got, show(e))
	}
	if s := strings.Join(got, ","); s != "v,(nil),(nil),v2" {
		t.Errorf("MGET: %s", s)
	}
	if info := rc.do("INFO").String(); !strings.Contains(info, "keyspace_hits:") || !strings.Contains(info, "# Stats") {
		t.Errorf("INFO: %q", info)
	}
	// A refused write reached nothing: Redis still has the old value.
	if v := redis.Do("GET", "k"); v.String() != "v" {
		t.Errorf("SET went through to Redis: %q", v.String())
	}
	// WRONGTYPE is not cached: once the key holds a string, it is served.
	redis.Do("DEL", "list")
	redis.Do("SET", "list", "now-a-string")
	if got := respGet(rc, "list"); got != "now-a-string" {
		t.Errorf("after WRONGTYPE: %q", got)
	}
}

func TestRESPInlineAndQuit(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "a b", "spaced")
	p := startProxy(t, redis.Addr)
	rc := dialRESP(t, p.addr)
	rc.write("PING\r\nGET \"a b\"\r\nget 'a b'\n\r\n")
	for _, want := range []string{"PONG", "spaced", "spaced"} {
		if got := show(rc.read()); got != want {
			t.Fatalf("inline: %q, want %q", got, want)
		}
	}
	if got := show(rc.do("QUIT")); got != "OK" {
		t.Fatalf("QUIT: %q", got)
	}
	rc.expectClosed()
}

func TestRESPProtocolError(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	for raw, want := range map[string]string{
		"*1\r\n:5\r\n":               "ERR: ERR Protocol error: expected '$', got ':'",
		"*x\r\n":                     "ERR: ERR Protocol error: invalid multibulk length",
		"*1\r\n$999999999999\r\n":    "ERR: ERR Protocol error: invalid bulk length",
		"GET \"unbalanced\r\n":       "ERR: ERR Protocol error: unbalanced quotes in request",
		"*2\r\n$3\r\nGET\r\n$-5\r\n": "ERR: ERR Protocol error: invalid bulk length",
	} {
		rc := dialRESP(t, p.addr)
		rc.write("PING\r\n" + raw)
		if got := show(rc.read()); got != "PONG" {
			t.Fatalf("%q: first answer %q", raw, got)
		}
		if got := show(rc.read()); got != want {
			t.Errorf("%q: %q, want %q", raw, got, want)
		}
		rc.expectClosed()
	}
}

func TestHTTPAnswers(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "value")
	redis.Do("RPUSH", "list", "x")
	p := startProxy(t, redis.Addr)
	hc := dialHTTP(t, p.addr)

	res, body := hc.readAfter("HEAD /k HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 200 || body != "" || res.ContentLength != 5 {
		t.Fatalf("HEAD: %d %q %d", res.StatusCode, body, res.ContentLength)
	}
	res, body = hc.readAfter("DELETE /k HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" || body == "" {
		t.Fatalf("DELETE: %d %v %q", res.StatusCode, res.Header, body)
	}
	res, body = hc.readAfter("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 400 || !strings.Contains(body, "empty key") {
		t.Fatalf("empty key: %d %q", res.StatusCode, body)
	}
	res, body = hc.readAfter("GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 400 || !strings.Contains(body, "percent") {
		t.Fatalf("bad escape: %d %q", res.StatusCode, body)
	}
	res, body = hc.readAfter("GET /list HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.StatusCode != 502 || !strings.Contains(body, "WRONGTYPE") {
		t.Fatalf("WRONGTYPE: %d %q", res.StatusCode, body)
	}
	// All of the above kept the connection open.
	if status, body := hc.get("k"); status != 200 || body != "value" {
		t.Fatalf("after refusals: %d %q", status, body)
	}
	res, _ = hc.readAfter("GET /k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if res.StatusCode != 200 || !res.Close {
		t.Fatalf("Connection: close: %d close=%v", res.StatusCode, res.Close)
	}
	hc.expectClosed()
}

func TestHTTP10(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "value")
	p := startProxy(t, redis.Addr)
	hc := dialHTTP(t, p.addr)
	res, body := hc.readAfter("GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if res.StatusCode != 200 || body != "value" || res.Header.Get("Connection") != "keep-alive" {
		t.Fatalf("1.0 keep-alive: %d %q %v", res.StatusCode, body, res.Header)
	}
	res, body = hc.readAfter("GET /k HTTP/1.0\r\n\r\n")
	if res.StatusCode != 200 || body != "value" {
		t.Fatalf("1.0: %d %q", res.StatusCode, body)
	}
	hc.expectClosed()
}

func TestHTTPMalformed(t *testing.T) {
	redis := redistest.Start(t)
	p := startProxy(t, redis.Addr)
	long := strings.Repeat("a", 9000)
	for raw, status := range map[string]int{
		"GET /k HTTP/1.1\r\nBad Header\r\n\r\n":                          400,
		"GET /k HTTP/1.1\r\nX: " + long + "\r\n\r\n":                     431,
		"GET /" + long + " HTTP/1.1\r\nHost: x\r\n\r\n":                  414,
		"GET /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": 501,
	} {
		hc := dialHTTP(t, p.addr)
		res, body := hc.readAfter(raw)
		if res.StatusCode != status || !res.Close || body == "" {
			t.Errorf("%.30q: %d close=%v %q, want %d and close", raw, res.StatusCode, res.Close, body, status)
			continue
		}
		hc.expectClosed()
	}
}

// HELLO switches a connection between RESP2 and RESP3, as Redis 7 does, and
// answers describe themselves in the protocol chosen.
func TestHELLO(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	expect := func(send, want string) {
		t.Helper()
		if _, err := c.Write([]byte(send)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil || string(got) != want {
			t.Fatalf("%q: got %q (%v), want %q", send, got, err, want)
		}
	}
	hello := func(proto string) string {
		header := "*14\r\n"
		if proto == "3" {
			header = "%7\r\n"
		}
		return header + "$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n:" + proto + "\r\n$2\r\nid\r\n:"
	}
	expect("HELLO 3\r\n", hello("3"))
	if _, err := r.ReadString('\n'); err != nil { // the connection id
		t.Fatal(err)
	}
	expect("", "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n")
	expect("GET nope\r\n", "_\r\n")
	expect("GET k\r\n", "$1\r\nv\r\n")
	expect("MGET k nope\r\n", "*2\r\n$1\r\nv\r\n_\r\n")
	expect("CONFIG GET appendonly\r\n", "%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n")
	expect("HELLO 4\r\n", "-NOPROTO unsupported protocol version\r\n")
	expect("HELLO 3 AUTH someone secret\r\n", "-WRONGPASS invalid username-password pair or user is disabled.\r\n")
	expect("HELLO 2 SETNAME app\r\n", hello("2"))
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	expect("", "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n")
	expect("GET nope\r\n", "$-1\r\n")
	expect("CLIENT GETNAME\r\n", "$3\r\napp\r\n")
	expect("AUTH secret\r\n", "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n")
}

// Every HTTP answer about a key says how the cache came by it (Cache-Status,
// RFC 9211): fetched on a miss, then from the cache; a missing key is a miss
// each time (missing keys are not cached).
func TestCacheStatus(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "v")
	p := startProxy(t, redis.Addr, "--ttl", "1m")
	hc := dialHTTP(t, p.addr)
	for _, c := range []struct {
		key, status string
		code        int
		ages        []string // the Age header allowed: it counts whole seconds, so a boundary may pass
		wait        time.Duration
	}{
		{"k", "redis-proxy; fwd=miss", 200, []string{"0"}, 0},
		{"k", "redis-proxy; hit", 200, []string{"0", "1"}, 0},
		{"nothere", "redis-proxy; fwd=miss", 404, []string{""}, 0},
		{"nothere", "redis-proxy; fwd=miss", 404, []string{""}, 0},
		{"k", "redis-proxy; hit", 200, []string{"2", "3"}, 2 * time.Second},
	} {
		time.Sleep(c.wait)
		hc.write(getRequest(c.key))
		res, _ := hc.read("GET")
		if res.StatusCode != c.code || res.Header.Get("Cache-Status") != c.status || !slices.Contains(c.ages, res.Header.Get("Age")) {
			t.Errorf("GET /%s: %d, Cache-Status %q, Age %q; want %d, %q, Age in %q", c.key, res.StatusCode, res.Header.Get("Cache-Status"), res.Header.Get("Age"), c.code, c.status, c.ages)
		}
	}
}
