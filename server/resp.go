// The RESP commands the proxy answers.
//
// GET and MGET are served from the cache and the backend. The rest are the
// commands that clients and tools send around their reads (connection
// handshakes, redis-benchmark's CONFIG GET, redis-cli's COMMAND DOCS), each
// answered the way Redis answers it so that they start quietly. Everything
// else is refused as an unknown command, since the proxy is read-only and
// never forwards anything but GET.

package server

import (
	"bytes"
	"errors"
	"path"
	"strconv"
	"strings"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/proto"
)

// serveRESP answers the command at the front of buf and returns the bytes it
// used, 0 if the command is incomplete.
func (s *Server) serveRESP(cn *conn, buf []byte) int {
	cmd := &cn.lp.cmd
	var n int
	var err error
	if cn.held == nil {
		n, err = proto.ParseCommand(buf, cmd)
	} else {
		cmd = &cn.held.cmd // buf is cn.held's: go on from where the last pass stopped
		n, err = proto.ContinueCommand(buf, cmd)
	}
	if err != nil {
		_, dst := cn.answerBuf()
		*dst = proto.AppendError(*dst, "ERR "+err.Error())
		cn.lp.stats.count(proto.RESP, ResultError)
		cn.closing = true // like Redis: the stream can no longer be framed
		return len(buf)
	}
	if n == 0 {
		cn.need = cmd.Need
		return 0
	}
	cn.need = 0
	if len(cmd.Args) > 0 {
		s.command(cn, cmd.Args)
	}
	return n
}

func (s *Server) command(cn *conn, args [][]byte) {
	name := args[0]
	if !cn.authed && !proto.EqualFold(name, "auth") && !proto.EqualFold(name, "hello") && !proto.EqualFold(name, "quit") {
		s.reply(cn, noAuthReply)
		return
	}
	switch {
	case proto.EqualFold(name, "get"):
		if len(args) != 2 {
			s.reply(cn, wrongArgs("get"))
			return
		}
		if s.admitRead(cn) {
			s.get(cn, args[1])
		}
	case proto.EqualFold(name, "mget"):
		if len(args) < 2 {
			s.reply(cn, wrongArgs("mget"))
			return
		}
		if s.admitRead(cn) {
			s.mget(cn, args[1:])
		}
	case proto.EqualFold(name, "ping"):
		switch len(args) {
		case 1:
			s.reply(cn, pongReply)
		case 2:
			s.reply(cn, proto.AppendBulk(nil, args[1]))
		default:
			s.reply(cn, wrongArgs("ping"))
		}
	case proto.EqualFold(name, "echo"):
		if len(args) != 2 {
			s.reply(cn, wrongArgs("echo"))
			return
		}
		s.reply(cn, proto.AppendBulk(nil, args[1]))
	case proto.EqualFold(name, "quit"):
		s.reply(cn, okReply)
		cn.closing = true
	case proto.EqualFold(name, "select"):
		s.reply(cn, selectDB(args))
	case proto.EqualFold(name, "client"):
		s.reply(cn, s.client(cn, args))
	case proto.EqualFold(name, "command"):
		s.reply(cn, commandInfo(args, cn.resp3))
	case proto.EqualFold(name, "config"):
		s.reply(cn, configGet(args, cn.resp3))
	case proto.EqualFold(name, "hello"):
		s.reply(cn, s.hello(cn, args))
	case proto.EqualFold(name, "info"):
		s.reply(cn, proto.AppendBulkString(nil, s.info(args[1:])))
	case proto.EqualFold(name, "auth"):
		s.reply(cn, s.authenticate(cn, args))
	default:
		s.reply(cn, unknownCommand(args))
	}
}

// Fixed answers, so that PING and friends allocate nothing either.
var (
	okReply   = proto.AppendSimple(nil, "OK")
	pongReply = proto.AppendSimple(nil, "PONG")
)

// reply queues an answer that is complete at once: an error, or the answer
// to a command that reads no key.
func (s *Server) reply(cn *conn, answer []byte) {
	r := ResultOther
	if answer[0] == '-' {
		r = ResultError
	}
	s.replyAs(cn, answer, r)
}

// replyAs queues an answer that is complete at once, counted as r.
func (s *Server) replyAs(cn *conn, answer []byte, r Result) {
	_, dst := cn.answerBuf()
	*dst = append(*dst, answer...)
	cn.lp.stats.count(proto.RESP, r)
}

// rateLimitedReply answers a read over a rate limit (ratelimit.go).
var rateLimitedReply = proto.AppendError(nil, "ERR rate limit exceeded")

// admitRead reports whether a GET or MGET on cn is within the rate limits,
// and answers it if not.
func (s *Server) admitRead(cn *conn) bool {
	if s.limits == nil || s.admit(cn) { // the check first: admit is not inlined
		return true
	}
	s.replyAs(cn, rateLimitedReply, ResultRefused)
	return false
}

// get answers GET key: from the cache when it can, else through a fetch.
func (s *Server) get(cn *conn, key []byte) {
	sl, dst := cn.answerBuf()
	s.sample(cn.lp, key)
	var body []byte // a large value, kept by reference (lru.KeptValueMin)
	if s.cache.Get(key, func(v []byte) {
		if len(v) >= bodyAt {
			body = v
		} else {
			*dst = proto.AppendBulk(*dst, v)
		}
	}) {
		if body != nil {
			cn.bodySlot(sl).referBulk(body)
		}
		cn.lp.stats.count(proto.RESP, ResultHit)
		return
	}
	if sl == nil {
		sl = cn.push()
	}
	sl.ready, sl.kind, sl.resp3 = false, kindGET, cn.resp3
	s.fetchValue(cn, sl, string(key))
}

// mget answers MGET. The hits up to the first miss are encoded where the
// answer goes (straight to the loop's output when nothing waits ahead of it);
// from the first miss on, the rest waits in a slot: misses are fetched as one
// batch, later hits are encoded at once, and the slot is written once every
// part is in. Every byte counts against the connection's queued bytes as it
// is encoded, and an answer over maxMGETBytes becomes an error.
func (s *Server) mget(cn *conn, keys [][]byte) {
	sl, dst := cn.answerBuf()
	start := len(*dst)
	*dst = proto.AppendArray(*dst, len(keys))
	for _, k := range keys {
		s.sample(cn.lp, k)
	}
	first := 0
	for ; first < len(keys); first++ {
		if !s.cache.Get(keys[first], func(v []byte) { *dst = proto.AppendBulk(*dst, v) }) {
			break
		}
		if len(*dst)-start > maxMGETBytes {
			*dst = proto.AppendError((*dst)[:start], errMGETTooBig.Error())
			cn.lp.stats.count(proto.RESP, ResultError)
			return
		}
	}
	if first == len(keys) {
		cn.lp.stats.count(proto.RESP, ResultHit)
		return
	}
	if sl == nil { // the hits so far went to the loop's output: move them to a slot
		sl = cn.push()
		sl.out = append(sl.out, cn.lp.out[start:]...)
		cn.lp.out = cn.lp.out[:start]
	}
	sl.ready, sl.kind, sl.resp3 = false, kindMGET, cn.resp3
	sl.parts = make([][]byte, len(keys)-first)
	missed := []int{0} // keys[first] missed, looked up once: a second look could find it cached and leave nothing to wait for
	cost := fetchBytes(keys[first])
	for i, k := range keys[first+1:] {
		if !s.cache.Get(k, func(v []byte) { s.addPart(sl, i+1, proto.AppendBulk(nil, v)) }) {
			missed = append(missed, i+1)
			cost += fetchBytes(k)
		}
	}
	if sl.failure == nil && len(sl.out)+sl.partBytes+cost > maxMGETBytes {
		sl.failure = errMGETTooBig // too many keys to fetch at once
	}
	if sl.failure != nil {
		s.finishMGET(cn.lp, sl)
		return
	}
	sl.waiting = len(missed)
	for _, part := range missed { // they go to Redis in the loop's batch
		s.fetch(cn, sl, string(keys[first+part]), part)
	}
}

// errMGETTooBig is the answer to an MGET whose answer would exceed maxMGETBytes.
var errMGETTooBig = errors.New("ERR MGET answer over 64 MiB: ask for fewer or smaller keys at once")

// addPart records an MGET's element i (counted from its first miss); past
// maxMGETBytes the whole answer becomes errMGETTooBig.
func (s *Server) addPart(sl *slot, i int, part []byte) {
	if sl.failure != nil {
		return
	}
	sl.parts[i] = part
	sl.partBytes += len(part)
	if len(sl.out)+sl.partBytes > maxMGETBytes {
		sl.failure = errMGETTooBig
		sl.parts, sl.partBytes = nil, 0
	}
}

// fillMGET records one fetched part (stale: a stale value standing in for a
// failed fetch). As Redis's MGET does, a key holding a non-string
// (WRONGTYPE) reads as nil; a failed fetch fails the whole answer.
func (s *Server) fillMGET(lp *loop, sl *slot, part int, r backend.Result, stale bool) {
	sl.stale = sl.stale || stale
	_, isReply := backend.AsReply(r.Err)
	switch {
	case r.Found:
		s.addPart(sl, part, proto.AppendBulk(nil, r.Value))
	case r.Err == nil || isReply:
		s.addPart(sl, part, proto.AppendNull(nil, sl.resp3))
	case sl.failure == nil:
		sl.failure = r.Err
		sl.parts, sl.partBytes = nil, 0
	}
	sl.waiting--
	if sl.waiting == 0 {
		s.finishMGET(lp, sl)
	}
}

// finishMGET marks an MGET's answer ready: its start in out, its parts after
// it (flush writes them in order, without gathering them first), or, if a
// part failed, the failure alone; and counts it.
func (s *Server) finishMGET(lp *loop, sl *slot) {
	lp.stats.count(proto.RESP, fetchResult(sl.failure, sl.stale))
	if sl.failure != nil {
		out := sl.out[:0]
		if sl.failure == errMGETTooBig {
			out = proto.AppendError(out, errMGETTooBig.Error())
		} else {
			out = appendRESPResult(out, backend.Result{Err: sl.failure}, sl.resp3)
		}
		sl.out, sl.parts, sl.partBytes = out, nil, 0
	}
	sl.ready = true
}

// appendRESPResult encodes a GET's fetch result.
func appendRESPResult(dst []byte, r backend.Result, resp3 bool) []byte {
	reply, isReply := backend.AsReply(r.Err)
	switch {
	case r.Found:
		return proto.AppendBulk(dst, r.Value)
	case r.Err == nil:
		return proto.AppendNull(dst, resp3)
	case isReply:
		return proto.AppendError(dst, string(reply))
	case errors.Is(r.Err, backend.ErrTimeout):
		return proto.AppendError(dst, "ERR backend timeout")
	case errors.Is(r.Err, backend.ErrOverloaded):
		return proto.AppendError(dst, "ERR backend overloaded: "+r.Err.Error())
	}
	return proto.AppendError(dst, "ERR "+r.Err.Error())
}

func wrongArgs(cmd string) []byte {
	return proto.AppendError(nil, "ERR wrong number of arguments for '"+cmd+"' command")
}

// unknownCommand words the refusal as Redis 7 does.
func unknownCommand(args [][]byte) []byte {
	var b strings.Builder
	b.WriteString("ERR unknown command '")
	b.Write(truncate(args[0], 128))
	b.WriteString("', with args beginning with: ")
	for _, a := range args[1:] {
		if b.Len() > 256 {
			break
		}
		b.WriteByte('\'')
		b.Write(truncate(a, 128))
		b.WriteString("' ")
	}
	return proto.AppendError(nil, b.String())
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// selectDB accepts database 0, the only one the proxy serves.
func selectDB(args [][]byte) []byte {
	if len(args) != 2 {
		return wrongArgs("select")
	}
	n, err := strconv.Atoi(string(args[1]))
	switch {
	case err != nil:
		return proto.AppendError(nil, "ERR value is not an integer or out of range")
	case n != 0:
		return proto.AppendError(nil, "ERR DB index is out of range")
	}
	return okReply
}

// client answers the CLIENT subcommands that client libraries send when they
// connect.
func (s *Server) client(cn *conn, args [][]byte) []byte {
	if len(args) < 2 {
		return wrongArgs("client")
	}
	sub := args[1]
	switch {
	case proto.EqualFold(sub, "setname") && len(args) == 3:
		if strings.ContainsFunc(string(args[2]), func(r rune) bool { return r <= ' ' || r > '~' }) {
			return proto.AppendError(nil, "ERR Client names cannot contain spaces, newlines or special characters.")
		}
		cn.name = string(args[2])
		return okReply
	case proto.EqualFold(sub, "getname") && len(args) == 2:
		if cn.name == "" {
			return proto.AppendNull(nil, cn.resp3)
		}
		return proto.AppendBulkString(nil, cn.name)
	case proto.EqualFold(sub, "setinfo") && len(args) == 4:
		return okReply
	}
	return proto.AppendError(nil, "ERR unknown subcommand or wrong number of arguments for '"+
		string(truncate(sub, 128))+"'. Try CLIENT HELP.")
}

// commandInfo gives tools an empty command table: COMMAND COUNT is 0,
// COMMAND DOCS an empty map, every other form an empty array.
func commandInfo(args [][]byte, resp3 bool) []byte {
	switch {
	case len(args) >= 2 && proto.EqualFold(args[1], "count"):
		return proto.AppendInt(nil, 0)
	case len(args) >= 2 && proto.EqualFold(args[1], "docs"):
		return proto.AppendMap(nil, 0, resp3)
	}
	return proto.AppendArray(nil, 0)
}

// hello answers HELLO [protover [AUTH user pass] [SETNAME name]]: it switches
// the connection to RESP2 or RESP3 and describes the server, as Redis 7 does.
func (s *Server) hello(cn *conn, args [][]byte) []byte {
	resp3 := cn.resp3
	if len(args) >= 2 {
		switch string(args[1]) {
		case "2":
			resp3 = false
		case "3":
			resp3 = true
		default:
			if _, err := strconv.Atoi(string(args[1])); err != nil {
				return proto.AppendError(nil, "ERR Protocol version is not an integer or out of range")
			}
			return proto.AppendError(nil, "NOPROTO unsupported protocol version")
		}
	}
	name := cn.name
	for i := 2; i < len(args); i++ {
		switch {
		case proto.EqualFold(args[i], "auth") && i+2 < len(args):
			if reply := s.authenticate(cn, args[i:i+3]); !bytes.Equal(reply, okReply) {
				return reply
			}
			i += 2
		case proto.EqualFold(args[i], "setname") && i+1 < len(args):
			name = string(args[i+1])
			i++
		default:
			return proto.AppendError(nil, "ERR Syntax error in HELLO option '"+string(truncate(args[i], 128))+"'")
		}
	}
	if !cn.authed {
		return noAuthHello
	}
	cn.resp3, cn.name = resp3, name
	out := proto.AppendMap(nil, 7, resp3)
	for _, kv := range [][2]string{{"server", "redis"}, {"version", redisVersion}} {
		out = proto.AppendBulkString(out, kv[0])
		out = proto.AppendBulkString(out, kv[1])
	}
	out = proto.AppendBulkString(out, "proto")
	out = proto.AppendInt(out, int64(2+boolInt(resp3)))
	out = proto.AppendBulkString(out, "id")
	out = proto.AppendInt(out, int64(cn.id))
	for _, kv := range [][2]string{{"mode", "standalone"}, {"role", "master"}} {
		out = proto.AppendBulkString(out, kv[0])
		out = proto.AppendBulkString(out, kv[1])
	}
	out = proto.AppendBulkString(out, "modules")
	return proto.AppendArray(out, 0)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// configValues are the settings tools read at start-up, with the values that
// describe the proxy: it persists nothing and serves one database.
var configValues = [][2]string{
	{"save", ""},
	{"appendonly", "no"},
	{"databases", "1"},
}

// configGet answers CONFIG GET pattern [pattern ...] with the name/value pairs
// that match, as Redis 7 does; other CONFIG subcommands are refused.
func configGet(args [][]byte, resp3 bool) []byte {
	if len(args) < 2 || !proto.EqualFold(args[1], "get") {
		sub := ""
		if len(args) >= 2 {
			sub = string(truncate(args[1], 128))
		}
		return proto.AppendError(nil, "ERR unknown subcommand or wrong number of arguments for '"+sub+"'. Try CONFIG HELP.")
	}
	if len(args) < 3 {
		return wrongArgs("config|get")
	}
	var pairs []string
	for _, kv := range configValues {
		for _, pattern := range args[2:] {
			if ok, _ := path.Match(strings.ToLower(string(pattern)), kv[0]); ok {
				pairs = append(pairs, kv[0], kv[1])
				break
			}
		}
	}
	out := proto.AppendMap(nil, len(pairs)/2, resp3)
	for _, p := range pairs {
		out = proto.AppendBulkString(out, p)
	}
	return out
}

// appendRefusal answers a refused connection, in its protocol.
func (s *Server) appendRefusal(dst []byte, cn *conn) []byte {
	r := &refusals[cn.rejected]
	if cn.proto == proto.HTTP {
		o := proto.ResponseOptions{Date: s.dateNow()}
		return proto.AppendStatus(dst, &o, nil, r.status, r.text)
	}
	return proto.AppendError(dst, r.err)
}
