package proto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/tidwall/resp"
	"github.com/valyala/fasthttp"
)

// Differential tests: the same bytes through our parsers and through
// reference implementations (fasthttp's request-header parser for HTTP,
// tidwall/resp's server-side command reader for RESP) must give the same
// verdict and the same fields, except where this file says why not.

// httpVerdict is what a parser made of one request.
type httpVerdict struct {
	ok        bool   // framed as a request
	served    bool   // GET or HEAD
	key       string // the decoded key, or "!" when the target names no key
	json      bool   // asked as /lookup?key=
	keepAlive bool
}

func ours(raw []byte) httpVerdict {
	var req Request
	n, err := ParseRequest(raw, &req)
	if err != nil || n != len(raw) {
		return httpVerdict{}
	}
	v := httpVerdict{ok: true, served: req.Method != MethodOther, keepAlive: req.KeepAlive, key: string(req.Key), json: req.JSON}
	if req.Status != 0 {
		v.key = "!"
	}
	return v
}

// reference parses raw with fasthttp and derives the key as this proxy
// defines it from the request URI fasthttp read, using net/url's decoders:
// the first "key" parameter of the query when the path is /lookup and the
// query has one, else the path after the first '/', up to '?', %XX decoded.
// (net/url gives up on a whole query with a bad escape anywhere in it, where
// we decode the key parameter alone: the targets below have none.)
func reference(raw []byte) httpVerdict {
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReaderSize(bytes.NewReader(raw), 8192)); err != nil {
		return httpVerdict{}
	}
	m := string(h.Method())
	v := httpVerdict{ok: true, served: m == "GET" || m == "HEAD", keepAlive: !h.ConnectionClose(), key: "!"}
	target := string(h.RequestURI())
	if i := strings.Index(target, "://"); i >= 0 && strings.HasPrefix(strings.ToLower(target), "http") {
		rest := target[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			target = rest[j:]
		} else {
			target = "/"
		}
	}
	if !strings.HasPrefix(target, "/") {
		return v
	}
	target, query, _ := strings.Cut(target[1:], "?")
	if q, err := url.ParseQuery(query); err == nil && target == "lookup" && q.Has("key") {
		v.json = true
		if key := q.Get("key"); key != "" {
			v.key = key
		}
		return v
	}
	if key, err := url.PathUnescape(target); err == nil && key != "" {
		v.key = key
	}
	return v
}

// httpCases builds requests from every combination of a set of methods,
// targets, versions and header sets.
func httpCases() []string {
	methods := []string{"GET", "HEAD", "POST", "DELETE", "OPTIONS"}
	targets := []string{"/k", "/a%20b", "/%2Fslash%2f", "/a?x=1", "//a/../b", "/", "/%zz", "/%4", "/a%00b",
		"/ключ", "/a+b", "http://host:80/k", "https://host/a%20b?q", "/%e2%82%ac",
		"/lookup?key=a%20b+c", "/lookup?x=1&key=k&key=j", "/lookup?key=", "/lookup?key", "/lookup?x=1",
		"/lookup", "/lookup/?key=k", "/lookupx?key=k", "http://host/lookup?key=%e2%82%ac%ff"}
	versions := []string{"HTTP/1.1", "HTTP/1.0"}
	headerSets := []string{
		"Host: x\r\n",
		"Host: x\r\nConnection: close\r\n",
		"Host: x\r\nConnection: keep-alive\r\n",
		"Host: x\r\nconnection: Keep-Alive, Upgrade\r\n",
		"Host: x\r\nUser-Agent: curl/8\r\nAccept: */*\r\n",
		"Host: x\r\nContent-Length: 0\r\n",
		"Host: x\r\nX-Empty:\r\n",
	}
	var out []string
	for _, m := range methods {
		for _, tg := range targets {
			for _, v := range versions {
				for _, hs := range headerSets {
					out = append(out, m+" "+tg+" "+v+"\r\n"+hs+"\r\n")
				}
			}
		}
	}
	return out
}

func TestHTTPDifferential(t *testing.T) {
	cases := httpCases()
	// Malformed requests both must refuse.
	cases = append(cases,
		"GET /k\r\nHost: x\r\n\r\n",
		"GET /k HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
		"GET /k HTTP/1.1 extra\r\nHost: x\r\n\r\n",
		"GET  HTTP/1.1\r\nHost: x\r\n\r\n",
	)
	for _, raw := range cases {
		got, want := ours([]byte(raw)), reference([]byte(raw))
		if !got.served { // refused with 405 whatever the key
			got.key, want.key = "", ""
		}
		if got != want {
			t.Errorf("%q:\n ours      %+v\n fasthttp  %+v", raw, got, want)
		}
	}
	t.Logf("%d requests compared", len(cases))
}

// Where we differ from fasthttp on purpose.
func TestHTTPDifferentialExceptions(t *testing.T) {
	for _, tc := range []struct{ raw, why string }{
		{"GET /k HTTP/1.1\r\n\r\n", "fasthttp requires Host on HTTP/1.1; we serve without it, as curl -H 'Host:' users expect"},
		{"get /k HTTP/1.1\r\nHost: x\r\n\r\n", "methods are case-sensitive (RFC 9110): fasthttp serves 'get' as GET, we answer 405"},
		{"GET /k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "we refuse request bodies in chunked encoding (501); fasthttp reads them"},
	} {
		if ours([]byte(tc.raw)) == reference([]byte(tc.raw)) {
			t.Errorf("%q: no longer differs (%s): update this list", tc.raw, tc.why)
		}
	}
}

// respVerdict is what a parser made of the front of a stream.
type respVerdict struct {
	state string // "ok", "incomplete" or "error"
	n     int
	args  string
}

func oursRESP(raw []byte) respVerdict {
	var cmd Command
	n, err := ParseCommand(raw, &cmd)
	switch {
	case err != nil:
		return respVerdict{state: "error"}
	case n == 0:
		return respVerdict{state: "incomplete"}
	}
	return respVerdict{"ok", n, fmt.Sprintf("%q", cmd.Args)}
}

func referenceRESP(raw []byte) respVerdict {
	v, _, n, err := resp.NewReader(bytes.NewReader(raw)).ReadMultiBulk()
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return respVerdict{state: "incomplete"}
	case err != nil:
		return respVerdict{state: "error"}
	}
	var args [][]byte
	for _, a := range v.Array() {
		args = append(args, a.Bytes())
	}
	return respVerdict{"ok", n, fmt.Sprintf("%q", args)}
}

func TestRESPDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	compare := func(raw []byte) {
		t.Helper()
		if got, want := oursRESP(raw), referenceRESP(raw); got != want {
			t.Fatalf("%q:\n ours         %+v\n tidwall/resp %+v", raw, got, want)
		}
	}
	alphabet := []byte("ab \r\n\x00\xff$*:")
	for range 3000 {
		var b bytes.Buffer
		nargs := 1 + rng.IntN(5)
		fmt.Fprintf(&b, "*%d\r\n", nargs)
		for range nargs {
			arg := make([]byte, rng.IntN(40))
			for i := range arg {
				arg[i] = alphabet[rng.IntN(len(alphabet))]
			}
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(arg), arg)
		}
		raw := b.Bytes()
		compare(raw)                              // a whole command
		compare(raw[:rng.IntN(len(raw))])         // cut short: incomplete for both
		compare(append(raw, "*1\r\n$4\r\nPI"...)) // followed by the start of another
	}
	for _, raw := range []string{
		"*1\r\n$x\r\n", "*x\r\n", "*1\r\n$3\r\nabcd\r\n", "*2\r\n$3\r\nGET\r\n$3\r\nabcde\r\n",
		"*1\r\n$536870913\r\n",
	} {
		compare([]byte(raw))
	}
}

// Where we differ from tidwall/resp on purpose: we follow Redis.
func TestRESPDifferentialExceptions(t *testing.T) {
	for _, tc := range []struct{ raw, why string }{
		{"*1\r\n:1\r\n", "Redis wants bulk strings in a command ('expected $'); tidwall accepts integers"},
		{"*1\r\n$+3\r\nabc\r\n", "Redis's lengths are plain digits; tidwall accepts a '+' sign"},
		{"*2000000\r\n", "over Redis's 1M-argument limit: we refuse; tidwall reads a null array"},
		{"*1\r\n$-5\r\n", "a negative bulk length in a command is an error in Redis; tidwall reads a null"},
		{"GET  k\r\n", "inline commands split on runs of blanks, as Redis's sdssplitargs; tidwall splits on each space"},
		{"GET \"a b\"\r\n", "inline quotes group words, as in redis-cli; tidwall keeps the quotes"},
	} {
		if oursRESP([]byte(tc.raw)) == referenceRESP([]byte(tc.raw)) {
			t.Errorf("%q: no longer differs (%s): update this list", tc.raw, tc.why)
		}
	}
}
