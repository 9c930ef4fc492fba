// HTTP/1.x request parsing and response writing for the proxy's one kind of
// request: GET or HEAD of a key, as /<percent-encoded key> (answered with the
// raw value) or /lookup?key=<percent-encoded key> (answered in JSON, json.go).
//
// ParseRequest frames a request (request line, header block, optional
// Content-Length body, which is skipped) and reads the five things the proxy
// acts on: the method, the key, the form of the answer, the Authorization
// header and whether the connection stays open. Two outcomes are kept apart on purpose:
//   - a framing error (malformed line, header block over 8 KiB, chunked body)
//     is returned as an *HTTPError: the stream cannot be trusted any further,
//     so the caller answers it and closes;
//   - a well-framed request the proxy will not serve (other method, empty key,
//     bad percent-escape) parses fine and carries its answer in Request.Status,
//     so the connection can stay open as keep-alive allows.
//
// Leniency follows common servers: a bare LF ends a line, Host is not
// required, the target may be absolute-form ("http://host/key"). The key is
// the path after the first '/', up to '?', with %XX decoded and nothing else
// changed (no '+' to space, no dot-segment or slash normalisation), so any
// byte can be in a key; the query is ignored. The one exception is the path
// "lookup" exactly (as sent, not decoded) with a parameter named "key" in its
// query: the key is then that parameter's value, decoded as HTML forms and
// URL libraries encode it (%XX, and '+' for a space), and the answer is JSON.

package proto

import (
	"bytes"
	"strconv"
)

// MaxHeaderBytes bounds the request line plus headers.
const MaxHeaderBytes = 8 << 10

// MaxBodyBytes bounds a request body; GET and HEAD carry none in practice, and
// a body is read only to be skipped.
const MaxBodyBytes = 64 << 10

// Method is the request method, as far as the proxy cares.
type Method uint8

const (
	// MethodOther is any method the proxy refuses with 405.
	MethodOther Method = iota
	MethodGET
	MethodHEAD
)

// HTTPError is a request the proxy cannot frame; Status and Msg are its answer.
type HTTPError struct {
	Status int
	Msg    string
}

func (e *HTTPError) Error() string { return e.Msg }

// The framing errors.
var (
	ErrMalformed       = &HTTPError{400, "malformed request"}
	ErrURITooLong      = &HTTPError{414, "request line longer than 8 KiB"}
	ErrHeadersTooLarge = &HTTPError{431, "request line and headers longer than 8 KiB"}
	ErrBodyTooLarge    = &HTTPError{413, "request body too large"}
	ErrChunkedBody     = &HTTPError{501, "Transfer-Encoding is not supported"}
	ErrVersion         = &HTTPError{505, "only HTTP/1.0 and HTTP/1.1 are supported"}
)

// Request is one parsed HTTP request. Reuse it across calls: Key keeps its
// capacity.
type Request struct {
	Method Method
	Key    []byte // percent-decoded key, owned by the Request
	JSON   bool   // asked as /lookup?key=<key>: answered in JSON
	// Authorization is the Authorization header's value, a view into the
	// parsed buffer (valid until it is consumed), nil without one.
	Authorization []byte
	KeepAlive     bool // the connection stays open after the answer
	HTTP10        bool // the request was HTTP/1.0 (its keep-alive must be confirmed)
	// Status is non-zero when the request is well framed but refused; StatusMsg says why.
	Status    int
	StatusMsg string
	// Need is, after an incomplete parse, how many bytes the request needs in
	// total when that is known (its headers are in, its body is not), else 0.
	Need int
}

// ParseRequest parses one request from the front of buf. It returns the
// number of bytes used, 0 when the request is incomplete, or an *HTTPError.
func ParseRequest(buf []byte, req *Request) (int, error) {
	req.Need = 0
	end, err := headerEnd(buf)
	if end == 0 || err != nil {
		return 0, err
	}
	req.Key, req.JSON, req.Authorization = req.Key[:0], false, nil
	req.Status, req.StatusMsg = 0, ""

	lineEnd := bytes.IndexByte(buf, '\n')
	line := trimCR(buf[:lineEnd])
	target, err := parseRequestLine(line, req)
	if err != nil {
		return 0, err
	}
	bodyLen, err := parseHeaders(buf[lineEnd+1:end], req)
	if err != nil {
		return 0, err
	}
	if end+bodyLen > len(buf) {
		req.Need = end + bodyLen
		return 0, nil
	}
	// The target is read whatever the method: a refusal of another method is
	// answered in the form the target asks for.
	parseTarget(target, req)
	if req.Method == MethodOther {
		req.Status, req.StatusMsg = 405, "method not allowed: use GET or HEAD"
	}
	return end + bodyLen, nil
}

// headerEnd returns the index just past the blank line that ends the header
// block, 0 if it has not arrived, or a size error.
func headerEnd(buf []byte) (int, error) {
	limit := len(buf)
	if limit > MaxHeaderBytes+4 {
		limit = MaxHeaderBytes + 4
	}
	start := 0
	for start < limit {
		nl := bytes.IndexByte(buf[start:limit], '\n')
		if nl < 0 {
			break
		}
		lineEnd := start + nl
		if lineEnd == start || (lineEnd == start+1 && buf[start] == '\r') {
			if start == 0 {
				return 0, ErrMalformed // a request cannot start with a blank line here
			}
			if lineEnd+1 > MaxHeaderBytes {
				return 0, ErrHeadersTooLarge
			}
			return lineEnd + 1, nil
		}
		start = lineEnd + 1
	}
	if len(buf) <= MaxHeaderBytes {
		return 0, nil
	}
	if bytes.IndexByte(buf[:MaxHeaderBytes], '\n') < 0 {
		return 0, ErrURITooLong
	}
	return 0, ErrHeadersTooLarge
}

// parseRequestLine reads "METHOD SP target SP HTTP/1.x" and returns the target.
func parseRequestLine(line []byte, req *Request) ([]byte, error) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return nil, ErrMalformed
	}
	method := line[:sp1]
	rest := line[sp1+1:]
	sp2 := bytes.LastIndexByte(rest, ' ')
	if sp2 <= 0 {
		return nil, ErrMalformed
	}
	target, version := rest[:sp2], rest[sp2+1:]
	if len(version) != 8 || string(version[:5]) != "HTTP/" || version[6] != '.' ||
		!isDigit(version[5]) || !isDigit(version[7]) {
		return nil, ErrMalformed
	}
	if version[5] != '1' {
		return nil, ErrVersion
	}
	if bytes.IndexByte(target, ' ') >= 0 {
		return nil, ErrMalformed
	}
	for _, c := range method {
		if !isTokenChar(c) {
			return nil, ErrMalformed
		}
	}
	switch string(method) {
	case "GET":
		req.Method = MethodGET
	case "HEAD":
		req.Method = MethodHEAD
	default:
		req.Method = MethodOther
	}
	req.HTTP10 = version[7] == '0'
	req.KeepAlive = !req.HTTP10
	return target, nil
}

// parseHeaders reads the header lines up to the blank line that ends them
// and returns the body length they announce.
func parseHeaders(block []byte, req *Request) (int, error) {
	bodyLen := -1
	for {
		nl := bytes.IndexByte(block, '\n')
		line := trimCR(block[:nl])
		block = block[nl+1:]
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			return 0, ErrMalformed // no name, or obsolete line folding
		}
		name := line[:colon]
		for _, c := range name {
			if !isTokenChar(c) {
				return 0, ErrMalformed
			}
		}
		value := bytes.Trim(line[colon+1:], " \t")
		switch {
		case EqualFold(name, "connection"):
			connectionTokens(value, req)
		case EqualFold(name, "content-length"):
			n, ok := parseContentLength(value)
			if !ok || (bodyLen >= 0 && n != bodyLen) {
				return 0, ErrMalformed
			}
			if n > MaxBodyBytes {
				return 0, ErrBodyTooLarge
			}
			bodyLen = n
		case EqualFold(name, "transfer-encoding"):
			return 0, ErrChunkedBody
		case EqualFold(name, "authorization"):
			req.Authorization = value
		}
	}
	if bodyLen < 0 {
		bodyLen = 0
	}
	return bodyLen, nil
}

// connectionTokens applies a Connection header's comma-separated options.
func connectionTokens(value []byte, req *Request) {
	for len(value) > 0 {
		tok := value
		if comma := bytes.IndexByte(value, ','); comma >= 0 {
			tok, value = value[:comma], value[comma+1:]
		} else {
			value = nil
		}
		tok = bytes.Trim(tok, " \t")
		switch {
		case EqualFold(tok, "close"):
			req.KeepAlive = false
		case EqualFold(tok, "keep-alive") && req.HTTP10:
			req.KeepAlive = true
		}
	}
}

func parseContentLength(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// parseTarget decodes the key from an origin-form or absolute-form target
// into req.Key, and sets req.JSON for the /lookup?key= form, or sets
// req.Status when the target names no usable key.
func parseTarget(target []byte, req *Request) {
	switch {
	case len(target) > 0 && target[0] == '/':
		target = target[1:]
	case hasPrefixFold(target, "http://") || hasPrefixFold(target, "https://"):
		hostStart := bytes.Index(target, []byte("://")) + 3
		slash := bytes.IndexByte(target[hostStart:], '/')
		if slash < 0 {
			target = nil
		} else {
			target = target[hostStart+slash+1:]
		}
	default:
		req.Status, req.StatusMsg = 400, "request target must be /<key>"
		return
	}
	path, query := target, []byte(nil)
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		path, query = target[:q], target[q+1:]
	}
	emptyMsg := "empty key: use GET /<key>"
	if string(path) == "lookup" {
		if value, ok := queryParam(query, "key"); ok {
			req.JSON = true
			path, emptyMsg = value, "empty key: use GET /lookup?key=<key>"
		}
	}
	var ok bool
	if req.Key, ok = appendUnescaped(req.Key, path, req.JSON); !ok {
		req.Status, req.StatusMsg = 400, "invalid percent-escape in key"
		return
	}
	if len(req.Key) == 0 {
		req.Status, req.StatusMsg = 400, emptyMsg
	}
}

// queryParam returns the value, still encoded, of the first parameter called
// name in query: '&'-separated "name=value" pairs, a bare "name" having an
// empty value. Names are compared as sent.
func queryParam(query []byte, name string) ([]byte, bool) {
	for len(query) > 0 {
		param := query
		if amp := bytes.IndexByte(query, '&'); amp >= 0 {
			param, query = query[:amp], query[amp+1:]
		} else {
			query = nil
		}
		value := []byte(nil)
		if eq := bytes.IndexByte(param, '='); eq >= 0 {
			param, value = param[:eq], param[eq+1:]
		}
		if string(param) == name {
			return value, true
		}
	}
	return nil, false
}

// appendUnescaped appends s to dst with every %XX decoded, and, in a form's
// encoding (form), every '+' as a space. At a bad escape it returns dst as it
// was and false.
func appendUnescaped(dst, s []byte, form bool) ([]byte, bool) {
	start := len(dst)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return dst[:start], false
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		case c == '+' && form:
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst, true
}

func trimCR(line []byte) []byte {
	if len(line) > 0 && line[len(line)-1] == '\r' {
		return line[:len(line)-1]
	}
	return line
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// EqualFold reports whether b equals the lower-case ASCII s, ignoring b's case.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, s string) bool {
	return len(b) >= len(s) && EqualFold(b[:len(s)], s)
}

// BearerToken returns the token of an Authorization header value of the
// Bearer scheme (its name in any case, as HTTP has it), or nil.
func BearerToken(authorization []byte) []byte {
	if !hasPrefixFold(authorization, "bearer ") {
		return nil
	}
	return bytes.TrimLeft(authorization[len("bearer "):], " ")
}

// ResponseOptions describe how an answer is framed for the request it answers.
type ResponseOptions struct {
	Head      bool   // HEAD: headers only
	JSON      bool   // the answer is the JSON object of json.go, not raw or text
	KeepAlive bool   // false: announce and then close
	HTTP10    bool   // an HTTP/1.0 keep-alive must be confirmed
	Date      []byte // the Date header value, which a server with a clock sends
	// CacheStatus, if set, is sent as the Cache-Status header (RFC 9211),
	// saying how the cache came by the answer.
	CacheStatus string
	// Age is how long the value has been cached, in seconds: sent as the
	// Age header (RFC 9111) on a 200 that carries a Cache-Status.
	Age int64
	// RetryAfter, if positive, is sent as Retry-After: the seconds after
	// which a refused request may succeed.
	RetryAfter int
	// Challenge, on a 401, is sent as WWW-Authenticate: how to authenticate.
	Challenge string
}

// ResponseOptionsFor returns the framing of the answer to req.
func ResponseOptionsFor(req *Request, date []byte) ResponseOptions {
	return ResponseOptions{Head: req.Method == MethodHEAD, JSON: req.JSON, KeepAlive: req.KeepAlive, HTTP10: req.HTTP10, Date: date}
}

// MaxJSONValue is the largest value answered in JSON. A JSON answer is
// encoded whole, on the event loop, up to 6 times the value's size (control
// bytes, each \u00XX): a larger value gets a 406 that says to read it raw,
// which is written from the cache's copy as the client reads.
const MaxJSONValue = 1 << 20

// AppendValue appends a 200 answer carrying the value of key: the raw value,
// or with o.JSON the JSON object naming both (a 406 over MaxJSONValue).
func AppendValue(dst []byte, o *ResponseOptions, key, value []byte) []byte {
	if o.JSON {
		if len(value) > MaxJSONValue {
			return appendJSONAnswer(dst, o, 406, key, nil, "value of "+strconv.Itoa(len(value))+
				" bytes, over the JSON form's 1 MiB: read it raw with GET /<key>")
		}
		return appendJSONAnswer(dst, o, 200, key, value, "")
	}
	dst = AppendValueHead(dst, o, len(value))
	if !o.Head {
		dst = append(dst, value...)
	}
	return dst
}

// AppendValueHead appends the status line and headers of a raw 200 answer
// whose body, n bytes of value, is to follow (unless o.Head). It ignores
// o.JSON: a JSON answer is written whole, by AppendValue.
func AppendValueHead(dst []byte, o *ResponseOptions, n int) []byte {
	return appendHead(dst, 200, "application/octet-stream", n, o)
}

// AppendStatus appends an answer about key (nil if there is none) with the
// given status, saying why in msg: a one-line text body, or with o.JSON the
// JSON object. A 405 carries the Allow header.
func AppendStatus(dst []byte, o *ResponseOptions, key []byte, status int, msg string) []byte {
	if o.JSON {
		return appendJSONAnswer(dst, o, status, key, nil, msg)
	}
	dst = appendHead(dst, status, "text/plain; charset=utf-8", len(msg)+1, o)
	if !o.Head {
		dst = append(dst, msg...)
		dst = append(dst, '\n')
	}
	return dst
}

func appendHead(dst []byte, status int, contentType string, length int, o *ResponseOptions) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = appendUint(dst, uint64(status))
	dst = append(dst, ' ')
	dst = append(dst, statusText(status)...)
	dst = append(dst, "\r\nServer: redis-proxy\r\nDate: "...)
	dst = append(dst, o.Date...)
	dst = append(dst, "\r\nContent-Type: "...)
	dst = append(dst, contentType...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = appendUint(dst, uint64(length))
	if status == 405 {
		dst = append(dst, "\r\nAllow: GET, HEAD"...)
	}
	if o.Challenge != "" {
		dst = append(dst, "\r\nWWW-Authenticate: "...)
		dst = append(dst, o.Challenge...)
	}
	if o.RetryAfter > 0 {
		dst = append(dst, "\r\nRetry-After: "...)
		dst = appendUint(dst, uint64(o.RetryAfter))
	}
	if o.CacheStatus != "" {
		dst = append(dst, "\r\nCache-Status: "...)
		dst = append(dst, o.CacheStatus...)
		if status == 200 {
			dst = append(dst, "\r\nAge: "...)
			dst = appendUint(dst, uint64(max(o.Age, 0)))
		}
	}
	switch {
	case !o.KeepAlive:
		dst = append(dst, "\r\nConnection: close"...)
	case o.HTTP10:
		dst = append(dst, "\r\nConnection: keep-alive"...)
	}
	return append(dst, "\r\n\r\n"...)
}

func statusText(status int) string {
	switch status {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 406:
		return "Not Acceptable"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Unknown"
}
