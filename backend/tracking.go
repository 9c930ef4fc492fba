// Invalidation: Redis tells the proxy which keys changed, so that the TTL is
// only a backstop.
//
// A tracker holds a dedicated RESP3 connection to every node writes can
// reach (the one server; the primary Sentinel names; every primary of a
// cluster), on which it turns on CLIENT TRACKING in BCAST mode: Redis then
// pushes the name of every key written (optionally only keys under the
// given prefixes) to this connection, and the tracker hands each batch to
// OnInvalidate. BCAST rather than the default mode because the proxy reads
// on other connections than the one that would be tracked, and because
// BCAST costs Redis no memory per key read: it keeps only the prefix table,
// and pays for it with one message per write (to every BCAST client), which
// is why --track-prefix exists.
//
// Every second the tracker compares the nodes it follows with the client's
// (a failover, a node added): it starts following a new node and lets go of
// one no longer there; and each connection it (re)opens is to the client's
// current connection for the address, so that one rueidis replaced is not
// held on to. rueidis lists a cluster's replicas too: a replica's tracker
// asks ROLE each second and turns tracking on only once the node is a
// primary (and a primary's turns it off once the node is demoted), because
// a replica reports every replicated write a second time, and a full resync
// from its primary as a flush.
//
// A null invalidation means FLUSHALL/FLUSHDB: with one server everything
// goes (OnFlush). From a cluster's or Sentinel's node it may also be a
// demoted primary resyncing, so each key is fetched again instead
// (OnResync). rueidis also calls the hook with null when the connection
// drops; the tracker tells the two apart by its error channel, which is fed
// first on a drop. While a connection is down, cached keys keep being served
// (the TTL bounds their staleness); once tracking is back on (at any node),
// OnResync tells the cache that invalidations may have been lost in between
// (the proxy then fetches each key again before serving it as fresh).
//
// A Redis without tracking (before 6), an ACL user not allowed to turn it
// on, or prefixes Redis will not take answer CLIENT TRACKING with an error:
// the tracker logs it once, through OnUnsupported, and the proxy runs on
// TTLs alone. The connection is dialled as the fetches' are (TLS,
// credentials); a dial whose credentials Redis refuses (WRONGPASS), and a
// node busy loading its data, are tried again with the backoff of a drop, as
// one that cannot reach Redis is, since the ACL may change while the proxy
// runs.

package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Tracking configures invalidation.
type Tracking struct {
	Prefixes      []string            // BCAST prefixes; none: every key
	OnInvalidate  func(keys []string) // these keys changed in Redis
	OnFlush       func()              // everything was deleted (FLUSHALL, FLUSHDB)
	OnResync      func(node string)   // tracking is (back) on at node, or node flushed: invalidations may have been lost
	OnDrop        func(err error)     // if set: a working tracking connection dropped (tracking reconnects)
	OnUnsupported func(err error)     // Redis refused CLIENT TRACKING
}

type tracker struct {
	Tracking
	nodes       func() (map[string]rueidis.Client, rueidis.ClientMode) // the nodes to track, and what they are
	timeout     time.Duration
	unsupported atomic.Bool // a node refused tracking
	mu          sync.Mutex
	following   map[string]*nodeTracker // by address
	quit        chan struct{}
	done        sync.WaitGroup
}

// nodeTracker keeps tracking on over a connection to one node.
type nodeTracker struct {
	addr            string
	primariesOnly   bool               // a cluster's node: track it only while it is a primary
	nullMeansResync bool               // not a single server: a null invalidation may be a resync
	active          atomic.Bool        // tracking is on right now
	replica         atomic.Bool        // the node said it is a cluster replica, last time it was asked
	reached         atomic.Bool        // the node has answered ROLE or turned tracking on
	unreachable     atomic.Bool        // never reached, and a try has failed
	ctx             context.Context    // done when the node is let go of
	cancel          context.CancelFunc // lets go of it
}

// nodesCheck is how often the tracker compares its nodes with the client's,
// and asks a cluster node its role.
const nodesCheck = time.Second

func startTracker(nodes func() (map[string]rueidis.Client, rueidis.ClientMode), cfg Tracking, timeout time.Duration) *tracker {
	t := &tracker{Tracking: cfg, nodes: nodes, timeout: timeout,
		following: make(map[string]*nodeTracker), quit: make(chan struct{})}
	t.done.Add(1)
	go t.run()
	return t
}

func (t *tracker) stop() {
	close(t.quit)
	t.done.Wait()
}

// run follows the client's nodes until the tracker stops.
func (t *tracker) run() {
	defer t.done.Done()
	for {
		t.follow(t.nodes())
		select {
		case <-t.quit:
			t.follow(nil, rueidis.ClientModeStandalone)
			return
		case <-time.After(nodesCheck):
		}
	}
}

// follow starts a nodeTracker for each node not followed yet and stops
// those of nodes no longer there.
func (t *tracker) follow(nodes map[string]rueidis.Client, mode rueidis.ClientMode) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, n := range t.following {
		if _, ok := nodes[addr]; !ok {
			n.cancel()
			delete(t.following, addr)
		}
	}
	for addr := range nodes {
		if _, ok := t.following[addr]; !ok {
			n := &nodeTracker{addr: addr, primariesOnly: mode == rueidis.ClientModeCluster,
				nullMeansResync: mode != rueidis.ClientModeStandalone}
			n.ctx, n.cancel = context.WithCancel(context.Background())
			t.following[addr] = n
			t.done.Add(1)
			go t.keep(n)
		}
	}
}

// on reports whether tracking is on at every node the client has now (and
// there is one), bar those that need none: cluster nodes last known to be
// replicas, and cluster nodes never reached. A replica the cluster has not
// yet marked failed would otherwise hold every proxy unready, which a load
// balancer takes for the whole tier being down; a primary never reached has
// had nothing read from it, and once it answers, tracking turning on there
// revalidates the cache (OnResync).
func (t *tracker) on() bool {
	nodes, _ := t.nodes()
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr := range nodes {
		if n, ok := t.following[addr]; !ok || !n.settled() {
			return false
		}
	}
	return len(nodes) > 0
}

// settled reports whether n keeps tracking from being on everywhere no
// longer: it is on, or n's node needs none (on).
func (n *nodeTracker) settled() bool {
	return n.active.Load() || n.primariesOnly && (n.replica.Load() || n.unreachable.Load())
}

// keep keeps a tracking connection to one node up, reconnecting with backoff.
func (t *tracker) keep(n *nodeTracker) {
	defer t.done.Done()
	backoff := 50 * time.Millisecond
	for {
		began := time.Now()
		unsupported, err := false, error(nil)
		if node, ok := t.current(n.addr); ok {
			unsupported, err = t.track(n, node)
		}
		if unsupported {
			if !t.unsupported.Swap(true) {
				t.OnUnsupported(err)
			}
			return
		}
		if _, isReply := rueidis.IsRedisErr(err); isReply {
			n.reachedNow() // it answered, if only to refuse
		} else if err != nil && !n.reached.Load() {
			n.unreachable.Store(true)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		// Tracking was up for a while until the drop: start quick again.
		// Not after a connection that died at once (a middlebox that cuts
		// it): that would log on/lost pairs many times a second.
		if err == nil && time.Since(began) >= time.Second {
			backoff = 50 * time.Millisecond
		}
	}
}

// current is the client's connection to addr now.
func (t *tracker) current(addr string) (rueidis.Client, bool) {
	nodes, _ := t.nodes()
	node, ok := nodes[addr]
	return node, ok
}

// track turns tracking on over a dedicated connection to node (once it is a
// primary, for a cluster's) and serves it until the connection drops, the
// node is demoted or let go of. It returns the error that ended it, nil
// after a drop of a working connection or a demotion, and whether Redis
// refused tracking for good.
func (t *tracker) track(n *nodeTracker, node rueidis.Client) (unsupported bool, err error) {
	dc, release := node.Dedicate()
	defer func() {
		// Not back to the pool, which would first send CLIENT TRACKING OFF
		// and wait for it, on a connection that may hang.
		dc.Close()
		release()
	}()
	if n.primariesOnly {
		if err := t.awaitPrimary(n, dc); err != nil {
			return false, err
		}
	}
	var errs <-chan error
	var mu sync.Mutex // orders the hook's reads of errs after its assignment
	mu.Lock()
	errs = dc.SetOnInvalidations(func(msgs []rueidis.RedisMessage) {
		if msgs == nil {
			mu.Lock()
			ch := errs
			mu.Unlock()
			select {
			case <-ch: // the connection dropped: keep() will resync
			case <-n.ctx.Done():
			default:
				if n.nullMeansResync {
					t.OnResync(n.addr)
				} else {
					t.OnFlush() // FLUSHALL / FLUSHDB
				}
			}
			return
		}
		keys := make([]string, 0, len(msgs))
		for _, m := range msgs {
			if k, err := m.ToString(); err == nil {
				keys = append(keys, k)
			}
		}
		t.OnInvalidate(keys)
	})
	mu.Unlock()

	ctx, cancel := context.WithTimeout(n.ctx, t.timeout)
	args := []string{"ON", "BCAST"}
	for _, p := range t.Prefixes {
		args = append(args, "PREFIX", p)
	}
	err = dc.Do(ctx, dc.B().Arbitrary("CLIENT", "TRACKING").Args(args...).Build()).Error()
	cancel()
	if re, isReply := rueidis.IsRedisErr(err); isReply && !transient(re.Error()) {
		return true, err
	}
	if err != nil {
		return false, err
	}
	// Invalidations may have been missed while there was no tracking.
	t.OnResync(n.addr)
	n.reachedNow()
	n.active.Store(true)
	defer n.active.Store(false)
	var roleCheck <-chan time.Time // a cluster primary may be demoted
	if n.primariesOnly {
		tick := time.NewTicker(nodesCheck)
		defer tick.Stop()
		roleCheck = tick.C
	}
	for {
		select {
		case err := <-errs:
			if err == nil { // the invalidation hook took the error first
				err = errors.New("tracking connection closed")
			}
			if t.OnDrop != nil {
				t.OnDrop(fmt.Errorf("%s: %w", n.addr, err))
			}
			return false, nil
		case <-n.ctx.Done():
			return false, nil
		case <-roleCheck:
			if isReplica, err := t.role(n, dc); err == nil && isReplica {
				return false, nil
			}
		}
	}
}

// awaitPrimary asks a cluster node its role each second, on the connection
// tracking will use, until it is a primary.
func (t *tracker) awaitPrimary(n *nodeTracker, dc rueidis.DedicatedClient) error {
	for {
		isReplica, err := t.role(n, dc)
		if err != nil || !isReplica {
			return err
		}
		select {
		case <-n.ctx.Done():
			return n.ctx.Err()
		case <-time.After(nodesCheck):
		}
	}
}

// role asks a cluster node whether it is a replica, and records the answer.
// A user not allowed ROLE gets the node taken for a primary (tracked, as
// before replicas were told apart).
func (t *tracker) role(n *nodeTracker, dc rueidis.DedicatedClient) (isReplica bool, err error) {
	ctx, cancel := context.WithTimeout(n.ctx, t.timeout)
	defer cancel()
	role, err := dc.Do(ctx, dc.B().Role().Build()).ToArray()
	if _, isReply := rueidis.IsRedisErr(err); isReply {
		n.reachedNow()
		return false, nil
	}
	if err != nil || len(role) == 0 {
		return false, err
	}
	kind, _ := role[0].ToString()
	isReplica = kind == "slave" || kind == "replica"
	n.replica.Store(isReplica)
	n.reachedNow()
	return isReplica, nil
}

// reachedNow records that n's node has answered.
func (n *nodeTracker) reachedNow() {
	n.reached.Store(true)
	n.unreachable.Store(false)
}

// transient reports whether Redis's refusal of CLIENT TRACKING may pass: a
// refusal of the credentials (the ACL may change), a node still loading its
// data or busy with a script, a replica cut off from its primary. Any other
// (no tracking before Redis 6, an ACL user not allowed it, prefixes that
// overlap) stands: tracking is given up, and logged once.
func transient(reply string) bool {
	code, _, _ := strings.Cut(reply, " ")
	switch code {
	case "NOAUTH", "WRONGPASS", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN":
		return true
	}
	return false
}

// TrackingState says whether invalidation is working: "on", "off" (not
// configured), "reconnecting", or "unsupported" (Redis refused tracking).
func (c *Client) TrackingState() string {
	switch t := c.tracker; {
	case t == nil:
		return "off"
	case t.unsupported.Load():
		return "unsupported"
	case t.on():
		return "on"
	}
	return "reconnecting"
}
