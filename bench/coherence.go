// Coherence: how long a write in Redis stays invisible through the proxy
// (invalidation on), and what invalidation costs the hit path while Redis
// takes writes.

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

// respClient is a minimal RESP connection for the writer and the poller.
type respClient struct {
	c net.Conn
	r *bufio.Reader
}

func dial(addr string) *respClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fatalf("%v", err)
	}
	return &respClient{c, bufio.NewReader(c)}
}

// do sends one command and returns its reply line, or a bulk string's bytes.
func (rc *respClient) do(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := rc.c.Write([]byte(b.String())); err != nil {
		fatalf("%v", err)
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		fatalf("%v", err)
	}
	if line[0] != '$' || line == "$-1\r\n" {
		return strings.TrimSpace(line)
	}
	var n int
	fmt.Sscanf(line, "$%d", &n)
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(rc.r, buf); err != nil {
		fatalf("%v", err)
	}
	return string(buf[:n])
}

// staleness writes a key in Redis `writes` times and measures, each time,
// how long until the proxy answers the new value.
func staleness(redis, proxy *target, writes int) string {
	w, r := dial(redis.addr), dial(proxy.addr)
	defer w.c.Close()
	defer r.c.Close()
	var lags []time.Duration
	for i := range writes {
		want := fmt.Sprint("v", i)
		r.do("GET", "coherence") // cached (old value)
		w.do("SET", "coherence", want)
		written := time.Now()
		for r.do("GET", "coherence") != want {
			if time.Since(written) > 5*time.Second {
				return fmt.Sprintf("write %d not seen within 5 s", i)
			}
		}
		lags = append(lags, time.Since(written))
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	q := func(p float64) time.Duration { return lags[int(p*float64(len(lags)-1))] }
	return fmt.Sprintf("%d writes: a write was visible through the proxy after %v (p50), %v (p99), %v (max)",
		writes, q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), lags[len(lags)-1].Round(time.Microsecond))
}

// underWrites measures GET throughput through proxy (redis-benchmark -P 1)
// while a writer SETs the benchmark's keys in Redis at writesPerSecond.
func underWrites(redis, proxy *target, writesPerSecond, requests int) result {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w := dial(redis.addr)
		defer w.c.Close()
		tick := time.NewTicker(time.Second / time.Duration(writesPerSecond))
		defer tick.Stop()
		value := strings.Repeat("v", valueSize)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				w.do("SET", fmt.Sprintf("key:%012d", (i*7919)%keys), value)
			}
		}
	}()
	r := redisBenchmark(proxy, keys, 50, 1, requests)
	close(stop)
	wg.Wait()
	return r
}
