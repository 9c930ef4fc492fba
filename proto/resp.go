// RESP2 request parsing, as Redis's networking.c does it.
//
// A request is either a multibulk ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or an
// inline command ("GET k\r\n", as typed into telnet), whose line is split the
// way Redis's sdssplitargs splits it: runs of blanks separate arguments,
// "double quotes" take C escapes (\n, \xHH, ...), 'single quotes' take only \'.
// Multibulk arguments alias the input; inline arguments are decoded into the
// Command's own buffer. The limits and the error texts are Redis's, so
// clients see what they already know, and after any of these errors the
// stream cannot be framed again: the caller answers and closes.

package proto

import "bytes"

// Redis's limits on a request.
const (
	MaxInlineBytes    = 64 << 10  // longest inline line (PROTO_INLINE_MAX_SIZE)
	MaxBulkBytes      = 512 << 20 // longest argument (proto-max-bulk-len)
	MaxMultibulkCount = 1 << 20   // most arguments in one command
)

// ProtocolError is a RESP framing error; its text is what Redis says after "ERR ".
type ProtocolError string

func (e ProtocolError) Error() string { return "Protocol error: " + string(e) }

// The protocol errors, worded as Redis words them.
var (
	ErrInvalidMultibulkLength = ProtocolError("invalid multibulk length")
	ErrInvalidBulkLength      = ProtocolError("invalid bulk length")
	ErrBigMultibulkCount      = ProtocolError("too big mbulk count string")
	ErrBigBulkCount           = ProtocolError("too big bulk count string")
	ErrBigInline              = ProtocolError("too big inline request")
	ErrUnbalancedQuotes       = ProtocolError("unbalanced quotes in request")
	ErrBulkNotTerminated      = ProtocolError("bulk string not terminated by CRLF")
)

// ErrExpectedDollar is returned when a multibulk element is not a bulk string.
type ErrExpectedDollar byte

func (e ErrExpectedDollar) Error() string {
	return "Protocol error: expected '$', got '" + string(rune(e)) + "'"
}

// Command is one parsed RESP request. Reuse it across calls: Args and the
// inline buffer keep their capacity.
type Command struct {
	// Args are the command name and its arguments. For a multibulk they alias
	// the parsed buffer and die with it; copy what must outlive it.
	Args [][]byte
	// Need is, after an incomplete parse, how many bytes the request needs in
	// total when that is known (a bulk string announced its length), else 0.
	// It lets a caller skip re-parsing until that much has arrived.
	Need int

	inline []byte // decoded inline arguments, which Args then alias
	spans  []span // argument bounds (in inline, or in the multibulk) before Args are cut

	// The progress of an incomplete request, which ContinueCommand picks up:
	// framed is how far the request has been read (past the multibulk's
	// count line and its complete arguments, or the inline bytes scanned
	// without finding the line's end), 0 when nothing is in progress; count
	// is the multibulk's announced argument count.
	framed int
	count  int64
}

type span struct{ start, end int }

// ParseCommand parses one command from the front of buf. It returns the
// number of bytes used, 0 when the command is incomplete, or a protocol error.
// A request without arguments (an empty line, "*0") uses bytes but leaves
// Args empty: Redis ignores it, so should the caller.
func ParseCommand(buf []byte, cmd *Command) (int, error) {
	cmd.framed = 0
	return ContinueCommand(buf, cmd)
}

// ContinueCommand is ParseCommand for a request that arrives in pieces: when
// it returns 0 (incomplete), cmd keeps how far the request was read, and the
// next call, which must be given the same bytes again followed by more,
// resumes there instead of reading them all again. That keeps the cost of a
// large request trickled in over many reads in proportion to its size. Once
// a command or an error is returned, cmd starts afresh.
func ContinueCommand(buf []byte, cmd *Command) (int, error) {
	cmd.Args = cmd.Args[:0]
	cmd.Need = 0
	if len(buf) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if buf[0] == '*' {
		n, err = parseMultibulk(buf, cmd)
	} else {
		n, err = parseInline(buf, cmd)
	}
	if n > 0 || err != nil {
		cmd.framed = 0
	}
	return n, err
}

// parseMultibulk parses "*<count>\r\n" followed by count "$<len>\r\n<bytes>\r\n",
// from where cmd.framed says an earlier call stopped.
func parseMultibulk(buf []byte, cmd *Command) (int, error) {
	pos := cmd.framed
	if pos == 0 {
		count, next, ok := readLength(buf, 1)
		if next == 0 {
			if len(buf) > MaxInlineBytes {
				return 0, ErrBigMultibulkCount
			}
			return 0, nil
		}
		if !ok || count > MaxMultibulkCount {
			return 0, ErrInvalidMultibulkLength
		}
		cmd.count, pos = count, next
		cmd.spans = cmd.spans[:0]
	}
	for int64(len(cmd.spans)) < cmd.count {
		cmd.framed = pos // the arguments before pos are complete
		if pos >= len(buf) {
			return 0, nil
		}
		if buf[pos] != '$' {
			return 0, ErrExpectedDollar(buf[pos])
		}
		size, next, ok := readLength(buf, pos+1)
		if next == 0 {
			if len(buf)-pos > MaxInlineBytes {
				return 0, ErrBigBulkCount
			}
			return 0, nil
		}
		if !ok || size < 0 || size > MaxBulkBytes {
			return 0, ErrInvalidBulkLength
		}
		end := next + int(size)
		if end+2 > len(buf) {
			cmd.Need = end + 2
			return 0, nil
		}
		if buf[end] != '\r' || buf[end+1] != '\n' {
			return 0, ErrBulkNotTerminated
		}
		cmd.spans = append(cmd.spans, span{next, end})
		pos = end + 2
	}
	for _, s := range cmd.spans {
		cmd.Args = append(cmd.Args, buf[s.start:s.end:s.end])
	}
	return pos, nil
}

// readLength reads the decimal integer that starts at buf[from] and ends at
// the next "\r\n". It returns the position after the "\r\n" (0 when no line
// end has arrived yet) and whether the digits made a valid integer.
func readLength(buf []byte, from int) (n int64, next int, ok bool) {
	cr := -1
	for i := from; i < len(buf); i++ {
		if buf[i] == '\r' {
			cr = i
			break
		}
	}
	if cr < 0 || cr+1 >= len(buf) {
		return 0, 0, false
	}
	if buf[cr+1] != '\n' {
		return 0, cr + 2, false
	}
	digits := buf[from:cr]
	neg := len(digits) > 0 && digits[0] == '-'
	if neg {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 18 {
		return 0, cr + 2, false
	}
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, cr + 2, false
		}
		n = n*10 + int64(d-'0')
	}
	if neg {
		n = -n
	}
	return n, cr + 2, true
}

// parseInline parses one line ending in "\n" (optionally "\r\n"), looking for
// the line's end from where cmd.framed says an earlier call stopped.
func parseInline(buf []byte, cmd *Command) (int, error) {
	nl := bytes.IndexByte(buf[cmd.framed:], '\n')
	if nl < 0 {
		if len(buf) > MaxInlineBytes {
			return 0, ErrBigInline
		}
		cmd.framed = len(buf)
		return 0, nil
	}
	nl += cmd.framed
	if nl > MaxInlineBytes {
		return 0, ErrBigInline
	}
	line := buf[:nl]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if err := splitArgs(line, cmd); err != nil {
		return 0, err
	}
	return nl + 1, nil
}

// splitArgs is Redis's sdssplitargs: it decodes the arguments of line into
// cmd.inline and points cmd.Args at them.
func splitArgs(line []byte, cmd *Command) error {
	cmd.inline = cmd.inline[:0]
	cmd.spans = cmd.spans[:0]
	i := 0
	for {
		for i < len(line) && isBlank(line[i]) {
			i++
		}
		if i == len(line) {
			break
		}
		start := len(cmd.inline)
		var err error
		switch line[i] {
		case '"', '\'':
			i, err = readQuoted(line, i+1, line[i], cmd)
		default:
			for i < len(line) && !isBlank(line[i]) {
				cmd.inline = append(cmd.inline, line[i])
				i++
			}
		}
		if err != nil {
			return err
		}
		cmd.spans = append(cmd.spans, span{start, len(cmd.inline)})
	}
	for _, s := range cmd.spans {
		cmd.Args = append(cmd.Args, cmd.inline[s.start:s.end:s.end])
	}
	return nil
}

// readQuoted decodes a quoted argument whose opening quote (" or ') is just
// before line[i]. In "..." the C escapes apply (\n, \xHH, \", ...); in '...'
// only \' does. The closing quote must be followed by a blank or the line end.
func readQuoted(line []byte, i int, quote byte, cmd *Command) (int, error) {
	for i < len(line) {
		c := line[i]
		switch {
		case quote == '"' && c == '\\' && i+3 < len(line) && line[i+1] == 'x' && isHex(line[i+2]) && isHex(line[i+3]):
			cmd.inline = append(cmd.inline, unhex(line[i+2])<<4|unhex(line[i+3]))
			i += 4
		case quote == '"' && c == '\\' && i+1 < len(line):
			cmd.inline = append(cmd.inline, unescape(line[i+1]))
			i += 2
		case quote == '\'' && c == '\\' && i+1 < len(line) && line[i+1] == '\'':
			cmd.inline = append(cmd.inline, '\'')
			i += 2
		case c == quote:
			if i+1 < len(line) && !isBlank(line[i+1]) {
				return 0, ErrUnbalancedQuotes
			}
			return i + 1, nil
		default:
			cmd.inline = append(cmd.inline, c)
			i++
		}
	}
	return 0, ErrUnbalancedQuotes
}

// isBlank is C's isspace, which sdssplitargs uses to separate arguments.
func isBlank(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// AppendBulk appends v as a RESP bulk string.
func AppendBulk(dst, v []byte) []byte {
	dst = AppendBulkHeader(dst, len(v))
	dst = append(dst, v...)
	return append(dst, '\r', '\n')
}

// AppendBulkString appends s as a RESP bulk string.
func AppendBulkString(dst []byte, s string) []byte {
	dst = AppendBulkHeader(dst, len(s))
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// AppendBulkHeader appends the "$<n>\r\n" that starts a bulk string of n
// bytes; the n bytes and a CRLF are to follow.
func AppendBulkHeader(dst []byte, n int) []byte {
	dst = append(dst, '$')
	dst = appendUint(dst, uint64(n))
	return append(dst, '\r', '\n')
}

// AppendNull appends a null: RESP2's null bulk string, or RESP3's null.
func AppendNull(dst []byte, resp3 bool) []byte {
	if resp3 {
		return append(dst, "_\r\n"...)
	}
	return append(dst, "$-1\r\n"...)
}

// AppendMap appends the header of a map of n pairs: a RESP3 map, or in RESP2
// the flat array of 2n elements that Redis sends instead.
func AppendMap(dst []byte, n int, resp3 bool) []byte {
	if !resp3 {
		return AppendArray(dst, 2*n)
	}
	dst = append(dst, '%')
	dst = appendUint(dst, uint64(n))
	return append(dst, '\r', '\n')
}

// AppendArray appends the header of an array of n elements.
func AppendArray(dst []byte, n int) []byte {
	dst = append(dst, '*')
	dst = appendUint(dst, uint64(n))
	return append(dst, '\r', '\n')
}

// AppendInt appends a RESP integer.
func AppendInt(dst []byte, n int64) []byte {
	dst = append(dst, ':')
	if n < 0 {
		dst = append(dst, '-')
		n = -n
	}
	dst = appendUint(dst, uint64(n))
	return append(dst, '\r', '\n')
}

// AppendSimple appends a RESP simple string such as "+OK".
func AppendSimple(dst []byte, s string) []byte {
	dst = append(dst, '+')
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

// AppendError appends a RESP error. msg starts with its code ("ERR ...",
// "WRONGTYPE ..."); any CR or LF in it is replaced by a space, since a RESP
// error is one line.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return append(dst, '\r', '\n')
}

func appendUint(dst []byte, n uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(dst, tmp[i:]...)
}
