package proto

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestParseRequestValid(t *testing.T) {
	tests := []struct {
		in        string
		method    Method
		key       string
		keepAlive bool
		http10    bool
		status    int
	}{
		{"GET /k HTTP/1.1\r\nHost: x\r\n\r\n", MethodGET, "k", true, false, 0},
		{"HEAD /k HTTP/1.1\r\n\r\n", MethodHEAD, "k", true, false, 0},
		{"GET /k HTTP/1.1\n\n", MethodGET, "k", true, false, 0},
		{"GET /k HTTP/1.1\r\nConnection: close\r\n\r\n", MethodGET, "k", false, false, 0},
		{"GET /k HTTP/1.1\r\nconnection: Upgrade, CLOSE\r\n\r\n", MethodGET, "k", false, false, 0},
		{"GET /k HTTP/1.0\r\n\r\n", MethodGET, "k", false, true, 0},
		{"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", MethodGET, "k", true, true, 0},
		{"GET /a%20b/c%2Fd%ff%00 HTTP/1.1\r\n\r\n", MethodGET, "a b/c/d\xff\x00", true, false, 0},
		{"GET /a+b?x=1 HTTP/1.1\r\n\r\n", MethodGET, "a+b", true, false, 0},
		{"GET //a/../b HTTP/1.1\r\n\r\n", MethodGET, "/a/../b", true, false, 0},
		{"GET http://host:1/k%21 HTTP/1.1\r\n\r\n", MethodGET, "k!", true, false, 0},
		{"GET /k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", MethodGET, "k", true, false, 0},
		{"GET / HTTP/1.1\r\n\r\n", MethodGET, "", true, false, 400},
		{"GET /?q HTTP/1.1\r\n\r\n", MethodGET, "", true, false, 400},
		{"GET /%zz HTTP/1.1\r\n\r\n", MethodGET, "", true, false, 400},
		{"GET /%4 HTTP/1.1\r\n\r\n", MethodGET, "", true, false, 400},
		{"GET * HTTP/1.1\r\n\r\n", MethodGET, "", true, false, 400},
		{"POST /k HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", MethodOther, "", true, false, 405},
		{"get /k HTTP/1.1\r\n\r\n", MethodOther, "", true, false, 405},
	}
	for _, tt := range tests {
		var req Request
		n, err := ParseRequest([]byte(tt.in), &req)
		if err != nil || n != len(tt.in) {
			t.Errorf("%q: n=%d err=%v", tt.in, n, err)
			continue
		}
		if req.Method != tt.method || req.KeepAlive != tt.keepAlive || req.HTTP10 != tt.http10 || req.Status != tt.status {
			t.Errorf("%q: got %+v", tt.in, req)
		}
		if tt.status == 0 && string(req.Key) != tt.key {
			t.Errorf("%q: key %q, want %q", tt.in, req.Key, tt.key)
		}
	}
}

func TestParseRequestMalformed(t *testing.T) {
	long := strings.Repeat("a", MaxHeaderBytes)
	tests := []struct {
		in   string
		want *HTTPError
	}{
		{"GET /k\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/1.1 x\r\n\r\n", ErrMalformed},
		{"GET /k HTTQ/1.1\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/2.0\r\n\r\n", ErrVersion},
		{"\r\nGET /k HTTP/1.1\r\n\r\n", ErrMalformed},
		{"G(T /k HTTP/1.1\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/1.1\r\nNoColon\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/1.1\r\nBad Name: x\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/1.1\r\nContent-Length: x\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", ErrMalformed},
		{"GET /k HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", ErrBodyTooLarge},
		{"GET /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", ErrChunkedBody},
		{"GET /" + long + " HTTP/1.1\r\n\r\n", ErrURITooLong},
		{"GET /" + long, ErrURITooLong},
		{"GET /k HTTP/1.1\r\nX: " + long + "\r\n\r\n", ErrHeadersTooLarge},
		{"GET /k HTTP/1.1\r\nX: " + long, ErrHeadersTooLarge},
	}
	for _, tt := range tests {
		var req Request
		_, err := ParseRequest([]byte(tt.in), &req)
		if err != tt.want {
			t.Errorf("%.50q: got %v, want %v", tt.in, err, tt.want)
		}
	}
}

func TestParseRequestSplitAcrossReads(t *testing.T) {
	in := "GET /a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
	var req Request
	for cut := 0; cut < len(in); cut++ {
		if n, err := ParseRequest([]byte(in[:cut]), &req); n != 0 || err != nil {
			t.Fatalf("cut at %d: n=%d err=%v, want incomplete", cut, n, err)
		}
	}
	n, err := ParseRequest([]byte(in), &req)
	if n != len(in) || err != nil || string(req.Key) != "a b" {
		t.Fatalf("whole: n=%d err=%v key=%q", n, err, req.Key)
	}
}

func TestParseRequestPipeline(t *testing.T) {
	var in bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&in, "GET /key%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	buf := in.Bytes()
	var req Request
	for i := range 100 {
		n, err := ParseRequest(buf, &req)
		if n == 0 || err != nil || string(req.Key) != fmt.Sprint("key", i) {
			t.Fatalf("request %d: n=%d err=%v key=%q", i, n, err, req.Key)
		}
		buf = buf[n:]
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left", len(buf))
	}
}

func TestHTTPWriters(t *testing.T) {
	date := []byte("Mon, 02 Jan 2006 15:04:05 GMT")
	o := ResponseOptions{KeepAlive: true, Date: date}
	got := string(AppendValue(nil, &o, []byte("k"), []byte("hello")))
	want := "HTTP/1.1 200 OK\r\nServer: redis-proxy\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nhello"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	o = ResponseOptions{Head: true, KeepAlive: true, HTTP10: true, Date: date}
	got = string(AppendStatus(nil, &o, nil, 405, "no"))
	if !strings.Contains(got, "405 Method Not Allowed\r\n") || !strings.Contains(got, "Allow: GET, HEAD\r\n") ||
		!strings.Contains(got, "Content-Length: 3\r\n") || !strings.Contains(got, "Connection: keep-alive\r\n") ||
		!strings.HasSuffix(got, "\r\n\r\n") {
		t.Fatalf("got %q", got)
	}
	o = ResponseOptions{Date: date}
	got = string(AppendStatus(nil, &o, []byte("k"), 404, "key not found"))
	if !strings.Contains(got, "Connection: close\r\n") || !strings.HasSuffix(got, "\r\n\r\nkey not found\n") {
		t.Fatalf("got %q", got)
	}
	// The cache's statements: Cache-Status on every answer, Age on a 200.
	o = ResponseOptions{KeepAlive: true, Date: date, CacheStatus: "redis-proxy; hit", Age: 42}
	got = string(AppendValue(nil, &o, []byte("k"), []byte("v")))
	if !strings.Contains(got, "\r\nCache-Status: redis-proxy; hit\r\nAge: 42\r\n\r\nv") {
		t.Fatalf("got %q", got)
	}
	o.CacheStatus = "redis-proxy; fwd=miss"
	got = string(AppendStatus(nil, &o, []byte("k"), 404, "key not found"))
	if !strings.Contains(got, "\r\nCache-Status: redis-proxy; fwd=miss\r\n") || strings.Contains(got, "Age:") {
		t.Fatalf("got %q", got)
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		in   string
		want Protocol
	}{
		{"", Unknown},
		{"*", RESP},
		{"GET /k HTTP/1.1\r\n", HTTP},
		{"GET /k HTTP/1.0\n", HTTP},
		{"HEAD /k HTTP/1.1\r\n", HTTP},
		{"GET /k HTT", Unknown},
		{"GET k\r\n", RESP},
		{"PING\n", RESP},
		{"GET k HTTP/2.0\r\n", RESP},
		{"GET /" + strings.Repeat("a", MaxHeaderBytes), HTTP},
		{"GET " + strings.Repeat("a", MaxHeaderBytes), Unknown},
		{"GET " + strings.Repeat("a", MaxInlineBytes), RESP},
	}
	for _, tt := range tests {
		if got := Detect([]byte(tt.in)); got != tt.want {
			t.Errorf("%.30q: got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func BenchmarkParseRequest(b *testing.B) {
	in := []byte("GET /key:000000000042 HTTP/1.1\r\nHost: 127.0.0.1:6380\r\nUser-Agent: wrk\r\n\r\n")
	var req Request
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if n, err := ParseRequest(in, &req); n != len(in) || err != nil {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkParseAnswerHTTPPipeline16 parses 16 pipelined requests and appends
// a 100-byte 200 answer for each: the codec half of a hit pipeline.
func BenchmarkParseAnswerHTTPPipeline16(b *testing.B) {
	var in []byte
	for range 16 {
		in = append(in, "GET /key:000000000042 HTTP/1.1\r\nHost: 127.0.0.1:6380\r\n\r\n"...)
	}
	value := bytes.Repeat([]byte("v"), 100)
	date := []byte("Mon, 02 Jan 2006 15:04:05 GMT")
	var req Request
	out := make([]byte, 0, 8192)
	b.ReportAllocs()
	for b.Loop() {
		out = out[:0]
		for buf := in; len(buf) > 0; {
			n, err := ParseRequest(buf, &req)
			if n == 0 || err != nil {
				b.Fatal(n, err)
			}
			o := ResponseOptionsFor(&req, date)
			out = AppendValue(out, &o, req.Key, value)
			buf = buf[n:]
		}
	}
}

func TestParseRequestLookup(t *testing.T) {
	tests := []struct {
		target string
		key    string
		json   bool
		status int
	}{
		{"/lookup?key=k", "k", true, 0},
		{"/lookup?key=k&x=1", "k", true, 0},
		{"/lookup?x=1&key=k&y=2", "k", true, 0},
		{"/lookup?x=1&y=2&key=k", "k", true, 0},
		{"/lookup?key=a+b%20c%2Bd%26e%3Df", "a b c+d&e=f", true, 0},
		{"/lookup?key=%e2%82%ac%ff%00", "€\xff\x00", true, 0},
		{"/lookup?key=first&key=second", "first", true, 0},
		{"/lookup?key=&key=second", "", true, 400},
		{"/lookup?key=", "", true, 400},
		{"/lookup?key", "", true, 400},
		{"/lookup?x=1&key", "", true, 400},
		{"/lookup?key=%zz", "", true, 400},
		{"/lookup?key=a%4", "", true, 400},
		{"/lookup?x=%zz&key=k", "k", true, 0}, // only the key parameter is decoded
		{"http://host:1/lookup?key=k", "k", true, 0},
		{"/lookup", "lookup", false, 0},
		{"/lookup?", "lookup", false, 0},
		{"/lookup?x=1", "lookup", false, 0},
		{"/lookup?keys=k&Key=k&k=1", "lookup", false, 0},
		{"/lookup/?key=k", "lookup/", false, 0},
		{"/lookupx?key=k", "lookupx", false, 0},
		{"/%6cookup?key=k", "lookup", false, 0}, // the path must be "lookup" as sent
		{"/x/lookup?key=k", "x/lookup", false, 0},
		{"/a+b?key=k", "a+b", false, 0}, // '+' stays '+' in a path
	}
	for _, tt := range tests {
		in := "GET " + tt.target + " HTTP/1.1\r\n\r\n"
		var req Request
		req.JSON = !tt.json // a parse sets it either way
		n, err := ParseRequest([]byte(in), &req)
		if err != nil || n != len(in) {
			t.Errorf("%s: n=%d err=%v", tt.target, n, err)
			continue
		}
		if string(req.Key) != tt.key || req.JSON != tt.json || req.Status != tt.status {
			t.Errorf("%s: key %q json %v status %d (%s), want %q %v %d",
				tt.target, req.Key, req.JSON, req.Status, req.StatusMsg, tt.key, tt.json, tt.status)
		}
	}
	// Another method is refused in the form the target asks for.
	var req Request
	if _, err := ParseRequest([]byte("POST /lookup?key=k HTTP/1.1\r\n\r\n"), &req); err != nil ||
		req.Status != 405 || !req.JSON || string(req.Key) != "k" {
		t.Errorf("POST: %+v", req)
	}
	if _, err := ParseRequest([]byte("POST /lookup?key=%zz HTTP/1.1\r\n\r\n"), &req); err != nil ||
		req.Status != 405 || !req.JSON || len(req.Key) != 0 {
		t.Errorf("POST with a bad escape: %+v", req)
	}
}

func BenchmarkParseRequestLookup(b *testing.B) {
	in := []byte("GET /lookup?key=key%3A000000000042 HTTP/1.1\r\nHost: 127.0.0.1:6380\r\nUser-Agent: wrk\r\n\r\n")
	var req Request
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if n, err := ParseRequest(in, &req); n != len(in) || err != nil || !req.JSON {
			b.Fatal(n, err)
		}
	}
}
