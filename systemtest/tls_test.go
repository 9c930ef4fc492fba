// TLS for clients, as the README tells users to set it up: the proxy speaks
// plain TCP (gnet has no TLS), and stunnel in front of it terminates TLS.
// The test makes a throwaway CA and a server certificate for 127.0.0.1,
// writes the stunnel configuration the README shows, runs stunnel, and reads
// through it over both protocols with Go's crypto/tls, which checks the
// certificate against the CA.

package systemtest

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis-proxy/redis-proxy/internal/redistest"
)

// A RESP GET and an HTTP GET through stunnel, over TLS, to the proxy's one
// port, get the value.
func TestTLSThroughStunnel(t *testing.T) {
	redis := redistest.Start(t)
	redis.Do("SET", "k", "over tls")
	p := startProxy(t, redis.Addr)
	dir := t.TempDir()
	ca := redistest.NewCA(t)
	cert, key := ca.Issue(t, dir)
	front := startStunnel(t, dir, p.addr, cert, key)
	clientTLS := &tls.Config{RootCAs: ca.Pool}

	dial := func() net.Conn {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", front, clientTLS)
		if err != nil {
			t.Fatalf("TLS to stunnel at %s: %v", front, err)
		}
		return c
	}
	if got := respGet(respOver(t, dial()), "k"); got != "over tls" {
		t.Fatalf("RESP GET k over TLS: %q", got)
	}
	if status, body := httpOver(t, dial()).get("k"); status != 200 || body != "over tls" {
		t.Fatalf("HTTP GET /k over TLS: %d %q", status, body)
	}
}

// startStunnel runs stunnel in the foreground with a configuration in dir
// that takes TLS on a free loopback port and forwards plain TCP to backend,
// with the certificate and key in certFile and keyFile. It waits until the port accepts, returns
// its address, and kills stunnel (by PID) when the test ends.
func startStunnel(t *testing.T, dir, backend, certFile, keyFile string) string {
	t.Helper()
	bin, err := exec.LookPath("stunnel4")
	if err != nil {
		if bin, err = exec.LookPath("stunnel"); err != nil {
			t.Fatal("stunnel is not on PATH: run `make deps` (apt-get install stunnel4)")
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	conf := filepath.Join(dir, "stunnel.conf")
	config := fmt.Sprintf("foreground = yes\npid =\n\n[proxy]\naccept = %s\nconnect = %s\ncert = %s\nkey = %s\n",
		addr, backend, certFile, keyFile)
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf)
	output := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = output, output
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	awaitListening(t, "stunnel", addr, exited, output)
	return addr
}
