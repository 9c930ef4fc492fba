// Invalidation: Redis tells the proxy which keys changed, so that the TTL is
// only a backstop.
//
// A tracker holds a dedicated RESP3 connection to every node writes can
// reach (the one server; the primary Sentinel names; every primary of a
// cluster), on which it turns on CLIENT TRACKING in BCAST mode: Redis then pushes the name of every key
// written (optionally only keys under the given prefixes) to this connection,
// and the tracker hands each batch to OnInvalidate. BCAST rather than the
// default mode because the proxy reads on other connections than the one
// that would be tracked, and because BCAST costs Redis no memory per key
// read: it keeps only the prefix table, and pays for it with one message per
// write (to every BCAST client), which is why --track-prefix exists.
//
// Every second it compares the nodes it follows with the client's (a
// failover, a node added): it starts following a new node and lets go of one
// no longer there. rueidis lists a cluster's replicas too: a replica's
// tracker asks ROLE each second and turns tracking on only once it is a
// primary (and a primary's, likewise, turns it off once demoted), because a replica reports every replicated write a second time
// and a full resync from its primary as a flush, which would empty the
// cache. A node rueidis has replaced the connection to (same address) is
// followed again on a fresh one.
//
// A null invalidation means FLUSHALL/FLUSHDB: everything goes (OnFlush).
// rueidis also calls the hook with null when the connection drops; the
// tracker tells the two apart by its error channel, which is fed first on a
// drop. While the connection is down, cached keys keep being served (the TTL
// bounds their staleness); once tracking is back on (on any node), OnResync tells the cache
// that invalidations may have been lost in between (the proxy then fetches
// each key again before serving it as fresh). A Redis without
// tracking (before 6), or an ACL user not allowed to turn it on, answers
// CLIENT TRACKING with an error: the tracker logs it once, through
// OnUnsupported, and the proxy runs on TTLs alone. The connection is dialled
// as the fetches' are (TLS, credentials); a dial whose credentials Redis
// refuses (WRONGPASS) is tried again with the backoff of a drop, as one
// that cannot reach Redis is, since the ACL may change while the proxy runs.

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
	OnResync      func(node string)   // tracking is (back) on at node: invalidations may have been lost
	OnDrop        func(err error)     // if set: a working tracking connection dropped (tracking reconnects)
	OnUnsupported func(err error)     // Redis refused CLIENT TRACKING
}

type tracker struct {
	Tracking
	nodes       func() (map[string]rueidis.Client, bool) // the nodes to track; whether only primaries
	timeout     time.Duration
	unsupported atomic.Bool // a node refused tracking
	mu          sync.Mutex
	following   map[string]*nodeTracker // by address
	quit        chan struct{}
	done        sync.WaitGroup
}

// nodeTracker keeps tracking on over a connection to one node.
type nodeTracker struct {
	addr          string
	node          rueidis.Client
	primariesOnly bool          // a cluster's node: track it only while it is a primary
	active        atomic.Bool   // tracking is on right now
	replica       atomic.Bool   // the node said it is a cluster replica, last time it was asked
	quit          chan struct{} // closed when the node is let go of
}

// How a tracking connection ended.
type trackEnd int

const (
	trackRetry       trackEnd = iota // dropped or failed: try again after a backoff
	trackUnsupported                 // Redis refused CLIENT TRACKING: give up
	trackReplica                     // a cluster replica: ask again in a while
	trackReplaced                    // rueidis closed the connection for a new one
)

// nodesCheck is how often the tracker compares its nodes with the client's.
const nodesCheck = time.Second

func startTracker(nodes func() (map[string]rueidis.Client, bool), cfg Tracking, timeout time.Duration) *tracker {
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
			t.follow(nil, false)
			return
		case <-time.After(nodesCheck):
		}
	}
}

// follow starts a nodeTracker for each node not followed yet and stops
// those of nodes no longer there.
func (t *tracker) follow(nodes map[string]rueidis.Client, primariesOnly bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, n := range t.following {
		if _, ok := nodes[addr]; !ok {
			close(n.quit)
			delete(t.following, addr)
		}
	}
	for addr, node := range nodes {
		if _, ok := t.following[addr]; !ok {
			n := &nodeTracker{addr: addr, node: node, primariesOnly: primariesOnly, quit: make(chan struct{})}
			t.following[addr] = n
			t.done.Add(1)
			go t.keep(n)
		}
	}
}

// on reports whether tracking is on at every node the client has now (and
// there is one), bar those last known to be cluster replicas.
func (t *tracker) on() bool {
	nodes, _ := t.nodes()
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr := range nodes {
		if n, ok := t.following[addr]; !ok || !n.active.Load() && !n.replica.Load() {
			return false
		}
	}
	return len(nodes) > 0
}

// forget stops following n, if it is still the tracker for its address, so
// that the next look at the nodes follows the address afresh.
func (t *tracker) forget(n *nodeTracker) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.following[n.addr] == n {
		delete(t.following, n.addr)
	}
}

// keep keeps a tracking connection to one node up, reconnecting with backoff.
func (t *tracker) keep(n *nodeTracker) {
	defer t.done.Done()
	backoff := 50 * time.Millisecond
	for {
		began := time.Now()
		end, err := t.track(n)
		switch end {
		case trackUnsupported:
			if !t.unsupported.Swap(true) {
				t.OnUnsupported(err)
			}
			return
		case trackReplaced:
			t.forget(n)
			return
		}
		wait := backoff
		if end == trackReplica {
			wait = nodesCheck
		}
		select {
		case <-n.quit:
			return
		case <-time.After(wait):
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

// track turns tracking on over a dedicated connection and serves it until
// the connection drops (or the tracker stops). It returns the error that
// ended it, nil after a drop of a working connection.
func (t *tracker) track(n *nodeTracker) (end trackEnd, err error) {
	dc, release := n.node.Dedicate()
	defer func() {
		// Not back to the pool, which would first send CLIENT TRACKING OFF
		// and wait for it, on a connection that may hang.
		dc.Close()
		release()
	}()
	if n.primariesOnly {
		isReplica, err := replica(dc, t.timeout)
		if err == nil {
			n.replica.Store(isReplica)
		}
		if err != nil || isReplica {
			return ended(err, isReplica), err
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
			case <-n.quit:
			default:
				if n.primariesOnly {
					// A cluster primary demoted since tracking began
					// flushes on a full resync from its new primary
					// too: fetch each key again rather than drop all.
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

	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	args := []string{"ON", "BCAST"}
	for _, p := range t.Prefixes {
		args = append(args, "PREFIX", p)
	}
	err = dc.Do(ctx, dc.B().Arbitrary("CLIENT", "TRACKING").Args(args...).Build()).Error()
	cancel()
	if re, isReply := rueidis.IsRedisErr(err); isReply && trackingRefused(re.Error()) {
		return trackUnsupported, err
	}
	if err != nil {
		return ended(err, false), err
	}
	// Invalidations may have been missed while there was no tracking.
	t.OnResync(n.addr)
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
			return trackRetry, nil
		case <-n.quit:
			return trackRetry, nil
		case <-roleCheck:
			if isReplica, err := replica(dc, t.timeout); err == nil && isReplica {
				n.replica.Store(true)
				return trackReplica, nil
			}
		}
	}
}

// replica asks a cluster node whether it is a replica. A user not allowed
// ROLE gets it taken for a primary (tracked, as before replicas were told
// apart).
func replica(dc rueidis.DedicatedClient, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	role, err := dc.Do(ctx, dc.B().Role().Build()).ToArray()
	if _, isReply := rueidis.IsRedisErr(err); isReply {
		return false, nil
	}
	if err != nil || len(role) == 0 {
		return false, err
	}
	kind, _ := role[0].ToString()
	return kind == "slave", nil
}

// ended says what a tracking attempt that did not get tracking on ends in.
func ended(err error, isReplica bool) trackEnd {
	switch {
	case errors.Is(err, rueidis.ErrClosing):
		return trackReplaced
	case isReplica:
		return trackReplica
	}
	return trackRetry
}

// trackingRefused reports whether Redis's reply to CLIENT TRACKING means it
// will not track for the proxy: a Redis without it ("unknown subcommand",
// before 6) or an ACL user not allowed it. Not a transient refusal (LOADING,
// BUSY) nor a refusal of the credentials, which the ACL may lift: those are
// tried again.
func trackingRefused(reply string) bool {
	return strings.HasPrefix(reply, "NOPERM") || strings.Contains(strings.ToLower(reply), "unknown")
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
