package proto

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The fuzz targets check that a parser never panics, and that it gives the
// same answers however the stream is cut into reads: the input is fed in
// chunks of 1 to 64 bytes (sizes drawn from the fuzzed seed), parsing what is
// complete after each, as a connection does; the answers, and the error that
// ends the stream if any, must equal those for the whole input at once.
// make test replays the checked-in corpora in testdata/fuzz.

type outcome struct {
	results []string // one per request: its fields
	err     error    // the error that ended the stream, if any
	used    int      // bytes of the input the requests took
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
		o.used += n
		buf = buf[n:]
	}
	return o
}

func parseRESP() func([]byte) (int, string, error) { return parseRESPWith(ParseCommand) }

// continueRESP parses with ContinueCommand, which picks an incomplete request
// up where the last call stopped: chunked gives it the same bytes again plus
// the next chunk, as a connection's buffer does.
func continueRESP() func([]byte) (int, string, error) { return parseRESPWith(ContinueCommand) }

func parseRESPWith(parse func([]byte, *Command) (int, error)) func([]byte) (int, string, error) {
	var cmd Command
	return func(b []byte) (int, string, error) {
		n, err := parse(b, &cmd)
		return n, fmt.Sprintf("%q", cmd.Args), err
	}
}

func parseHTTP() func([]byte) (int, string, error) {
	var req Request
	return func(b []byte) (int, string, error) {
		n, err := ParseRequest(b, &req)
		return n, fmt.Sprintf("%d %q %v %v %v %d", req.Method, req.Key, req.JSON, req.KeepAlive, req.HTTP10, req.Status), err
	}
}

// chunked parses data as it would arrive in reads of 1 to 64 bytes.
func chunked(data []byte, seed uint16, parse func([]byte) (int, string, error)) outcome {
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	var o outcome
	var buf []byte
	for fed := 0; fed < len(data); {
		end := min(fed+1+rng.IntN(64), len(data))
		buf = append(buf, data[fed:end]...)
		fed = end
		rest := stream(buf, parse)
		o.results = append(o.results, rest.results...)
		if rest.err != nil {
			o.err = rest.err
			return o
		}
		buf = buf[rest.used:]
	}
	return o
}

func checkChunked(t *testing.T, whole, parts outcome) {
	if fmt.Sprint(whole.results) != fmt.Sprint(parts.results) || whole.err != parts.err {
		t.Fatalf("whole input: %d requests, then %v\nin chunks:   %d requests, then %v",
			len(whole.results), whole.err, len(parts.results), parts.err)
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "GET k\r\nPING\n", `GET "a\x41b" 'c\'d'` + "\r\n",
		"*1\r\n:1\r\n", "*-1\r\n*0\r\n", "*1\r\n$3\r\nGETxx", "$5\r\n", "\r\n\r\n",
	} {
		f.Add([]byte(seed), uint16(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint16) {
		whole := stream(data, parseRESP())
		checkChunked(t, whole, chunked(data, seed, parseRESP()))
		checkChunked(t, whole, chunked(data, seed, continueRESP()))
	})
}

func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /k HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD /a%20b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"POST /k HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /x HTTP/1.1\n\n", "GET /%zz HTTP/1.1\r\n\r\n",
		"GET http://h/k?x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /lookup?key=a%20b+c&key=d HTTP/1.1\r\n\r\nHEAD /lookup?x=1 HTTP/1.1\r\n\r\n",
		"GET /lookup?x=%zz&key=%e2%82%ac HTTP/1.1\r\n\r\nGET /lookup?key HTTP/1.0\r\n\r\n",
		"POST http://h/lookup?key=k HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /lookup?key=%4 HTTP/1.1\n\n",
	} {
		f.Add([]byte(seed), uint16(10))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint16) {
		checkChunked(t, stream(data, parseHTTP()), chunked(data, seed, parseHTTP()))
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

// FuzzJSONAnswer checks that any key and value come back, through net/http
// and encoding/json, from the JSON answer that carries them.
func FuzzJSONAnswer(f *testing.F) {
	for _, seed := range [][2]string{{"k", "v"}, {"a b", "\"\\\n\x00"}, {"\xff", "\xc3("}, {"€", "\u2028"}} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		checkValueAnswer(t, AppendValue(nil, &jsonOptions, key, value), key, value)
	})
}
