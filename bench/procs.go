// Starting and stopping what the benchmarks measure: a redis-server with its
// keys loaded, redis-proxy in front of it (all-hit and all-miss), the peers
// (twemproxy, webdis) where they are installed, and the bare gnet ceiling.

package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// target is something listening that a load generator can drive.
type target struct {
	name    string
	addr    string // host:port
	cmd     *exec.Cmd
	backend *target // the redis-server it fronts, whose CPU it costs too; nil for none
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times
// (100 on every Linux ABI).
const clockTicks = 100

// cpuTicks returns the CPU time (utime+stime, in clockTicks) that t and its
// backend have used so far, or -1 if it cannot be read.
func (t *target) cpuTicks() int64 {
	var total int64
	for p := t; p != nil; p = p.backend {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			return -1
		}
		// The fields after the parenthesised command name: utime and stime
		// are the 14th and 15th of the line.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 13 {
			return -1
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		total += utime + stime
	}
	return total
}

func (t *target) port() string { _, p, _ := net.SplitHostPort(t.addr); return p }

type lab struct {
	dir     string
	targets []*target
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs a command (its output to a log file) and waits until addr
// accepts connections.
func (lb *lab) start(name, addr string, argv ...string) *target {
	log, err := os.Create(filepath.Join(lb.dir, strings.ReplaceAll(name, " ", "-")+".log"))
	if err != nil {
		fatalf("%v", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		fatalf("starting %s: %v", name, err)
	}
	t := &target{name: name, addr: addr, cmd: cmd}
	lb.targets = append(lb.targets, t)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return t
		}
		if time.Now().After(deadline) {
			fatalf("%s did not listen on %s within 10s (log: %s)", name, addr, log.Name())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills t and forgets it.
func (lb *lab) stop(t *target) {
	_ = t.cmd.Process.Kill()
	_ = t.cmd.Wait()
	for i, u := range lb.targets {
		if u == t {
			lb.targets = append(lb.targets[:i], lb.targets[i+1:]...)
			break
		}
	}
}

func (lb *lab) stopAll() {
	for _, t := range lb.targets {
		_ = t.cmd.Process.Kill()
		_ = t.cmd.Wait()
	}
	lb.targets = nil
}

func (lb *lab) startRedis() *target {
	addr := freeAddr()
	_, port, _ := net.SplitHostPort(addr)
	return lb.start("redis-server", addr, "redis-server", "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", lb.dir)
}

// load writes the benchmark's keys into Redis: key:000000000000 ... (the
// names redis-benchmark's -r makes) with valueSize-byte values, then reads
// every one through each proxy given, so that their caches hold them all.
func load(redis *target, keys, valueSize int, warm ...*target) {
	value := strings.Repeat("v", valueSize)
	pipe(redis.addr, keys, func(i int) string { return setCommand(i, value) })
	for _, t := range warm {
		pipe(t.addr, keys, getCommand)
	}
}

// benchKey is the i-th key, as redis-benchmark -r names it: 16 bytes.
func benchKey(i int) string { return fmt.Sprintf("key:%012d", i) }

func setCommand(i int, value string) string {
	k := benchKey(i)
	return fmt.Sprintf("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(k), k, len(value), value)
}

func getCommand(i int) string {
	k := benchKey(i)
	return fmt.Sprintf("*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(k), k)
}

// pipe sends n commands to addr and reads n replies (each one line, or a
// bulk string), in batches.
func pipe(addr string, n int, command func(i int) string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fatalf("%v", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	const batch = 1000
	for start := 0; start < n; start += batch {
		var b strings.Builder
		end := min(start+batch, n)
		for i := start; i < end; i++ {
			b.WriteString(command(i))
		}
		if _, err := c.Write([]byte(b.String())); err != nil {
			fatalf("%v", err)
		}
		if err := readReplies(r, end-start); err != nil {
			fatalf("loading %s: %v", addr, err)
		}
	}
}

// readReplies reads n replies, each one line or a bulk string; an error
// reply is an error.
func readReplies(r *bufio.Reader, n int) error {
	for range n {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line[0] == '-' {
			return fmt.Errorf("%q", strings.TrimSpace(line))
		}
		if line[0] == '$' {
			size, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
			if _, err := r.Discard(max(size, 0) + 2*boolInt(size >= 0)); err != nil {
				return err
			}
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (lb *lab) startProxy(name, bin, redis string, flags ...string) *target {
	addr := freeAddr()
	argv := append([]string{bin, "--listen", addr, "--redis", redis, "--log-level", "warn", "--admin-listen", ""}, flags...)
	return lb.start(name, addr, argv...)
}

// startTwemproxy runs nutcracker with one pool in front of redis, or returns
// nil if it is not installed.
func (lb *lab) startTwemproxy(redis string) *target {
	bin := lookPath("nutcracker")
	if bin == "" {
		return nil
	}
	addr := freeAddr()
	conf := filepath.Join(lb.dir, "nutcracker.yml")
	yml := fmt.Sprintf("bench:\n  listen: %s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n"+
		"  auto_eject_hosts: false\n  servers:\n    - %s:1\n", addr, redis)
	if err := os.WriteFile(conf, []byte(yml), 0o644); err != nil {
		fatalf("%v", err)
	}
	_, statsPort, _ := net.SplitHostPort(freeAddr())
	return lb.start("twemproxy", addr, bin, "-c", conf, "-s", statsPort, "-a", "127.0.0.1",
		"-p", filepath.Join(lb.dir, "nutcracker.pid"), "-o", filepath.Join(lb.dir, "nutcracker.out"))
}

// startWebdis runs webdis in front of redis, or returns nil if it is not
// installed.
func (lb *lab) startWebdis(redis string) *target {
	bin := lookPath("webdis")
	if bin == "" {
		return nil
	}
	addr := freeAddr()
	host, port, _ := net.SplitHostPort(addr)
	rhost, rport, _ := net.SplitHostPort(redis)
	conf := filepath.Join(lb.dir, "webdis.json")
	js := fmt.Sprintf(`{"redis_host": %q, "redis_port": %s, "http_host": %q, "http_port": %s, "threads": %d,
"pool_size": 20, "daemonize": false, "database": 0, "verbosity": 0, "logfile": %q}`,
		rhost, rport, host, port, 2, filepath.Join(lb.dir, "webdis.out"))
	if err := os.WriteFile(conf, []byte(js), 0o644); err != nil {
		fatalf("%v", err)
	}
	return lb.start("webdis", addr, bin, conf)
}

// lookPath finds a program on PATH or in the sbin directories Debian puts
// some daemons in; "" if it is nowhere.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}
