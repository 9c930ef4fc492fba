// Package proto holds the proxy's wire codecs: a parser and response writers
// for HTTP/1.1 and for RESP2, and the sniffer that tells them apart from a
// connection's first bytes.
//
// Every parser is stateless over a byte slice, in the shape gnet's
// Peek/Discard wants: it looks at the front of the buffered input, and either
// returns how many bytes one complete request used (the caller discards
// them), or 0 bytes and no error when the request is still incomplete (the
// caller leaves the bytes where they are and waits for more), or an error
// when the stream can no longer be framed (the caller answers and closes).
// Parsed fields alias the input or a buffer owned by the request value, which
// the caller reuses, so a parse allocates nothing once buffers have grown.
//
// Writers have the shape AppendX(dst, ...) []byte: they append one answer to
// a caller-owned buffer and allocate only when it has to grow.
package proto

import "bytes"

// Protocol is what a connection speaks; it is decided once, from its first bytes.
type Protocol uint8

const (
	// Unknown means not enough bytes have arrived to decide.
	Unknown Protocol = iota
	// HTTP is HTTP/1.0 or HTTP/1.1.
	HTTP
	// RESP is the Redis protocol, multibulk or inline.
	RESP
)

// Detect decides the protocol from the first bytes of a connection.
//
// A RESP multibulk starts with '*'. Otherwise the first line decides: an HTTP
// request line ends in " HTTP/1.x"; any other complete line is an inline
// RESP command. Without a complete line yet, the answer is Unknown, except
// that a line which has outgrown the HTTP limit while still looking like a
// request line ("METHOD /...") is HTTP (so that it gets its 414), and one
// that has outgrown the inline limit is RESP (so that it gets its protocol
// error).
func Detect(buf []byte) Protocol {
	if len(buf) == 0 {
		return Unknown
	}
	if buf[0] == '*' {
		return RESP
	}
	if nl := bytes.IndexByte(buf, '\n'); nl >= 0 {
		line := buf[:nl]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		const suffix = " HTTP/1."
		if n := len(line); n >= len(suffix)+1 && string(line[n-len(suffix)-1:n-1]) == suffix &&
			line[n-1] >= '0' && line[n-1] <= '9' {
			return HTTP
		}
		return RESP
	}
	if len(buf) > MaxHeaderBytes && looksLikeRequestLine(buf) {
		return HTTP
	}
	if len(buf) > MaxInlineBytes {
		return RESP
	}
	return Unknown
}

// looksLikeRequestLine reports whether buf starts with an upper-case method
// token, one space and an origin-form or absolute-form target.
func looksLikeRequestLine(buf []byte) bool {
	i := 0
	for i < len(buf) && buf[i] >= 'A' && buf[i] <= 'Z' {
		i++
	}
	return i > 0 && i+1 < len(buf) && buf[i] == ' ' && (buf[i+1] == '/' || buf[i+1] == 'h')
}
