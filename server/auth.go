// Client-side protection: --require-pass and protected mode.
//
// With a password (Config.RequirePass), a RESP client authenticates as
// Redis's default user, with AUTH <password>, AUTH default <password> or
// HELLO <protover> AUTH default <password>, before any command but those
// and QUIT; until then it is answered -NOAUTH, as Redis answers, and a wrong
// password -WRONGPASS. HTTP is stateless: every request carries
// Authorization: Bearer <password> or is answered 401 with a
// WWW-Authenticate challenge. Passwords are compared by their SHA-256
// digests, in time that tells nothing of the password, its length included.
//
// Protected mode is Redis's: a proxy that listens on every interface without
// a password serves loopback clients only, and tells the others, in their
// protocol, how to be let in.

package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"

	"github.com/redis-proxy/redis-proxy/proto"
)

// BearerChallenge is the WWW-Authenticate header of a 401, and
// Unauthorized its text.
const (
	BearerChallenge = `Bearer realm="redis-proxy"`
	Unauthorized    = "authentication required: send Authorization: Bearer <the --require-pass password>"
)

var (
	noAuthReply    = proto.AppendError(nil, "NOAUTH Authentication required.")
	noAuthHello    = proto.AppendError(nil, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
	wrongPassReply = proto.AppendError(nil, "WRONGPASS invalid username-password pair or user is disabled.")
	noPassReply    = proto.AppendError(nil, "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
)

// passwordIs reports whether p is the password, comparing SHA-256 digests
// in time independent of p and of where it differs.
func (s *Server) passwordIs(p []byte) bool {
	got := sha256.Sum256(p)
	return subtle.ConstantTimeCompare(got[:], s.passwordDigest[:]) == 1
}

// authenticate answers AUTH [user] password (args as sent, AUTH first).
// Without a password configured it answers as Redis does then: a password
// alone is an error, and the default user with any password is let in.
func (s *Server) authenticate(cn *conn, args [][]byte) []byte {
	if len(args) != 2 && len(args) != 3 {
		return wrongArgs("auth")
	}
	user, pass := "default", args[len(args)-1]
	if len(args) == 3 {
		user = string(args[1])
	}
	switch {
	case s.cfg.RequirePass == "" && len(args) == 2:
		return noPassReply
	case s.cfg.RequirePass == "" && user == "default":
		return okReply
	case user == "default" && s.passwordIs(pass):
		cn.authed = true
		return okReply
	}
	return wrongPassReply
}

// Authorized reports whether an HTTP request with this Authorization
// header value may be served: no password is configured, or it carries
// Bearer <password>. The admin port asks the same.
func (s *Server) Authorized(authorization []byte) bool {
	return s.cfg.RequirePass == "" || s.passwordIs(proto.BearerToken(authorization))
}

// protects reports whether protected mode is on for cfg: asked for, no
// password, and a listen address on every interface, resolved as the
// listener resolves it (a name may stand for 0.0.0.0).
func protects(cfg Config) bool {
	if !cfg.ProtectedMode || cfg.RequirePass != "" {
		return false
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.Listen)
	return err != nil || addr.IP == nil || addr.IP.IsUnspecified()
}

// deniedFrom reports whether protected mode turns away a client at remote.
func deniedFrom(remote net.Addr) bool {
	tcp, ok := remote.(*net.TCPAddr)
	return !ok || !tcp.IP.IsLoopback()
}

// protectedMessage tells a client protected mode turned away how to be let in.
const protectedMessage = "redis-proxy is in protected mode: it listens on every interface and has no --require-pass, so it serves loopback clients only. " +
	"To serve others, set --require-pass, or --listen on a specific address, or --protected-mode=false if the network is trusted."
