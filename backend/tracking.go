// Invalidation: Redis tells the proxy which keys changed, so that the TTL is
// only a backstop.
//
// A tracker holds a dedicated RESP3 connection to every node writes can
// reach (the one server; the primary Sentinel names; every node of a
// cluster, replicas included, so that a promoted replica is covered before
// it is promoted), on which it turns on CLIENT TRACKING in BCAST mode: Redis then pushes the name of every key
// written (optionally only keys under the given prefixes) to this connection,
// and the tracker hands each batch to OnInvalidate. BCAST rather than the
// default mode because the proxy reads on other connections than the one
// that would be tracked, and because BCAST costs Redis no memory per key
// read: it keeps only the prefix table, and pays for it with one message per
// write (to every BCAST client), which is why --track-prefix exists.
//
// Every second it compares the nodes it follows with the client's (a
// failover, a node added): it starts following a new node and lets go of one
// no longer there.
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
	OnResync      func()              // tracking is (back) on: invalidations may have been lost
	OnDrop        func(err error)     // if set: a working tracking connection dropped (tracking reconnects)
	OnUnsupported func(err error)     // Redis refused CLIENT TRACKING
}

type tracker struct {
	Tracking
	nodes       func() map[string]rueidis.Client // the nodes to track
	timeout     time.Duration
	unsupported atomic.Bool // a node refused tracking
	mu          sync.Mutex
	following   map[string]*nodeTracker // by address
	quit        chan struct{}
	done        sync.WaitGroup
}

// nodeTracker keeps tracking on over a connection to one node.
type nodeTracker struct {
	addr   string
	node   rueidis.Client
	active atomic.Bool   // tracking is on right now
	quit   chan struct{} // closed when the node is let go of
}

// nodesCheck is how often the tracker compares its nodes with the client's.
const nodesCheck = time.Second

func startTracker(nodes func() map[string]rueidis.Client, cfg Tracking, timeout time.Duration) *tracker {
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
			t.follow(nil)
			return
		case <-time.After(nodesCheck):
		}
	}
}

// follow starts a nodeTracker for each node not followed yet and stops
// those of nodes no longer there.
func (t *tracker) follow(nodes map[string]rueidis.Client) {
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
			n := &nodeTracker{addr: addr, node: node, quit: make(chan struct{})}
			t.following[addr] = n
			t.done.Add(1)
			go t.keep(n)
		}
	}
}

// on reports whether tracking is on at every node followed (and there is one).
func (t *tracker) on() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.following {
		if !n.active.Load() {
			return false
		}
	}
	return len(t.following) > 0
}

// keep keeps a tracking connection to one node up, reconnecting with backoff.
func (t *tracker) keep(n *nodeTracker) {
	defer t.done.Done()
	backoff := 50 * time.Millisecond
	for {
		began := time.Now()
		err, unsupported := t.track(n)
		if unsupported {
			if !t.unsupported.Swap(true) {
				t.OnUnsupported(err)
			}
			return
		}
		select {
		case <-n.quit:
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

// track turns tracking on over a dedicated connection and serves it until
// the connection drops (or the tracker stops). It returns the error that
// ended it, nil after a drop of a working connection.
func (t *tracker) track(n *nodeTracker) (err error, unsupported bool) {
	dc, release := n.node.Dedicate()
	defer release()
	var errs <-chan error
	var mu sync.Mutex // orders the hook's reads of errs after its assignment
	mu.Lock()
	errs = dc.SetOnInvalidations(func(msgs []rueidis.RedisMessage) {
		if msgs == nil {
			mu.Lock()
			ch := errs
			mu.Unlock()
			select {
			case <-ch: // the connection dropped: run() will resync
			default:
				t.OnFlush() // FLUSHALL / FLUSHDB
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
	if re, isReply := rueidis.IsRedisErr(err); isReply && !credentialsRefused(re.Error()) {
		return err, true
	}
	if err != nil {
		return err, false
	}
	// Invalidations may have been missed while there was no tracking.
	t.OnResync()
	n.active.Store(true)
	defer n.active.Store(false)
	select {
	case err := <-errs:
		if err == nil { // the invalidation hook took the error first
			err = errors.New("tracking connection closed")
		}
		if t.OnDrop != nil {
			t.OnDrop(fmt.Errorf("%s: %w", n.addr, err))
		}
	case <-n.quit:
	}
	return nil, false
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
