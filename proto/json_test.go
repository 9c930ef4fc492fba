package proto

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/redis-proxy/redis-proxy/internal/lookuptest"
)

// The JSON answers are checked by reading them back with net/http and
// encoding/json: whatever the key and value bytes, the answer must be one
// well-framed response whose body is valid JSON giving them back.

// readJSONAnswer reads one response from raw (all of it, nothing after),
// checks its framing, and decodes its body; head: it answers a HEAD.
func readJSONAnswer(t testing.TB, raw []byte, head bool) (*http.Response, lookuptest.Answer) {
	t.Helper()
	method := "GET"
	if head {
		method = "HEAD"
	}
	r := bufio.NewReader(bytes.NewReader(raw))
	res, err := http.ReadResponse(r, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%.200q: %v", raw, err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil || r.Buffered() != 0 {
		t.Fatalf("%.200q: body %v, %d bytes after it", raw, err, r.Buffered())
	}
	if res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%.200q: Content-Type %q", raw, res.Header.Get("Content-Type"))
	}
	if head {
		return res, lookuptest.Answer{}
	}
	if res.ContentLength != int64(len(body)) {
		t.Fatalf("%.200q: Content-Length %d, body %d bytes", raw, res.ContentLength, len(body))
	}
	if !utf8.Valid(body) || !json.Valid(body) {
		t.Fatalf("not valid JSON: %.200q", body)
	}
	a, err := lookuptest.Decode(body, res.StatusCode)
	if err != nil {
		t.Fatalf("%.200q: %v", body, err)
	}
	return res, a
}

// decoded returns a field's bytes, undoing its base64 if encoding says so.
func decoded(t testing.TB, field *string, encoding string) []byte {
	t.Helper()
	switch {
	case field == nil:
		t.Fatal("field missing")
	case encoding == "base64":
		b, err := base64.StdEncoding.DecodeString(*field)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case encoding != "":
		t.Fatalf("encoding %q", encoding)
	}
	return []byte(*field)
}

// checkValueAnswer checks that raw answers key with value.
func checkValueAnswer(t testing.TB, raw, key, value []byte) {
	t.Helper()
	_, a := readJSONAnswer(t, raw, false)
	if a.Status != 200 || a.Error != nil {
		t.Fatalf("%.200q: %+v", raw, a)
	}
	if len(key) == 0 { // no usable key: none named
		if a.Key != nil {
			t.Fatalf("key %q, want none", *a.Key)
		}
	} else if got := decoded(t, a.Key, a.KeyEncoding); !bytes.Equal(got, key) {
		t.Fatalf("key %q, want %q", got, key)
	}
	if got := decoded(t, a.Value, a.Encoding); !bytes.Equal(got, value) {
		t.Fatalf("value %q, want %q", got, value)
	}
	if (a.Encoding == "base64") == utf8.Valid(value) || (a.KeyEncoding == "base64") == utf8.Valid(key) {
		t.Fatalf("base64 for UTF-8, or not for anything else: %+v", a)
	}
}

var jsonOptions = ResponseOptions{JSON: true, KeepAlive: true, Date: []byte("Mon, 02 Jan 2006 15:04:05 GMT")}

func TestJSONStrings(t *testing.T) {
	var every []byte
	for c := range 256 {
		every = append(every, byte(c))
	}
	for _, s := range []string{
		"", "plain", `"quoted"`, `back\slash`, "line\nfeed\r\ttab", "\x00\x01\x1f\x7f", "</script>&",
		"ключ €𝄞", "\u2028\u2029", "\xff", "a\xc3", "\xed\xa0\x80", string(every[:128]), string(every),
		strings.Repeat(`"\`, 1000),
	} {
		checkValueAnswer(t, AppendValue(nil, &jsonOptions, []byte(s), []byte(s)), []byte(s), []byte(s))
	}
}

func TestJSONAnswers(t *testing.T) {
	o := jsonOptions
	o.CacheStatus, o.Age = "redis-proxy; hit", 7
	got := string(AppendValue([]byte("before"), &o, []byte("k"), []byte("v\"1\"")))
	want := "beforeHTTP/1.1 200 OK\r\nServer: redis-proxy\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\n" +
		"Content-Type: application/json\r\nContent-Length: 41\r\nCache-Status: redis-proxy; hit\r\nAge: 7\r\n\r\n" +
		`{"key":"k","value":"v\"1\"","status":200}`
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	for _, tt := range []struct {
		key    string
		status int
		msg    string
		body   string
	}{
		{"k", 404, "key not found", `{"key":"k","status":404}`},
		{"k", 502, "backend error: WRONGTYPE Operation", `{"key":"k","status":502,"error":"backend error: WRONGTYPE Operation"}`},
		{"k\xff", 504, "backend timeout", `{"key":"a/8=","key_encoding":"base64","status":504,"error":"backend timeout"}`},
		{"", 400, "empty key", `{"status":400,"error":"empty key"}`},
		{"k", 503, "a \"b\"\n\xff", `{"key":"k","status":503,"error":"a \"b\"\n` + "\uFFFD" + `"}`},
	} {
		raw := AppendStatus(nil, &jsonOptions, []byte(tt.key), tt.status, tt.msg)
		res, _ := readJSONAnswer(t, raw, false)
		if !strings.HasSuffix(string(raw), "\r\n\r\n"+tt.body) || res.StatusCode != tt.status {
			t.Errorf("%d %q: got %q, want body %s", tt.status, tt.msg, raw, tt.body)
		}
	}
	res, a := readJSONAnswer(t, AppendStatus(nil, &jsonOptions, []byte("k"), 405, "use GET"), false)
	if res.StatusCode != 405 || res.Header.Get("Allow") != "GET, HEAD" || *a.Error != "use GET" {
		t.Errorf("405: %v %+v", res.Header, a)
	}
	// A value over MaxJSONValue is not encoded: 406, read it raw.
	res, _ = readJSONAnswer(t, AppendValue(nil, &jsonOptions, []byte("k"), make([]byte, MaxJSONValue)), false)
	if res.StatusCode != 200 {
		t.Errorf("a value of MaxJSONValue bytes: %d", res.StatusCode)
	}
	res, a = readJSONAnswer(t, AppendValue(nil, &jsonOptions, []byte("k"), make([]byte, MaxJSONValue+1)), false)
	if res.StatusCode != 406 || a.Value != nil || !strings.Contains(*a.Error, "read it raw with GET /<key>") {
		t.Errorf("a value over MaxJSONValue: %d %+v", res.StatusCode, a)
	}

	// HEAD: the same head, no body.
	head := jsonOptions
	head.Head = true
	for _, answer := range []func(*ResponseOptions) []byte{
		func(o *ResponseOptions) []byte { return AppendValue([]byte("x"), o, []byte("k"), []byte("\x00value")) },
		func(o *ResponseOptions) []byte {
			return AppendStatus([]byte("x"), o, []byte("k"), 502, "backend error")
		},
	} {
		get, got := answer(&jsonOptions), answer(&head)
		if end := bytes.Index(get, []byte("\r\n\r\n")) + 4; string(got) != string(get[:end]) {
			t.Errorf("HEAD %q, GET %q", got, get)
		}
	}
}

func BenchmarkAppendJSONValue(b *testing.B) {
	for _, value := range [][]byte{bytes.Repeat([]byte("v"), 100), bytes.Repeat([]byte("v\n"), 50), bytes.Repeat([]byte{0xff}, 100)} {
		b.Run(fmt.Sprintf("%.10q", value), func(b *testing.B) {
			key := []byte("key:000000000042")
			o := jsonOptions
			o.CacheStatus = "redis-proxy; hit"
			out := make([]byte, 0, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(len(value)))
			for b.Loop() {
				out = AppendValue(out[:0], &o, key, value)
			}
			b.ReportMetric(float64(len(out)), "bytes/answer")
		})
	}
}

// The head of a JSON answer is made on the stack whatever it holds.
func TestJSONHeadFits(t *testing.T) {
	o := ResponseOptions{JSON: true, HTTP10: true, KeepAlive: true, Date: jsonOptions.Date, CacheStatus: "redis-proxy; fwd=stale",
		Age: 1<<63 - 1, RetryAfter: 1<<63 - 1}
	for status := 200; status < 600; status++ {
		if n := len(appendHead(nil, status, "application/json", 1<<62, &o)); n > maxHeadBytes {
			t.Fatalf("status %d: head of %d bytes", status, n)
		}
	}
}
