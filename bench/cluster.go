// The proxy in front of a Redis Cluster against the same proxy in front of
// one redis-server: hits (which never reach Redis) and all misses (each GET,
// and its PTTL, to the primary serving the key's slot). The cluster is three
// primaries on this machine, so its misses also pay for three servers
// sharing the CPUs with the proxy and the load generator. The four proxies
// take turns run after run.

package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

type clusterRow struct {
	name    string
	p1, p16 result
}

func clusterCost(lb *lab, single *target, s settings) []clusterRow {
	nodes := lb.startCluster(3)
	loadCluster(nodes, keys, valueSize)
	variants := []struct {
		name, redis string
		backend     *target
		flags       []string
	}{
		{"hits, one redis-server", single.addr, single, []string{"--ttl", "1h", "--capacity", "100000"}},
		{"hits, 3-primary cluster", nodes[0].addr, nodes[0], []string{"--ttl", "1h", "--capacity", "100000"}},
		{"all misses, one redis-server", single.addr, single, []string{"--capacity", "0"}},
		{"all misses, 3-primary cluster", nodes[0].addr, nodes[0], []string{"--capacity", "0"}},
	}
	targets := make([]*target, len(variants))
	rows := make([]clusterRow, len(variants))
	for i, v := range variants {
		targets[i] = lb.startProxy("redis-proxy ("+v.name+")", *proxyBin, v.redis, v.flags...)
		targets[i].backend = v.backend // the cluster's nodes chain to each other: all three count
		rows[i].name = v.name
		pipe(targets[i].addr, keys, getCommand) // caches them all, or checks the misses answer
	}
	for i, r := range takingTurns(targets, s) {
		rows[i].p1, rows[i].p16 = r[0], r[1]
		progress("cluster %-32s -P 1 %s, -P 16 %s", rows[i].name, r[0], r[1])
	}
	for _, t := range append(targets, nodes...) {
		lb.stop(t)
	}
	return rows
}

// startCluster starts n redis-servers with cluster support and joins them
// into one cluster serving every slot. Each node's backend is the next, so
// that a proxy's CPU count includes them all.
func (lb *lab) startCluster(n int) []*target {
	nodes := make([]*target, n)
	create := []string{"redis-cli", "--cluster", "create"}
	for i := range nodes {
		addr := freeAddr()
		_, port, _ := net.SplitHostPort(addr)
		nodes[i] = lb.start(fmt.Sprint("cluster node ", i), addr, "redis-server", "--port", port, "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", lb.dir,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+port+".conf")
		create = append(create, addr)
		if i > 0 {
			nodes[i-1].backend = nodes[i]
		}
	}
	if out, err := run(time.Minute, append(create, "--cluster-yes")...); err != nil {
		fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, node := range nodes {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if strings.Contains(dial(node.addr).do("CLUSTER", "INFO"), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				fatalf("cluster node %s not ok within 20s", node.addr)
			}
		}
	}
	return nodes
}

// loadCluster writes the benchmark's keys into the cluster, each to the
// node serving its slot.
func loadCluster(nodes []*target, keys, valueSize int) {
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{nodes[0].addr}, DisableCache: true})
	if err != nil {
		fatalf("connecting to the cluster: %v", err)
	}
	defer rc.Close()
	value := strings.Repeat("v", valueSize)
	for start := 0; start < keys; start += 1000 {
		cmds := make(rueidis.Commands, 0, 1000)
		for i := start; i < min(start+1000, keys); i++ {
			cmds = append(cmds, rc.B().Set().Key(benchKey(i)).Value(value).Build())
		}
		for _, r := range rc.DoMulti(context.Background(), cmds...) {
			if err := r.Error(); err != nil {
				fatalf("loading the cluster: %v", err)
			}
		}
	}
}

func (rep *report) clusterMarkdown(w func(string, ...any)) {
	if len(rep.cluster) == 0 {
		return
	}
	w("\n### Behind a Redis Cluster\n\n")
	w("The proxy in front of one redis-server and in front of a 3-primary cluster on this machine (`--redis <a node>`, found to be a cluster by itself), same keys, taking turns run after run; redis-benchmark -t get -c 50, server CPU per request (the proxy and every Redis server behind it). The ratio is to the same proxy in front of one redis-server.\n\n")
	w("| variant | -P 1 req/s | CPU µs/req | / one server | -P 16 req/s | CPU µs/req | / one server |\n|---|---|---|---|---|---|---|\n")
	for i, r := range rep.cluster {
		base := rep.cluster[i&^1] // the one-server row of the pair
		w("| %s | %s | %s | %s | %s | %s | %s |\n", r.name,
			cell(r.p1, r.p1.err == ""), cpuCell(r.p1, r.p1.err == ""), ratio(r.p1, r.p1.err == "", base.p1, base.p1.err == ""),
			cell(r.p16, r.p16.err == ""), cpuCell(r.p16, r.p16.err == ""), ratio(r.p16, r.p16.err == "", base.p16, base.p16.err == ""))
	}
}
