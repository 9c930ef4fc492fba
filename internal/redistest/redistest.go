// Package redistest starts real redis-server processes for tests, on free
// loopback ports, and talks to them directly.
//
// Start finds redis-server on PATH, starts it with persistence off on a free
// port, waits until it answers PING and kills it (by PID) when the test ends.
// Stop and Restart let fault tests take Redis away and bring it back on the
// same port. Do sends one command over a fresh connection, so tests can put
// data into Redis behind the proxy's back.
package redistest

import (
	"bufio"
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

	t   testing.TB
	dir string
	cmd *exec.Cmd
}

// Start starts a redis-server for t and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not on PATH: run `make deps` (apt-get install redis-server)")
	}
	port := FreePort(t)
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, t: t, dir: t.TempDir()}
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
	s.cmd = exec.Command("redis-server",
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--logfile", s.dir+"/redis.log")
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
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
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
