package proto

import (
	"fmt"
	"testing"
)

// The fuzz targets check that a parser never panics, and that it gives the
// same answers however the stream is cut: parsing a prefix of the input yields
// a prefix of the answers to the whole input, ending at worst in "incomplete"
// where the whole input had more (or an error). make test replays the seeds.

type outcome struct {
	results []string // one per request: its fields, or its error
	err     error    // the error that ended the stream, if any
}

// stream parses every request in buf with parse, which returns the bytes
// used, a description of the request, or an error.
func stream(buf []byte, parse func([]byte) (int, string, error)) outcome {
	var o outcome
	for len(buf) > 0 {
		n, desc, err := parse(buf)
		if err != nil {
			o.err = err
			return o
		}
		if n == 0 {
			return o
		}
		if n < 0 || n > len(buf) {
			panic(fmt.Sprintf("used %d of %d bytes", n, len(buf)))
		}
		o.results = append(o.results, desc)
		buf = buf[n:]
	}
	return o
}

func respStream(buf []byte) outcome {
	var cmd Command
	return stream(buf, func(b []byte) (int, string, error) {
		n, err := ParseCommand(b, &cmd)
		return n, fmt.Sprintf("%q", cmd.Args), err
	})
}

func httpStream(buf []byte) outcome {
	var req Request
	return stream(buf, func(b []byte) (int, string, error) {
		n, err := ParseRequest(b, &req)
		return n, fmt.Sprintf("%d %q %v %v %d", req.Method, req.Key, req.KeepAlive, req.HTTP10, req.Status), err
	})
}

func checkPrefix(t *testing.T, whole, part outcome) {
	if len(part.results) > len(whole.results) {
		t.Fatalf("prefix parsed %d requests, whole input %d", len(part.results), len(whole.results))
	}
	for i, r := range part.results {
		if r != whole.results[i] {
			t.Fatalf("request %d: prefix gives %s, whole input %s", i, r, whole.results[i])
		}
	}
	if part.err != nil && (len(part.results) != len(whole.results) || part.err != whole.err) {
		t.Fatalf("prefix fails with %v after %d requests; whole input: %v after %d",
			part.err, len(part.results), whole.err, len(whole.results))
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "GET k\r\nPING\n", `GET "a\x41b" 'c\'d'` + "\r\n",
		"*1\r\n:1\r\n", "*-1\r\n*0\r\n", "*1\r\n$3\r\nGETxx", "$5\r\n", "\r\n\r\n",
	} {
		f.Add([]byte(seed), uint16(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		whole := respStream(data)
		checkPrefix(t, whole, respStream(data[:int(cut)%(len(data)+1)]))
	})
}

func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /k HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD /a%20b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"POST /k HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /x HTTP/1.1\n\n", "GET /%zz HTTP/1.1\r\n\r\n",
		"GET http://h/k?x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add([]byte(seed), uint16(10))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		whole := httpStream(data)
		checkPrefix(t, whole, httpStream(data[:int(cut)%(len(data)+1)]))
	})
}

func FuzzDetect(f *testing.F) {
	for _, seed := range []string{"GET /k HTTP/1.1\r\n", "GET k\r\n", "*1\r\n", "PING"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := Detect(data)
		// Once decided, more bytes never change the decision.
		if p != Unknown && Detect(append(data[:len(data):len(data)], "x\r\n"...)) != p {
			t.Fatalf("decision changed with more bytes")
		}
	})
}
