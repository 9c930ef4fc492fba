// Redis deployments of several servers, for the tests of the proxy's
// cluster and Sentinel backends: a Redis Cluster of primaries made with
// `redis-cli --cluster create`, and a primary with a replica watched by one
// sentinel (redis-server --sentinel). Every process is a Server of its own,
// started on a free loopback port and killed when the test ends.

package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/tidwall/resp"
)

// Cluster is a Redis Cluster of primaries, each with its replicas.
type Cluster struct {
	Nodes  []*Server
	t      testing.TB
	writer rueidis.Client // for Set, made on first use
}

// StartCluster starts primaries nodes (3 at least) and replicas replicas of
// each, joins them into a cluster that serves every slot, and waits until
// each node says it is ok and every replica has synced.
func StartCluster(t testing.TB, primaries, replicas int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli is not on PATH: run `make deps` (apt-get install redis-tools)")
	}
	c := &Cluster{t: t}
	create := []string{"--cluster", "create"}
	for range primaries * (1 + replicas) {
		s := StartWith(t, Options{Config: []string{"--cluster-enabled", "yes", "--cluster-node-timeout", "2000"}})
		c.Nodes = append(c.Nodes, s)
		create = append(create, s.Addr)
	}
	c.redisCLI(append(create, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")...)
	c.awaitOK()
	return c
}

// IsReplica reports whether s is a replica now.
func (c *Cluster) IsReplica(s *Server) bool {
	return strings.Contains(s.Do("INFO", "replication").String(), "role:slave")
}

// Failover has replica take over from its primary (CLUSTER FAILOVER: the
// primary stops taking writes until the replica has them all) and waits
// until every node agrees.
func (c *Cluster) Failover(replica *Server) {
	c.t.Helper()
	replica.Do("CLUSTER", "FAILOVER")
	deadline := time.Now().Add(20 * time.Second)
	for c.IsReplica(replica) {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s still a replica 20s after CLUSTER FAILOVER", replica.Addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.awaitOK()
}

// redisCLI runs redis-cli with args and fails the test, with its output, if
// it fails.
func (c *Cluster) redisCLI(args ...string) {
	c.t.Helper()
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		c.t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// awaitOK waits until every node says the cluster is ok, with every slot
// served, and every replica is in sync with its primary.
func (c *Cluster) awaitOK() {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		for {
			info := s.Do("CLUSTER", "INFO").String()
			if strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") &&
				(!c.IsReplica(s) || strings.Contains(s.Do("INFO", "replication").String(), "master_link_status:up")) {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("cluster node %s not ok within 20s:\n%s", s.Addr, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Do sends a command whose first argument is a key to the node serving the
// key's slot (the cluster settled: no slot of it migrating).
func (c *Cluster) Do(args ...any) resp.Value {
	c.t.Helper()
	return c.Owner(args[1].(string)).Do(args...)
}

// Set writes pairs of keys and values, each to the node serving its slot,
// in one pipeline per node.
func (c *Cluster) Set(kv ...string) {
	c.t.Helper()
	if c.writer == nil {
		w, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{c.Nodes[0].Addr}, DisableCache: true})
		if err != nil {
			c.t.Fatal(err)
		}
		c.writer = w
		c.t.Cleanup(w.Close)
	}
	cmds := make(rueidis.Commands, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		cmds = append(cmds, c.writer.B().Set().Key(kv[i]).Value(kv[i+1]).Build())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range c.writer.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			c.t.Fatalf("cluster SET: %v", err)
		}
	}
}

// Owner is the node serving key's slot.
func (c *Cluster) Owner(key string) *Server {
	c.t.Helper()
	slot := c.Nodes[0].Do("CLUSTER", "KEYSLOT", key).Integer()
	for _, r := range c.Nodes[0].Do("CLUSTER", "SLOTS").Array() {
		if part := r.Array(); slot >= part[0].Integer() && slot <= part[1].Integer() {
			port := part[2].Array()[1].Integer()
			for _, s := range c.Nodes {
				if s.Port == port {
					return s
				}
			}
		}
	}
	c.t.Fatalf("no node serves the slot of %q", key)
	return nil
}

// Reshard moves slots slots from one node to another with redis-cli, keys
// and all, while the cluster serves.
func (c *Cluster) Reshard(from, to *Server, slots int) {
	c.t.Helper()
	c.redisCLI("--cluster", "reshard", from.Addr, "--cluster-from", from.Do("CLUSTER", "MYID").String(),
		"--cluster-to", to.Do("CLUSTER", "MYID").String(), "--cluster-slots", strconv.Itoa(slots), "--cluster-yes")
	c.awaitOK()
}

// Sentinel is a primary and its replica, watched by one sentinel under the
// name Master.
type Sentinel struct {
	Primary, Replica, Sentinel *Server
	Master                     string
	t                          testing.TB
}

// StartSentinel starts a primary, a replica of it and a sentinel, and waits
// until the sentinel knows the replica (so that it can fail over to it).
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	primary := Start(t)
	replica := StartWith(t, Options{Config: []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port)}})
	port := FreePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor proxied 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds proxied 1000\nsentinel failover-timeout proxied 5000\n",
		port, dir, filepath.Join(dir, "sentinel.log"), primary.Port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	sentinel := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, t: t, dir: dir, args: []string{conf, "--sentinel"}}
	sentinel.start()
	t.Cleanup(sentinel.Stop)
	s := &Sentinel{Primary: primary, Replica: replica, Sentinel: sentinel, Master: "proxied", t: t}
	s.await("the sentinel to know the replica", func() bool {
		return len(sentinel.Do("SENTINEL", "REPLICAS", s.Master).Array()) > 0 &&
			strings.Contains(replica.Do("INFO", "replication").String(), "master_link_status:up")
	})
	return s
}

// Failover has the sentinel promote the replica, and waits until the
// sentinel names it and it serves as the primary. Primary and Replica are
// swapped.
func (s *Sentinel) Failover() {
	s.t.Helper()
	s.Sentinel.Do("SENTINEL", "FAILOVER", s.Master)
	s.Primary, s.Replica = s.Replica, s.Primary
	s.await("the failover", func() bool {
		addr := s.Sentinel.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.Master).Array()
		return len(addr) == 2 && addr[1].Integer() == s.Primary.Port &&
			strings.Contains(s.Primary.Do("INFO", "replication").String(), "role:master")
	})
}

func (s *Sentinel) await(what string, ok func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Sentinel.dir, "sentinel.log"))
			s.t.Fatalf("waited 30s for %s; the sentinel's log:\n%s", what, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
