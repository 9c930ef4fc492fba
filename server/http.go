// HTTP requests: GET or HEAD /<key>, answered from the cache or the backend.
//
// Status codes: 200 with the raw value, 404 for a key Redis does not have,
// 400/405 for requests the proxy will not serve (connection kept), 400, 413,
// 414, 431, 501, 505 for requests it cannot frame (connection closed after
// the answer), 502 when Redis is unreachable or answers an error, 504 when it
// is too slow, 503 when the proxy is over its limits. Every error carries a
// one-line text body saying why.

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
		*dst = proto.AppendStatus(*dst, &o, he.Status, he.Msg)
		cn.lp.stats.count(proto.HTTP, ResultError)
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
	if req.Status != 0 {
		*dst = proto.AppendStatus(*dst, &o, req.Status, req.StatusMsg)
		cn.lp.stats.count(proto.HTTP, ResultError)
		return n
	}
	if !s.admit(cn) {
		o.RetryAfter = 1 // a bucket refills a second's worth in a second
		*dst = proto.AppendStatus(*dst, &o, 503, "rate limit exceeded")
		cn.lp.stats.count(proto.HTTP, ResultRefused)
		return n
	}
	s.sample(cn.lp, req.Key)
	var body []byte          // a large value, kept by reference (lru.KeptValueMin)
	o.CacheStatus = cacheHit // a miss's answer says otherwise (fill)
	if s.cache.GetAge(req.Key, func(v []byte, age int64) {
		o.Age = age
		if len(v) >= bodyAt && !o.Head {
			body = v
		} else {
			*dst = proto.AppendValue(*dst, &o, v)
		}
	}) {
		if body != nil {
			cn.bodySlot(sl).referValue(&o, body)
		}
		cn.lp.stats.count(proto.HTTP, ResultHit)
		return n
	}
	if sl == nil {
		sl = cn.push()
	}
	sl.ready, sl.kind, sl.http = false, kindHTTP, o
	s.fetch(cn, sl, string(req.Key), 0)
	return n
}

// appendHTTPResult encodes a fetch result as an HTTP answer.
func appendHTTPResult(dst []byte, o *proto.ResponseOptions, r backend.Result) []byte {
	reply, isReply := backend.AsReply(r.Err)
	switch {
	case r.Found:
		return proto.AppendValue(dst, o, r.Value)
	case r.Err == nil:
		return proto.AppendStatus(dst, o, 404, "key not found")
	case isReply:
		return proto.AppendStatus(dst, o, 502, "backend error: "+string(reply))
	case errors.Is(r.Err, backend.ErrTimeout):
		return proto.AppendStatus(dst, o, 504, "backend timeout")
	case errors.Is(r.Err, backend.ErrOverloaded):
		return proto.AppendStatus(dst, o, 503, "backend overloaded: "+r.Err.Error())
	}
	return proto.AppendStatus(dst, o, 502, r.Err.Error())
}
