// Command ceiling is a bare gnet responder: it speaks HTTP and RESP on one
// port, as the proxy does, with the proxy's own codecs, but answers every
// request with the same fixed 100-byte value and no cache or backend behind
// it. Its throughput is the ceiling of the event-loop approach on a machine:
// what the proxy would reach if its cache cost nothing.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/panjf2000/gnet/v2"

	"github.com/redis-proxy/redis-proxy/proto"
)

type responder struct {
	gnet.BuiltinEventEngine
	value []byte
}

type connState struct {
	protocol proto.Protocol
	cmd      proto.Command
	req      proto.Request
	out      []byte
}

func (r *responder) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	c.SetContext(&connState{})
	return nil, gnet.None
}

func (r *responder) OnTraffic(c gnet.Conn) gnet.Action {
	st := c.Context().(*connState)
	buf, _ := c.Peek(-1)
	if st.protocol == proto.Unknown {
		if st.protocol = proto.Detect(buf); st.protocol == proto.Unknown {
			return gnet.None
		}
	}
	used := 0
	for used < len(buf) {
		var n int
		var err error
		if st.protocol == proto.HTTP {
			n, err = proto.ParseRequest(buf[used:], &st.req)
			if err == nil && n > 0 {
				o := proto.ResponseOptionsFor(&st.req, []byte("Mon, 02 Jan 2006 15:04:05 GMT"))
				st.out = proto.AppendValue(st.out, &o, st.req.Key, r.value)
			}
		} else {
			n, err = proto.ParseCommand(buf[used:], &st.cmd)
			if err == nil && n > 0 && len(st.cmd.Args) > 0 {
				st.out = proto.AppendBulk(st.out, r.value)
			}
		}
		if err != nil {
			return gnet.Close
		}
		if n == 0 {
			break
		}
		used += n
	}
	if used > 0 {
		_, _ = c.Discard(used)
	}
	if len(st.out) > 0 {
		_, _ = c.Write(st.out)
		st.out = st.out[:0]
	}
	return gnet.None
}

func main() {
	listen := flag.String("listen", "127.0.0.1:6390", "host:port")
	loops := flag.Int("loops", 0, "event loops (0 = one per CPU)")
	flag.Parse()
	n := *loops
	if n <= 0 {
		n = runtime.NumCPU()
	}
	r := &responder{value: bytes.Repeat([]byte("x"), 100)}
	err := gnet.Run(r, "tcp://"+*listen, gnet.WithMulticore(true), gnet.WithNumEventLoop(n),
		gnet.WithLockOSThread(true), gnet.WithReuseAddr(true))
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
}
