package systemtest

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/lookuptest"
	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// The JSON form, GET /lookup?key=<key>: every answer is read with net/http
// and its body decoded with encoding/json.

// lookup sends GET target and decodes the JSON answer, whose status field
// must be the HTTP status.
func (hc *httpConn) lookup(target string) (*http.Response, lookuptest.Answer) {
	hc.t.Helper()
	res, body := hc.readAfter("GET " + target + " HTTP/1.1\r\nHost: proxy\r\n\r\n")
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		hc.t.Fatalf("%s: %d, Content-Type %q, body %q", target, res.StatusCode, ct, body)
	}
	a, err := lookuptest.Decode([]byte(body), res.StatusCode)
	if err != nil {
		hc.t.Fatalf("%s: body %q: %v", target, body, err)
	}
	return res, a
}

// field returns a field's text, undoing its base64 if encoding says so, or
// "<none>" if the field is absent.
func field(t *testing.T, s *string, encoding string) string {
	t.Helper()
	switch {
	case s == nil:
		return "<none>"
	case encoding == "base64":
		b, err := base64.StdEncoding.DecodeString(*s)
		if err != nil {
			t.Fatalf("%q: %v", *s, err)
		}
		return string(b)
	case encoding != "":
		t.Fatalf("encoding %q", encoding)
	}
	return *s
}

func TestJSONLookup(t *testing.T) {
	redis := redistest.Start(t)
	escaped := "a \"quoted\" \\back\\slash\nnew\r\tline \x00\x01\x1f\x7f ключ €"
	for k, v := range map[string]string{
		"k":        "value",
		"escaped":  escaped,
		"binary":   "\xff\xfe\x00ok\xc3",
		"a b":      "spaced",
		"\xffkey":  "under a key that is not UTF-8",
		"lookup":   "the key named lookup",
		"empty":    "",
		"a+b":      "plus",
		"x&key=y":  "ampersand",
		"ключ/€ ?": "utf-8 key",
	} {
		redis.Do("SET", k, v)
	}
	redis.Do("RPUSH", "list", "x")
	p := startProxy(t, redis.Addr)
	hc := dialHTTP(t, p.addr)

	for _, tt := range []struct {
		target, key, value string
		base64Key, base64  bool
	}{
		{"/lookup?key=k", "k", "value", false, false},
		{"/lookup?key=escaped", "escaped", escaped, false, false},
		{"/lookup?key=binary", "binary", "\xff\xfe\x00ok\xc3", false, true},
		{"/lookup?key=a+b", "a b", "spaced", false, false},
		{"/lookup?key=a%20b", "a b", "spaced", false, false},
		{"/lookup?x=1&key=a%2Bb&key=k", "a+b", "plus", false, false},
		{"/lookup?key=x%26key%3Dy", "x&key=y", "ampersand", false, false},
		{"/lookup?key=%FFkey", "\xffkey", "under a key that is not UTF-8", true, false},
		{"/lookup?key=" + escape("ключ/€ ?"), "ключ/€ ?", "utf-8 key", false, false},
		{"/lookup?key=empty", "empty", "", false, false},
		{"http://proxy/lookup?key=k", "k", "value", false, false},
	} {
		res, a := hc.lookup(tt.target)
		if res.StatusCode != 200 || a.Error != nil ||
			field(t, a.Key, a.KeyEncoding) != tt.key || field(t, a.Value, a.Encoding) != tt.value ||
			(a.KeyEncoding == "base64") != tt.base64Key || (a.Encoding == "base64") != tt.base64 {
			t.Errorf("%s: %d %+v", tt.target, res.StatusCode, a)
		}
	}

	for _, tt := range []struct {
		target, key string
		status      int
		error       string // a prefix of it
	}{
		{"/lookup?key=none", "none", 404, "<none>"},
		{"/lookup?key=list", "list", 502, "backend error: WRONGTYPE "},
		{"/lookup?key=", "<none>", 400, "empty key"},
		{"/lookup?key", "<none>", 400, "empty key"},
		{"/lookup?key=%zz", "<none>", 400, "invalid percent-escape in key"},
	} {
		res, a := hc.lookup(tt.target)
		if res.StatusCode != tt.status || a.Value != nil || field(t, a.Key, a.KeyEncoding) != tt.key ||
			!strings.HasPrefix(field(t, a.Error, ""), tt.error) {
			t.Errorf("%s: %d %+v", tt.target, res.StatusCode, a)
		}
	}
	res, a := hc.readAfter("DELETE /lookup?key=k HTTP/1.1\r\nHost: proxy\r\n\r\n")
	if res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" || !strings.Contains(a, `"status":405`) {
		t.Errorf("DELETE: %d %v %q", res.StatusCode, res.Header, a)
	}

	// HEAD: the headers GET gets, no body.
	get, _ := hc.readAfter("GET /lookup?key=escaped HTTP/1.1\r\n\r\n")
	head, body := hc.readAfter("HEAD /lookup?key=escaped HTTP/1.1\r\n\r\n")
	if head.StatusCode != 200 || body != "" || head.ContentLength != get.ContentLength ||
		head.Header.Get("Content-Type") != "application/json" || head.Header.Get("Cache-Status") != "redis-proxy; hit" {
		t.Errorf("HEAD: %d %v %q, GET's Content-Length %d", head.StatusCode, head.Header, body, get.ContentLength)
	}

	// Not the JSON form: the raw answer about the key the path names.
	for target, want := range map[string]string{
		"/lookup?x=1":     "the key named lookup",
		"/lookup":         "the key named lookup",
		"/a+b?key=k":      "plus",
		"/lookup/?key=k":  "key not found\n",
		"/lookupx?key=k":  "key not found\n",
		"/%6cookup?key=k": "the key named lookup",
	} {
		res, body := hc.readAfter("GET " + target + " HTTP/1.1\r\n\r\n")
		if ct := res.Header.Get("Content-Type"); strings.Contains(ct, "json") || body != want {
			t.Errorf("%s: %d %q %q, want %q", target, res.StatusCode, ct, body, want)
		}
	}

	// A request that cannot be framed is answered in text: its form is not
	// known.
	bad := dialHTTP(t, p.addr)
	res, body = bad.readAfter("GET /lookup?key=k HTTP/1.1\r\nBad Header\r\n\r\n")
	if res.StatusCode != 400 || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" || body != "malformed request\n" {
		t.Errorf("malformed: %d %v %q", res.StatusCode, res.Header, body)
	}
	bad.expectClosed()
}

// Redis hung, then gone: the JSON form answers 504 and 502 with the text
// form's reasons, and --stale-if-error serves an expired value in it too.
func TestJSONLookupBackendFailures(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "old", "kept")
	p := startProxy(t, redis.Addr, "--ttl", "300ms", "--stale-if-error", "1h", "--backend-timeout", "300ms")
	hc := dialHTTP(t, p.addr)
	if res, a := hc.lookup("/lookup?key=old"); res.StatusCode != 200 || *a.Value != "kept" ||
		res.Header.Get("Cache-Status") != "redis-proxy; fwd=miss" {
		t.Fatalf("first read: %d %v %+v", res.StatusCode, res.Header, a)
	}

	redis.Pause()
	res, a := hc.lookup("/lookup?key=k")
	redis.Resume()
	if res.StatusCode != 504 || *a.Key != "k" || a.Error == nil || *a.Error != "backend timeout" {
		t.Fatalf("Redis hung: %d %+v", res.StatusCode, a)
	}

	redis.Stop()
	time.Sleep(400 * time.Millisecond) // past the TTL of "old"
	res, a = hc.lookup("/lookup?key=cold")
	if res.StatusCode != 502 || *a.Key != "cold" || a.Error == nil || !strings.HasPrefix(*a.Error, "backend unavailable: ") {
		t.Fatalf("Redis gone: %d %+v", res.StatusCode, a)
	}
	res, a = hc.lookup("/lookup?key=old")
	if res.StatusCode != 200 || *a.Value != "kept" || res.Header.Get("Cache-Status") != "redis-proxy; fwd=stale" {
		t.Fatalf("stale value with Redis gone: %d %v %+v", res.StatusCode, res.Header, a)
	}
	// The text form gives the same reason.
	if status, body := hc.get("cold"); status != 502 || !strings.HasPrefix(body, "backend unavailable: ") {
		t.Fatalf("text form: %d %q", status, body)
	}
}
