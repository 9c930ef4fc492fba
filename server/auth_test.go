package server

import (
	"crypto/sha256"
	"net"
	"strings"
	"testing"

	"github.com/panjf2000/gnet/v2"
)

// With a password, RESP clients get NOAUTH until AUTH (or HELLO AUTH)
// gives it, WRONGPASS for a wrong one; HTTP requests need it as a bearer
// token on every request.
func TestRequirePass(t *testing.T) {
	s, lp := newTestServer(t, nil)
	s.cfg.RequirePass, s.passwordDigest = "s3cret", sha256.Sum256([]byte("s3cret"))
	s.cache.Set("k", []byte("v"))

	c := lp.open(t)
	for _, step := range []struct{ send, want string }{
		{"GET k\r\n", "-NOAUTH Authentication required.\r\n"},
		{"PING\r\n", "-NOAUTH Authentication required.\r\n"},
		{"HELLO 3\r\n", "-NOAUTH HELLO must be called"},
		{"AUTH wrong\r\n", "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{"AUTH someone s3cret\r\n", "-WRONGPASS"},
		{"AUTH\r\n", "-ERR wrong number of arguments for 'auth' command\r\n"},
		{"GET k\r\n", "-NOAUTH"},
		{"AUTH s3cret\r\n", "+OK\r\n"},
		{"GET k\r\n", "$1\r\nv\r\n"},
		{"AUTH wrong\r\n", "-WRONGPASS"}, // and the connection stays authenticated, as in Redis
		{"GET k\r\n", "$1\r\nv\r\n"},
	} {
		c.send(step.send)
		if got := c.takeOut(); !strings.HasPrefix(got, step.want) {
			t.Fatalf("%q: %q, want %q", step.send, got, step.want)
		}
	}
	hello := lp.open(t)
	hello.send("HELLO 2 AUTH default s3cret\r\nGET k\r\n")
	if got := hello.takeOut(); !strings.HasPrefix(got, "*14\r\n") || !strings.HasSuffix(got, "$1\r\nv\r\n") {
		t.Fatalf("HELLO AUTH then GET: %q", got)
	}

	h := lp.open(t)
	for _, step := range []struct{ auth, want string }{
		{"", "HTTP/1.1 401 Unauthorized\r\n"},
		{"Authorization: Bearer wrong\r\n", "HTTP/1.1 401 Unauthorized\r\n"},
		{"Authorization: Basic czNjcmV0\r\n", "HTTP/1.1 401 Unauthorized\r\n"},
		{"Authorization: Bearer s3cret\r\n", "HTTP/1.1 200 OK\r\n"},
		{"Authorization: bearer s3cret\r\n", "HTTP/1.1 200 OK\r\n"}, // the scheme's name in any case
		{"Authorization: Bearer   s3cret\r\n", "HTTP/1.1 200 OK\r\n"},
		{"Authorization: Bearer s3cre\r\n", "HTTP/1.1 401 Unauthorized\r\n"},
		{"Authorization: Bearer\r\n", "HTTP/1.1 401 Unauthorized\r\n"},
	} {
		h.send("GET /k HTTP/1.1\r\nHost: x\r\n" + step.auth + "\r\n")
		got := h.takeOut()
		if !strings.HasPrefix(got, step.want) {
			t.Fatalf("%q: %q", step.auth, got)
		}
		if strings.Contains(step.want, "401") != strings.Contains(got, "\r\nWWW-Authenticate: Bearer realm=\"redis-proxy\"\r\n") {
			t.Fatalf("%q: WWW-Authenticate: %q", step.auth, got)
		}
	}
}

// Without a password, AUTH answers as Redis's does when the default user
// has none.
func TestAuthWithoutPassword(t *testing.T) {
	_, lp := newTestServer(t, nil)
	c := lp.open(t)
	for send, want := range map[string]string{
		"AUTH x\r\n":           "-ERR AUTH <password> called without any password configured",
		"AUTH default x\r\n":   "+OK\r\n",
		"AUTH someone x\r\n":   "-WRONGPASS",
		"PING\r\n":             "+PONG\r\n",
		"HELLO 2 AUTH a b\r\n": "-WRONGPASS",
	} {
		c.send(send)
		if got := c.takeOut(); !strings.HasPrefix(got, want) {
			t.Errorf("%q: %q, want %q", send, got, want)
		}
	}
}

// Protected mode is on only for every interface without a password, and
// turns away non-loopback clients, in their protocol.
func TestProtectedMode(t *testing.T) {
	for _, tc := range []struct {
		listen, pass string
		on           bool
	}{
		{"0.0.0.0:6380", "", true},
		{":6380", "", true},
		{"[::]:6380", "", true},
		{"127.0.0.1:6380", "", false},
		{"10.0.0.5:6380", "", false},
		{"0.0.0.0:6380", "pw", false},
		{"localhost:6380", "", false},
	} {
		if got := protects(Config{Listen: tc.listen, RequirePass: tc.pass, ProtectedMode: true}); got != tc.on {
			t.Errorf("%s, password %q: protected %v", tc.listen, tc.pass, got)
		}
		if protects(Config{Listen: tc.listen, RequirePass: tc.pass}) {
			t.Errorf("%s: protected with --protected-mode=false", tc.listen)
		}
	}

	s, lp := newTestServer(t, nil)
	s.protected = true
	s.cache.Set("k", []byte("v"))
	open := func(ip string) *fakeConn {
		c := &fakeConn{loop: lp, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 5000}}
		if _, action := s.OnOpen(c); action != gnet.None {
			t.Fatal("closed at once")
		}
		return c
	}
	for _, ip := range []string{"127.0.0.1", "::1", "127.0.0.9", "::ffff:127.0.0.1"} {
		c := open(ip)
		c.send("GET k\r\n")
		if got := c.takeOut(); got != "$1\r\nv\r\n" {
			t.Fatalf("loopback client %s: %q", ip, got)
		}
	}
	resp := open("192.0.2.7")
	if !resp.send("GET k\r\n") || !strings.HasPrefix(resp.takeOut(), "-DENIED redis-proxy is in protected mode") {
		t.Fatal("a remote RESP client was not turned away")
	}
	http := open("2001:db8::7")
	http.send("GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := http.takeOut(); !strings.HasPrefix(got, "HTTP/1.1 403 Forbidden\r\n") || !strings.Contains(got, "--protected-mode=false") {
		t.Fatalf("a remote HTTP client: %q", got)
	}
	if st := s.Stats(); st.Clients != 4 || st.Denied != 2 {
		t.Fatalf("clients %d, denied %d", st.Clients, st.Denied)
	}
}
