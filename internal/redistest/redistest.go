// Package redistest starts real redis-server processes for tests, on free
// loopback ports, and talks to them directly.
//
// Start finds redis-server on PATH, starts it with persistence off on a free
// port, waits until it answers PING and kills it (by PID) when the test ends.
// StartWith starts one that serves TLS only (with a throwaway certificate,
// tls.go) or takes more configuration, such as an ACL user. Stop and Restart
// let fault tests take Redis away and bring it back on the same port. Do
// sends one command over a fresh connection (TLS to a TLS server), so tests
// can put data into Redis behind the proxy's back.
package redistest

import (
	"bufio"
	"cmp"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/resp"
)

// Server is a redis-server process owned by a test.
type Server struct {
	Addr string // 127.0.0.1:port
	Port int
	CA   *CA // with Options.TLS: the authority that signed its certificate

	t    testing.TB
	dir  string
	args []string    // redis-server's arguments
	tls  *tls.Config // with Options.TLS: how Do reaches it
	cmd  *exec.Cmd
}

// Options say how StartWith's server differs from Start's.
type Options struct {
	// TLS serves TLS only, on Port (no plain port), with a certificate for
	// 127.0.0.1 and localhost signed by Server.CA; clients are not asked
	// for certificates.
	TLS bool
	// Config is more redis-server arguments, after the others (so that a
	// --bind here replaces 127.0.0.1), such as
	// {"--user", "proxy", "on", ">pw", "~*", "+get"}.
	Config []string
	// Port, if set, is the port to listen on, rather than a free one.
	Port int
}

// Start starts a plain redis-server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts a redis-server as opts say for t and stops it when t ends.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not on PATH: run `make deps` (apt-get install redis-server)")
	}
	port := cmp.Or(opts.Port, FreePort(t))
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, t: t, dir: t.TempDir()}
	ports := []string{"--port", strconv.Itoa(port)}
	if opts.TLS {
		s.CA = NewCA(t)
		cert, key := s.CA.Issue(t, s.dir)
		ports = []string{"--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", s.CA.File, "--tls-auth-clients", "no"}
		s.tls = &tls.Config{RootCAs: s.CA.Pool, ServerName: "127.0.0.1"}
	}
	s.args = append(ports, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--logfile", s.dir+"/redis.log")
	s.args = append(s.args, opts.Config...)
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// FreePort returns a loopback TCP port that nothing listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", s.args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, err := s.try("PING"); err == nil && v.String() == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.dir + "/redis.log")
			s.t.Fatalf("redis-server on port %d did not answer PING within 10s; its log:\n%s", s.Port, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL, by PID) and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port, with an empty dataset.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Pause stops the server process (SIGSTOP): it keeps its connections but
// answers nothing, like a hung Redis. Resume undoes it.
func (s *Server) Pause()  { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }
func (s *Server) Resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }

// Do sends one command and returns the reply; a Redis error reply fails the test.
func (s *Server) Do(args ...any) resp.Value {
	s.t.Helper()
	v, err := s.try(args...)
	if err != nil {
		s.t.Fatalf("redis %v: %v", args, err)
	}
	if v.Type() == resp.Error {
		s.t.Fatalf("redis %v: %s", args, v.String())
	}
	return v
}

func (s *Server) try(args ...any) (resp.Value, error) {
	dialer := &net.Dialer{Timeout: time.Second}
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = tls.DialWithDialer(dialer, "tcp", s.Addr, s.tls)
	} else {
		c, err = dialer.Dial("tcp", s.Addr)
	}
	if err != nil {
		return resp.Value{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(c)
	if err := resp.NewWriter(w).WriteMultiBulk(args[0].(string), args[1:]...); err != nil {
		return resp.Value{}, err
	}
	if err := w.Flush(); err != nil {
		return resp.Value{}, err
	}
	v, _, err := resp.NewReader(c).ReadValue()
	if err != nil {
		return resp.Value{}, fmt.Errorf("reading reply: %w", err)
	}
	return v, nil
}
