// Package systemtest holds the black-box tests: each starts a real
// redis-server and the real bin/redis-proxy binary (as production runs it),
// puts data into Redis directly, and reads it back through the proxy over
// HTTP and RESP sockets. Nothing here imports the proxy's own packages.
package systemtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/resp"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// binary is the proxy under test: $REDIS_PROXY_BIN, or bin/redis-proxy as
// `make build` writes it.
func binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("REDIS_PROXY_BIN"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../bin/redis-proxy")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found: run `make build` first (make test does)", p)
	}
	return p
}

// proxy is a running redis-proxy process.
type proxy struct {
	t        testing.TB
	addr     string
	password string // its --require-pass, if any
	cmd      *exec.Cmd
	stderr   *syncBuffer
	exited   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startProxy runs the binary against redisAddr with extra flags, waits until
// it accepts connections, and stops it (SIGTERM) when the test ends.
func startProxy(t testing.TB, redisAddr string, flags ...string) *proxy {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	// No admin server unless a test asks for one: its default port would be
	// shared by every proxy the tests run at once.
	args := append([]string{"--listen", addr, "--redis", redisAddr, "--loops", "2", "--log-level", "warn", "--admin-listen", ""}, flags...)
	password := ""
	for i, f := range flags {
		switch {
		case i+1 == len(flags):
		case f == "--listen": // the test's own (every interface, say), reached on loopback
			_, port, _ := net.SplitHostPort(flags[i+1])
			addr = "127.0.0.1:" + port
		case f == "--require-pass":
			password = flags[i+1]
		}
	}
	p := &proxy{t: t, addr: addr, password: password, cmd: exec.Command(binary(t), args...), stderr: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		// A crash, or a data race in a -race build (exit 66), fails the test.
		if err := p.stop(); err != nil {
			t.Errorf("proxy exited with %v:\n%s", err, p.stderr)
		}
	})
	awaitListening(t, "proxy", addr, p.exited, p.stderr)
	p.awaitTracking()
	return p
}

// awaitListening waits until a process just started (what) accepts
// connections on addr. It fails the test, with the process's output, if the
// process exits first (exited has its Wait error, which is put back) or 10 s
// pass.
func awaitListening(t testing.TB, what, addr string, exited chan error, output *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited at start (%v):\n%s", what, err, output)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 10s:\n%s", what, addr, output)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitTracking waits until invalidation tracking is settled (on, off or
// unsupported): turning it on clears the cache, which must not happen under
// a test that has just cached something.
func (p *proxy) awaitTracking() {
	p.t.Helper()
	eventually(p.t, "invalidation tracking to settle", func() string {
		if got := proxyInfoAs(p.t, p.addr, p.password, "invalidation"); got == "reconnecting" {
			return got
		}
		return ""
	})
}

// stop sends SIGTERM and returns the exit error once the process is gone.
func (p *proxy) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err
		return err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		p.t.Errorf("proxy did not exit within 10s of SIGTERM:\n%s", p.stderr)
		return <-p.exited
	}
}

// respConn is a RESP client connection to the proxy.
type respConn struct {
	t testing.TB
	c net.Conn
	r *resp.Reader
}

func dialRESP(t testing.TB, addr string) *respConn {
	t.Helper()
	return dialRESPFrom(t, addr, nil)
}

// dialRESPFrom is dialRESP from the local address from (nil: any), such as
// another loopback address (127.0.0.0/8 is all loopback on Linux), to be
// another client IP.
func dialRESPFrom(t testing.TB, addr string, from net.Addr) *respConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: from}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return respOver(t, c)
}

// respOver is a RESP client on a connection already made (a TLS one, say),
// closed when the test ends.
func respOver(t testing.TB, c net.Conn) *respConn {
	t.Cleanup(func() { c.Close() })
	return &respConn{t: t, c: c, r: resp.NewReader(c)}
}

// send writes commands as multibulks without waiting for answers.
func (rc *respConn) send(cmds ...[]string) {
	rc.t.Helper()
	var b bytes.Buffer
	for _, cmd := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(cmd))
		for _, a := range cmd {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	rc.write(b.String())
}

func (rc *respConn) write(raw string) {
	rc.t.Helper()
	_ = rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write([]byte(raw)); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads one answer.
func (rc *respConn) read() resp.Value {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	v, _, err := rc.r.ReadValue()
	if err != nil {
		rc.t.Fatalf("reading answer: %v", err)
	}
	return v
}

// do sends one command and reads its answer.
func (rc *respConn) do(args ...string) resp.Value {
	rc.t.Helper()
	rc.send(args)
	return rc.read()
}

// expectClosed asserts that the proxy closes the connection.
// expectClosed checks that the proxy closed the connection: the read ends
// with EOF, or with a reset when the proxy closed it before something the
// client wrote arrived (the kernel answers that with RST).
func (rc *respConn) expectClosed() {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if v, _, err := rc.r.ReadValue(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		rc.t.Fatalf("connection still open: read %v, %v", v, err)
	}
}

// respGet returns GET key's answer as text, "(nil)" for a null, or "ERR: ..."
func respGet(rc *respConn, key string) string {
	return show(rc.do("GET", key))
}

func show(v resp.Value) string {
	switch {
	case v.Type() == resp.Error:
		return "ERR: " + v.String()
	case v.IsNull():
		return "(nil)"
	}
	return v.String()
}

// httpConn is a keep-alive HTTP/1.1 client connection to the proxy that
// sends requests byte for byte as written (no path normalisation).
type httpConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialHTTP(t testing.TB, addr string) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return httpOver(t, c)
}

// httpOver is an HTTP client on a connection already made, closed when the
// test ends.
func httpOver(t testing.TB, c net.Conn) *httpConn {
	t.Cleanup(func() { c.Close() })
	return &httpConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (hc *httpConn) write(raw string) {
	hc.t.Helper()
	_ = hc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := hc.c.Write([]byte(raw)); err != nil {
		hc.t.Fatal(err)
	}
}

// read reads one response and its body.
func (hc *httpConn) read(method string) (*http.Response, string) {
	hc.t.Helper()
	_ = hc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(hc.r, &http.Request{Method: method})
	if err != nil {
		hc.t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		hc.t.Fatalf("reading body: %v", err)
	}
	return res, string(body)
}

// readAfter writes a raw request and reads its response.
func (hc *httpConn) readAfter(raw string) (*http.Response, string) {
	hc.t.Helper()
	hc.write(raw)
	return hc.read(strings.SplitN(raw, " ", 2)[0])
}

// get sends GET /<escaped key> and returns the status and body.
func (hc *httpConn) get(key string) (int, string) {
	hc.t.Helper()
	hc.write(getRequest(key))
	res, body := hc.read("GET")
	return res.StatusCode, body
}

func (hc *httpConn) expectClosed() {
	hc.t.Helper()
	_ = hc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := hc.r.ReadByte(); err != io.EOF {
		hc.t.Fatalf("connection still open: read %q, %v", b, err)
	}
}

func getRequest(key string) string {
	return "GET /" + escape(key) + " HTTP/1.1\r\nHost: proxy\r\n\r\n"
}

// escape percent-encodes every byte of key that is not unreserved, '/' included.
func escape(key string) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// eventually retries check every 20 ms until it returns "" or 10 s pass.
func eventually(t testing.TB, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 10s", what, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
