// TLS for clients, as the README tells users to set it up: the proxy speaks
// plain TCP (gnet has no TLS), and stunnel in front of it terminates TLS.
// The test makes a throwaway CA and a server certificate for 127.0.0.1,
// writes the stunnel configuration the README shows, runs stunnel, and reads
// through it over both protocols with Go's crypto/tls, which checks the
// certificate against the CA.

package systemtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
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
	ca := writeCertificates(t, dir)
	front := startStunnel(t, dir, p.addr)
	clientTLS := &tls.Config{RootCAs: ca}

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

// writeCertificates writes a server certificate for 127.0.0.1 (cert.pem)
// and its key (key.pem) into dir, signed by a CA made for the purpose, and
// returns the pool that trusts that CA.
func writeCertificates(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, serverKey := newKey(), newKey()
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redis-proxy test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	serverTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTemplate, caCert, &serverKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM := func(name, kind string, der []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePEM("cert.pem", "CERTIFICATE", serverDER)
	writePEM("key.pem", "PRIVATE KEY", keyDER)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

// startStunnel runs stunnel in the foreground with a configuration in dir
// that takes TLS on a free loopback port and forwards plain TCP to backend,
// with dir's cert.pem and key.pem. It waits until the port accepts, returns
// its address, and kills stunnel (by PID) when the test ends.
func startStunnel(t *testing.T, dir, backend string) string {
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
		addr, backend, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
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
