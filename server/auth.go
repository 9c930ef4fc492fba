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

// bearerChallenge is the WWW-Authenticate header of a 401.
const bearerChallenge = `Bearer realm="redis-proxy"`

var (
	noAuthReply    = proto.AppendError(nil, "NOAUTH Authentication required.")
	noAuthHello    = proto.AppendError(nil, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
	wrongPassReply = proto.AppendError(nil, "WRONGPASS invalid username-password pair or user is disabled.")
	noPassReply    = proto.AppendError(nil, "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
)

// passwordIs reports whether p is the password.
func (s *Server) passwordIs(p []byte) bool {
	return PasswordMatches(p, &s.passwordDigest)
}

// PasswordMatches reports whether p has the SHA-256 digest want, in time
// independent of p and of where it differs.
func PasswordMatches(p []byte, want *[sha256.Size]byte) bool {
	got := sha256.Sum256(p)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// BearerToken returns the token of an Authorization header value of the
// Bearer scheme (its name in any case, as HTTP has it), or nil.
func BearerToken(authorization []byte) []byte {
	if len(authorization) < 7 || !proto.EqualFold(authorization[:6], "bearer") || authorization[6] != ' ' {
		return nil
	}
	token := authorization[7:]
	for len(token) > 0 && token[0] == ' ' {
		token = token[1:]
	}
	return token
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
	case user == "default" && s.cfg.RequirePass != "" && s.passwordIs(pass):
		cn.authed = true
		return okReply
	}
	return wrongPassReply
}

// httpAuthorized reports whether req may be served: no password is
// configured, or it carries Authorization: Bearer <password> (the scheme's
// name in any case, as HTTP has it).
func (s *Server) httpAuthorized(req *proto.Request) bool {
	if s.cfg.RequirePass == "" {
		return true
	}
	token := BearerToken(req.Authorization)
	return len(token) > 0 && s.passwordIs(token)
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
