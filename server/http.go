// HTTP requests: GET or HEAD /<key>, answered from the cache or the backend,
// with the raw value or a text error; or GET or HEAD /lookup?key=<key>,
// served the same way but answered with a JSON object (proto/json.go).
//
// Status codes: 200 with the value, 404 for a key Redis does not have,
// 400/405 for requests the proxy will not serve (connection kept), 401
// without the --require-pass password, 403 for a client protected mode turns
// away, 406 for a JSON lookup of a value over 1 MiB, 400, 413, 414, 431, 501,
// 505 for requests it cannot frame (connection closed after the answer), 502
// when Redis is unreachable or answers an error, 504 when it is too slow, 503
// when the proxy is over its limits (clients, queue, rate). Every error carries a
// one-line reason: the text body, or the JSON answer's "error" (a JSON form
// that cannot be framed is answered in text: the form is not known yet).

package server

import (
	"errors"

	"github.com/redis-proxy/redis-proxy/backend"
	"github.com/redis-proxy/redis-proxy/proto"
)

// The Cache-Status of an HTTP answer (RFC 9211): from the cache, fetched on a
// miss, or the stale value standing in for a failed fetch (--stale-if-error).
const (
	cacheHit   = "redis-proxy; hit"
	cacheMiss  = "redis-proxy; fwd=miss"
	cacheStale = "redis-proxy; fwd=stale"
)

// serveHTTP answers the request at the front of buf and returns the bytes it
// used, 0 if the request is incomplete.
func (s *Server) serveHTTP(cn *conn, buf []byte) int {
	req := &cn.lp.req
	n, err := proto.ParseRequest(buf, req)
	if err != nil {
		var he *proto.HTTPError
		errors.As(err, &he)
		_, dst := cn.answerBuf()
		o := proto.ResponseOptions{Date: s.dateNow()} // not keep-alive: announces the close
		answerStatus(cn, dst, &o, nil, he.Status, he.Msg, ResultError)
		cn.closing = true
		return len(buf)
	}
	if n == 0 {
		cn.need = req.Need
		return 0
	}
	cn.need = 0
	if !req.KeepAlive {
		cn.closing = true
	}
	o := proto.ResponseOptionsFor(req, s.dateNow())
	sl, dst := cn.answerBuf()
	switch {
	case req.Status != 0:
		answerStatus(cn, dst, &o, req.Key, req.Status, req.StatusMsg, ResultError)
		return n
	case !s.Authorized(req.Authorization):
		o.Challenge = BearerChallenge
		answerStatus(cn, dst, &o, req.Key, 401, Unauthorized, ResultError)
		return n
	case s.limits != nil && !s.admit(cn): // the check first: admit is not inlined
		o.RetryAfter = 1 // a bucket refills a second's worth in a second
		answerStatus(cn, dst, &o, req.Key, 503, "rate limit exceeded", ResultRefused)
		return n
	}
	s.sample(cn.lp, req.Key)
	// A value of bodyAt or more is never written again (lru.KeptValueMin):
	// it is not copied under the shard's lock.
	var large []byte
	o.CacheStatus = cacheHit // a miss's answer says otherwise (fill)
	if s.cache.GetAge(req.Key, func(v []byte, age int64) {
		o.Age = age
		if len(v) >= bodyAt {
			large = v
		} else {
			*dst = proto.AppendValue(*dst, &o, req.Key, v)
		}
	}) {
		switch {
		case large == nil:
		case byReference(&o, len(large)):
			cn.bodySlot(sl).referValue(&o, large)
		default: // no body (HEAD), or an escaped one (JSON)
			*dst = proto.AppendValue(*dst, &o, req.Key, large)
		}
		cn.lp.stats.count(proto.HTTP, ResultHit)
		return n
	}
	if sl == nil {
		sl = cn.push()
	}
	sl.ready, sl.kind, sl.http = false, kindHTTP, o
	s.fetchValue(cn, sl, string(req.Key))
	return n
}

// answerStatus appends to dst an answer of status that carries no value,
// msg saying why, and counts the request as r.
func answerStatus(cn *conn, dst *[]byte, o *proto.ResponseOptions, key []byte, status int, msg string, r Result) {
	*dst = proto.AppendStatus(*dst, o, key, status, msg)
	cn.lp.stats.count(proto.HTTP, r)
}

// appendHTTPResult encodes a fetch result for key as an HTTP answer.
func appendHTTPResult(dst []byte, o *proto.ResponseOptions, key []byte, r backend.Result) []byte {
	reply, isReply := backend.AsReply(r.Err)
	switch {
	case r.Found:
		return proto.AppendValue(dst, o, key, r.Value)
	case r.Err == nil:
		return proto.AppendStatus(dst, o, key, 404, "key not found")
	case isReply:
		return proto.AppendStatus(dst, o, key, 502, "backend error: "+string(reply))
	case errors.Is(r.Err, backend.ErrTimeout):
		return proto.AppendStatus(dst, o, key, 504, "backend timeout")
	case errors.Is(r.Err, backend.ErrOverloaded):
		return proto.AppendStatus(dst, o, key, 503, "backend overloaded: "+r.Err.Error())
	}
	return proto.AppendStatus(dst, o, key, 502, r.Err.Error())
}
