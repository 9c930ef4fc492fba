package proto

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// parseAll parses every command in buf, as a connection would, and returns
// the arguments of each, or the first error.
func parseAll(buf []byte) ([][]string, error) {
	var cmd Command
	var out [][]string
	for len(buf) > 0 {
		n, err := ParseCommand(buf, &cmd)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, errIncomplete
		}
		if len(cmd.Args) > 0 {
			args := make([]string, len(cmd.Args))
			for i, a := range cmd.Args {
				args[i] = string(a)
			}
			out = append(out, args)
		}
		buf = buf[n:]
	}
	return out, nil
}

var errIncomplete = errors.New("incomplete")

func TestParseCommandValid(t *testing.T) {
	tests := []struct {
		in   string
		want [][]string
	}{
		{"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", [][]string{{"GET", "k"}}},
		{"*1\r\n$4\r\nPING\r\n", [][]string{{"PING"}}},
		{"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", [][]string{{"GET", ""}}},
		{"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n", [][]string{{"GET", "a\r\nb"}}},
		{"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", [][]string{{"PING"}}},
		{"GET k\r\n", [][]string{{"GET", "k"}}},
		{"GET k\n", [][]string{{"GET", "k"}}},
		{"  GET \t k  \r\n", [][]string{{"GET", "k"}}},
		{"\r\n\nPING\r\n", [][]string{{"PING"}}},
		{`GET "a b"` + "\r\n", [][]string{{"GET", "a b"}}},
		{`GET "a\"b\\c\n\x41\x4a"` + "\r\n", [][]string{{"GET", "a\"b\\c\nAJ"}}},
		{`GET 'it\'s'` + "\r\n", [][]string{{"GET", "it's"}}},
		{`GET ""` + "\r\n", [][]string{{"GET", ""}}},
		{"GET a\r\nGET b\r\n*2\r\n$3\r\nGET\r\n$1\r\nc\r\n", [][]string{{"GET", "a"}, {"GET", "b"}, {"GET", "c"}}},
	}
	for _, tt := range tests {
		got, err := parseAll([]byte(tt.in))
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseCommandMalformed(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"*x\r\n", "Protocol error: invalid multibulk length"},
		{"*1048577\r\n", "Protocol error: invalid multibulk length"},
		{"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"},
		{"*1\r\n$x\r\n", "Protocol error: invalid bulk length"},
		{"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"},
		{"*1\r\n$536870913\r\n", "Protocol error: invalid bulk length"},
		{"*1\r\n$3\r\nGETxx", "Protocol error: bulk string not terminated by CRLF"},
		{"*1\rx", "Protocol error: invalid multibulk length"},
		{"*" + strings.Repeat("1", MaxInlineBytes+1), "Protocol error: too big mbulk count string"},
		{"*1\r\n$" + strings.Repeat("1", MaxInlineBytes+1), "Protocol error: too big bulk count string"},
		{"GET " + strings.Repeat("k", MaxInlineBytes), "Protocol error: too big inline request"},
		{"GET " + strings.Repeat("k", MaxInlineBytes) + "\r\n", "Protocol error: too big inline request"},
		{`GET "abc` + "\r\n", "Protocol error: unbalanced quotes in request"},
		{`GET "abc"x` + "\r\n", "Protocol error: unbalanced quotes in request"},
		{`GET 'abc` + "\r\n", "Protocol error: unbalanced quotes in request"},
	}
	for _, tt := range tests {
		_, err := parseAll([]byte(tt.in))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%.40q: got %v, want %q", tt.in, err, tt.want)
		}
	}
}

// A command split anywhere across reads parses the same once it is whole,
// and reports incomplete (not an error) before that.
func TestParseCommandSplitAcrossReads(t *testing.T) {
	inputs := []string{
		"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n",
		"GET \"a b\"\r\n",
		"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$0\r\n\r\n",
	}
	for _, in := range inputs {
		var cmd Command
		for cut := 0; cut < len(in); cut++ {
			n, err := ParseCommand([]byte(in[:cut]), &cmd)
			if n != 0 || err != nil {
				t.Fatalf("%q cut at %d: n=%d err=%v, want incomplete", in, cut, n, err)
			}
		}
		n, err := ParseCommand([]byte(in), &cmd)
		if n != len(in) || err != nil {
			t.Fatalf("%q whole: n=%d err=%v", in, n, err)
		}
	}
}

func TestParseCommandNeed(t *testing.T) {
	var cmd Command
	in := "*2\r\n$3\r\nGET\r\n$10\r\nabc"
	n, err := ParseCommand([]byte(in), &cmd)
	if n != 0 || err != nil {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if want := len("*2\r\n$3\r\nGET\r\n$10\r\n") + 12; cmd.Need != want {
		t.Fatalf("Need = %d, want %d", cmd.Need, want)
	}
}

func TestParseCommandPipeline(t *testing.T) {
	var in bytes.Buffer
	for i := range 1000 {
		fmt.Fprintf(&in, "*2\r\n$3\r\nGET\r\n$%d\r\nkey:%d\r\n", len(fmt.Sprint("key:", i)), i)
	}
	got, err := parseAll(in.Bytes())
	if err != nil || len(got) != 1000 {
		t.Fatalf("got %d commands, err %v", len(got), err)
	}
	for i, args := range got {
		if args[1] != fmt.Sprint("key:", i) {
			t.Fatalf("command %d: %q", i, args)
		}
	}
}

func TestRESPWriters(t *testing.T) {
	var b []byte
	b = AppendBulk(b, []byte("hi"))
	b = AppendBulk(b, nil)
	b = AppendBulkString(b, "x")
	b = AppendNull(b, false)
	b = AppendNull(b, true)
	b = AppendMap(b, 1, false)
	b = AppendMap(b, 1, true)
	b = AppendArray(b, 2)
	b = AppendInt(b, -42)
	b = AppendInt(b, 0)
	b = AppendSimple(b, "OK")
	b = AppendError(b, "ERR bad\r\nthing")
	want := "$2\r\nhi\r\n$0\r\n\r\n$1\r\nx\r\n$-1\r\n_\r\n*2\r\n%1\r\n*2\r\n:-42\r\n:0\r\n+OK\r\n-ERR bad  thing\r\n"
	if string(b) != want {
		t.Fatalf("got %q\nwant %q", b, want)
	}
}

func BenchmarkParseCommandGET(b *testing.B) {
	in := []byte("*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n")
	var cmd Command
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if n, err := ParseCommand(in, &cmd); n != len(in) || err != nil {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkParseCommandInline(b *testing.B) {
	in := []byte("GET key:000000000042\r\n")
	var cmd Command
	b.ReportAllocs()
	for b.Loop() {
		if n, err := ParseCommand(in, &cmd); n != len(in) || err != nil {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkParseAnswerPipeline16 parses 16 pipelined GETs and appends a
// 100-byte bulk answer for each: the codec half of a hit pipeline.
func BenchmarkParseAnswerPipeline16(b *testing.B) {
	var in []byte
	for range 16 {
		in = append(in, "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n"...)
	}
	value := bytes.Repeat([]byte("v"), 100)
	var cmd Command
	out := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		out = out[:0]
		for buf := in; len(buf) > 0; {
			n, err := ParseCommand(buf, &cmd)
			if n == 0 || err != nil {
				b.Fatal(n, err)
			}
			out = AppendBulk(out, value)
			buf = buf[n:]
		}
	}
}
