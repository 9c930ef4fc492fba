package server

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/internal/lookuptest"
	"github.com/redis-proxy/redis-proxy/proto"
)

// readAnswers reads the HTTP answers in out, one per method given, and
// returns them with their bodies.
func readAnswers(t *testing.T, out string, methods ...string) ([]*http.Response, []string) {
	t.Helper()
	r := bufio.NewReader(strings.NewReader(out))
	var responses []*http.Response
	var bodies []string
	for _, m := range methods {
		res, err := http.ReadResponse(r, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("answer %d of %q: %v", len(responses), out, err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		responses, bodies = append(responses, res), append(bodies, string(body))
	}
	if r.Buffered() != 0 {
		t.Fatalf("%d bytes after the answers", r.Buffered())
	}
	return responses, bodies
}

func decodeLookup(t *testing.T, res *http.Response, body string) lookuptest.Answer {
	t.Helper()
	a, err := lookuptest.Decode([]byte(body), res.StatusCode)
	if err != nil || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v: %.80q: %v", res.StatusCode, res.Header, body, err)
	}
	return a
}

// /lookup?key= is served as GET /<key> is, from the cache or Redis, and
// answered in JSON; values of any size are encoded whole, in request order
// with the raw answers around them.
func TestJSONLookup(t *testing.T) {
	redis, s, lp := newTestProxy(t)
	big := strings.Repeat("b\n", bodyAt) // escaped, so not written by reference
	redis.Do("SET", "fetched", "from redis")
	redis.Do("SET", "big fetched", big)
	redis.Do("RPUSH", "list", "x")
	s.cache.Set("cached", []byte("from cache"))
	s.cache.Set("big cached", []byte(big))
	c := lp.open(t)
	c.send("GET /lookup?key=fetched HTTP/1.1\r\n\r\n" +
		"GET /lookup?key=cached HTTP/1.1\r\n\r\n" +
		"GET /cached HTTP/1.1\r\n\r\n" +
		"GET /lookup?key=big+fetched HTTP/1.1\r\n\r\n" +
		"GET /lookup?key=big%20cached HTTP/1.1\r\n\r\n" +
		"HEAD /lookup?key=big%20cached HTTP/1.1\r\n\r\n" +
		"GET /lookup?key=none HTTP/1.1\r\n\r\n" +
		"GET /lookup?key=list HTTP/1.1\r\n\r\n" +
		"GET /lookup?key= HTTP/1.1\r\n\r\n" +
		"DELETE /lookup?key=k HTTP/1.1\r\nConnection: close\r\n\r\n")
	lp.runUntil(t, func() bool { return c.closed })
	res, bodies := readAnswers(t, c.takeOut(), "GET", "GET", "GET", "GET", "GET", "HEAD", "GET", "GET", "GET", "DELETE")
	if res[2].Header.Get("Content-Type") != "application/octet-stream" || bodies[2] != "from cache" {
		t.Errorf("raw answer among JSON ones: %v %q", res[2].Header, bodies[2])
	}
	for i, want := range []struct {
		key, value, cacheStatus string
	}{
		{"fetched", "from redis", cacheMiss},
		{"cached", "from cache", cacheHit},
		{},
		{"big fetched", big, cacheMiss},
		{"big cached", big, cacheHit},
	} {
		if want.key == "" {
			continue
		}
		a := decodeLookup(t, res[i], bodies[i])
		if a.Status != 200 || *a.Key != want.key || *a.Value != want.value || res[i].Header.Get("Cache-Status") != want.cacheStatus {
			t.Errorf("answer %d: %d %v %.40q", i, res[i].StatusCode, res[i].Header, bodies[i])
		}
	}
	if res[5].ContentLength != res[4].ContentLength || bodies[5] != "" {
		t.Errorf("HEAD: Content-Length %d, GET's %d, body %d bytes", res[5].ContentLength, res[4].ContentLength, len(bodies[5]))
	}
	for i, want := range []struct {
		status int
		body   string
	}{
		{404, `{"key":"none","status":404}`},
		{502, `{"key":"list","status":502,"error":"backend error: WRONGTYPE Operation against a key holding the wrong kind of value"}`},
		{400, `{"status":400,"error":"empty key: use GET /lookup?key=<key>"}`},
		{405, `{"key":"k","status":405,"error":"method not allowed: use GET or HEAD"}`},
	} {
		i += 6
		decodeLookup(t, res[i], bodies[i])
		if res[i].StatusCode != want.status || bodies[i] != want.body {
			t.Errorf("answer %d: %d %q, want %d %s", i, res[i].StatusCode, bodies[i], want.status, want.body)
		}
	}
	if res[9].Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("405 without Allow: %v", res[9].Header)
	}
}

// Every fetch result gets the same status in both forms, and the JSON
// answer's error is the text answer's line.
func TestJSONResultStatuses(t *testing.T) {
	for _, r := range []backend.Result{
		{Value: []byte("v"), Found: true},
		{},
		{Err: backend.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")},
		{Err: backend.ErrTimeout},
		{Err: backend.ErrOverloaded},
		{Err: &backend.UnavailableError{Err: errors.New("dial tcp: connection refused")}},
	} {
		var raw, js proto.ResponseOptions
		js.JSON = true
		res, bodies := readAnswers(t, string(appendHTTPResult(nil, &raw, []byte("k"), r))+
			string(appendHTTPResult(nil, &js, []byte("k"), r)), "GET", "GET")
		a := decodeLookup(t, res[1], bodies[1])
		if res[0].StatusCode != res[1].StatusCode || *a.Key != "k" {
			t.Errorf("%v: raw %d, JSON %d %q", r.Err, res[0].StatusCode, res[1].StatusCode, bodies[1])
		}
		switch res[0].StatusCode {
		case 200, 404:
			if a.Error != nil {
				t.Errorf("%d with an error: %q", res[0].StatusCode, bodies[1])
			}
		default:
			if a.Error == nil || *a.Error+"\n" != bodies[0] {
				t.Errorf("%v: JSON error %q, text %q", r.Err, bodies[1], bodies[0])
			}
		}
	}
}
