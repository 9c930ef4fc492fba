// JSON answers, for requests of the form GET or HEAD /lookup?key=<key>.
//
// The body is one object, its fields in this order:
//
//	{"key":"k","value":"v","status":200}
//	{"key":"k","status":404}
//	{"key":"k","status":502,"error":"backend error: WRONGTYPE ..."}
//
// "key" is there whenever the request named a usable key (a 400 names none);
// "value" only in a 200; "error", the one-line reason the text answers give,
// in every answer but a 200 and a 404 (a missing key is an answer, not an
// error). "status" always equals the HTTP status. JSON strings must be
// UTF-8, so a key or value that is not (utf8.Valid) is sent in base64
// (standard alphabet, padded) and followed by "key_encoding":"base64" or
// "encoding":"base64". Strings are escaped as RFC 8259 requires, and no
// more: '"', '\' and the control bytes below 0x20 (\n, \r, \t, else \u00XX);
// everything else, UTF-8 sequences included, is copied as it is.
//
// The writers append into the caller's buffer, as the raw ones do, and
// allocate nothing once it has room (encoding/json would, and escapes more).
// The head states the body's length, which is known only once the body is
// encoded: the body is encoded first, the head made in a small array aside,
// and the body moved up behind it.

package proto

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// maxHeadBytes is room enough for any head appendHead makes (under 300
// bytes): the head of a JSON answer is made in an array this size, on the
// stack.
const maxHeadBytes = 512

// jsonEscapes holds, for each byte, what stands for it in a JSON string, or
// "" for a byte copied as it is.
var jsonEscapes = func() (t [256]string) {
	const hex = "0123456789abcdef"
	for c := range 0x20 {
		t[c] = `\u00` + string(hex[c>>4]) + string(hex[c&0xf])
	}
	t['\n'], t['\r'], t['\t'] = `\n`, `\r`, `\t`
	t['"'], t['\\'] = `\"`, `\\`
	return t
}()

// appendJSONAnswer appends an answer with the given status whose body is
// the JSON object for key, value (status 200) or msg (the error).
func appendJSONAnswer(dst []byte, o *ResponseOptions, status int, key, value []byte, msg string) []byte {
	start := len(dst)
	dst = appendJSONBody(dst, status, key, value, msg)
	n := len(dst) - start
	var headBuf [maxHeadBytes]byte
	head := appendHead(headBuf[:0], status, "application/json", n, o)
	if o.Head {
		return append(dst[:start], head...)
	}
	dst = append(dst, head...) // room for the head; the body moves up into it
	copy(dst[start+len(head):], dst[start:start+n])
	copy(dst[start:], head)
	return dst
}

// appendJSONBody appends the object described at the top of this file.
func appendJSONBody(dst []byte, status int, key, value []byte, msg string) []byte {
	dst = append(dst, '{')
	if len(key) > 0 {
		dst = appendJSONBytes(dst, `"key":`, key, `,"key_encoding":"base64"`)
		dst = append(dst, ',')
	}
	if status == 200 {
		dst = appendJSONBytes(dst, `"value":`, value, `,"encoding":"base64"`)
		dst = append(dst, ',')
	}
	dst = append(dst, `"status":`...)
	dst = appendUint(dst, uint64(status))
	if status != 200 && status != 404 {
		if !utf8.ValidString(msg) { // Redis's error replies are not bound to be UTF-8
			msg = strings.ToValidUTF8(msg, "\uFFFD")
		}
		dst = append(dst, `,"error":`...)
		dst = appendJSONString(dst, msg)
	}
	return append(dst, '}')
}

// appendJSONBytes appends a field: named (its quoted name and the colon),
// then s as a JSON string if it is UTF-8, else s in base64 followed by
// base64Field, the field that says so.
func appendJSONBytes(dst []byte, named string, s []byte, base64Field string) []byte {
	dst = append(dst, named...)
	if utf8.Valid(s) {
		return appendJSONString(dst, s)
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, s)
	dst = append(dst, '"')
	return append(dst, base64Field...)
}

// appendJSONString appends s, UTF-8, as a quoted and escaped JSON string.
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	done := 0 // s[:done] is in dst
	for i := 0; i < len(s); i++ {
		if esc := jsonEscapes[s[i]]; esc != "" {
			dst = append(dst, s[done:i]...)
			dst = append(dst, esc...)
			done = i + 1
		}
	}
	dst = append(dst, s[done:]...)
	return append(dst, '"')
}
