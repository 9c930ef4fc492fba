// How the proxy reaches Redis: one server, a Redis Cluster, or the primary
// Sentinel names.
//
// --redis names one node or several (seed nodes of a cluster, or sentinels).
// rueidis does the rest: a cluster client learns the slots from CLUSTER
// SLOTS, sends each GET to the primary serving its key's slot and follows
// MOVED and ASK (redirects are followed even with retries off); a Sentinel
// client asks the sentinels for the primary and moves to the new one when
// they announce a failover. The proxy's GETs are single-key and an MGET's
// misses go as separate GETs, so every command has one slot and an MGET
// across slots needs no splitting of our own.
//
// ModeAuto is what a user who names one Redis expects: the proxy connects to
// it as to one server and asks it (HELLO) whether it is in a cluster; if it
// is, it makes a cluster client instead. With a primary's name it is
// Sentinel, and with several addresses a cluster. A single server's client
// can be made while Redis is down; a cluster's or Sentinel's cannot (it
// needs the topology), nor can ModeAuto's (it needs to ask): New tries once
// and connect keeps trying.
package backend

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The values of Config.Mode.
const (
	ModeAuto       = "auto"
	ModeStandalone = "standalone"
	ModeCluster    = "cluster"
	ModeSentinel   = "sentinel"
)

// connection is the rueidis client once made, with what it talks to
// (ModeStandalone, ModeCluster or ModeSentinel), or why there is none yet.
type connection struct {
	rc   rueidis.Client
	mode string
	err  error
}

// errSentinelNode is the one address of an auto client being a sentinel.
var errSentinelNode = errors.New("a sentinel: give --sentinel-master, the name of the primary it watches")

// client returns the rueidis client, or the error misses fail with until it
// is made.
func (c *Client) client() (rueidis.Client, error) {
	cn := c.redis.Load() // New stored the first
	return cn.rc, cn.err
}

// Mode is what the client talks to: ModeStandalone, ModeCluster or
// ModeSentinel; ModeAuto until it knows.
func (c *Client) Mode() string {
	if cn := c.redis.Load(); cn.rc != nil {
		return cn.mode
	}
	return ModeAuto
}

// nodes are the servers tracking must cover: every node of a cluster (of
// which only the primaries), the primary Sentinel names, the one server;
// none before the client is made.
func (c *Client) nodes() (map[string]rueidis.Client, rueidis.ClientMode) {
	rc, _ := c.client()
	if rc == nil {
		return nil, rueidis.ClientModeStandalone
	}
	return rc.Nodes(), rc.Mode()
}

// dial makes the rueidis client for mode, as clientOptions resolved it, and
// reports whether it did. A failure is kept for the misses to fail with
// (the first of them reports Redis down, as with a single server's client).
func (c *Client) dial(opt rueidis.ClientOption, mode string) bool {
	rc, err := rueidis.NewClient(opt)
	switch {
	case rc != nil && mode == ModeStandalone:
		err = nil // made while Redis is down: rueidis redials by itself
	case err == nil && mode == ModeAuto:
		rc, mode, err = settleAuto(rc, opt, c.timeout)
	}
	if err == nil && mode == ModeCluster && rc.Mode() != rueidis.ClientModeCluster {
		// rueidis falls back to one server when the node it asked
		// refuses CLUSTER SHARDS/SLOTS, which would answer MOVED for
		// two slots in three.
		err = fmt.Errorf("%s did not give its cluster's slots: not a cluster node, or the ACL user lacks +cluster|shards +cluster|slots", opt.InitAddress[0])
	}
	if err != nil {
		if rc != nil {
			rc.Close()
		}
		c.redis.Store(&connection{err: unavailable(err)})
		return false
	}
	c.redis.Store(&connection{rc: rc, mode: mode})
	return true
}

// settleAuto asks the one server an auto client reached whether it is in a
// cluster (the mode HELLO reports) and makes a cluster client if it is. A
// Redis without HELLO (before 6), or an ACL user not allowed it, is taken
// for a single server.
func settleAuto(rc rueidis.Client, opt rueidis.ClientOption, timeout time.Duration) (rueidis.Client, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	hello, err := rc.Do(ctx, rc.B().Hello().Protover(3).Build()).AsMap()
	if _, isReply := rueidis.IsRedisErr(err); err != nil && !isReply {
		return rc, ModeAuto, err
	}
	m := hello["mode"]
	switch mode, _ := m.ToString(); mode {
	case ModeSentinel:
		return rc, ModeAuto, fmt.Errorf("%s: %w", opt.InitAddress[0], errSentinelNode)
	case ModeCluster:
	default:
		return rc, ModeStandalone, nil
	}
	rc.Close()
	opt.ForceSingleClient = false
	rc, err = rueidis.NewClient(opt)
	return rc, ModeCluster, err
}

// unavailable is why the client could not be made, as the misses fail with
// it: Redis unavailable, whatever the cause. An error reply is not the
// answer about a key (a WRONGTYPE is), so --stale-if-error applies.
func unavailable(err error) error {
	err = classify(err)
	if reply, isReply := err.(ReplyError); isReply {
		return &UnavailableError{refusal(reply)}
	}
	return err
}

// connect tries dial again, backing off to once a second, until it succeeds
// or the client is closed.
func (c *Client) connect(opt rueidis.ClientOption, mode string) {
	defer c.dialling.Done()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-c.quit:
			return
		case <-time.After(backoff):
		}
		if c.dial(opt, mode) {
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Redacted is addr with the password of a redis:// URL replaced by "xxxxx",
// for messages and logs; everything between "://" and the last "@" if the
// URL does not parse.
func Redacted(addr string) string {
	scheme, rest, ok := strings.Cut(addr, "://")
	at := strings.LastIndexByte(rest, '@')
	if !ok || at < 0 {
		return addr
	}
	if u, err := url.Parse(addr); err == nil && u.User != nil {
		return u.Redacted()
	}
	return scheme + "://xxxxx" + rest[at:]
}

// clientOptions turns cfg's addresses, mode, credentials and TLS settings
// into rueidis's options, and says what the client will be: ModeSentinel
// with a primary's name, ModeCluster for several addresses, and ModeAuto
// (for dial to settle) only for one.
func clientOptions(cfg Config) (opt rueidis.ClientOption, mode string, err error) {
	opt, err = addrOptions(cfg.Addr)
	if err != nil {
		return opt, "", err
	}
	opt.Username = cmp.Or(cfg.User, opt.Username)
	opt.Password = cmp.Or(cfg.Password, opt.Password)
	if cfg.TLSRoots != nil || cfg.TLSInsecure {
		if opt.TLSConfig == nil {
			opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		opt.TLSConfig.RootCAs = cfg.TLSRoots
		opt.TLSConfig.InsecureSkipVerify = opt.TLSConfig.InsecureSkipVerify || cfg.TLSInsecure
	}
	if opt.TLSConfig != nil {
		// Each node's certificate is checked for the name it is dialled
		// by, not the first address's (a rediss:// URL sets that one):
		// a cluster's other nodes, and the primary a sentinel names,
		// have their own.
		opt.TLSConfig.ServerName = ""
	}
	opt.Sentinel.MasterSet = cmp.Or(cfg.SentinelMaster, opt.Sentinel.MasterSet)
	mode = cmp.Or(cfg.Mode, ModeAuto)
	sentinel := opt.Sentinel.MasterSet != ""
	switch {
	case mode != ModeAuto && mode != ModeStandalone && mode != ModeCluster && mode != ModeSentinel:
		return opt, "", fmt.Errorf("unknown mode %q: want auto, standalone, cluster or sentinel", mode)
	case mode == ModeSentinel && !sentinel:
		return opt, "", errors.New("sentinel mode needs the name of the primary the sentinels watch (--sentinel-master, or master_set in a redis:// URL)")
	case sentinel && mode != ModeSentinel && mode != ModeAuto:
		return opt, "", fmt.Errorf("a sentinel master name is only for sentinel mode, not %s", mode)
	case sentinel:
		mode = ModeSentinel
		// The sentinels are reached as the data nodes are, TLS or not;
		// without credentials (a sentinel's own password is not the
		// primary's).
		opt.Sentinel.TLSConfig = opt.TLSConfig
	case len(opt.InitAddress) > 1 && mode == ModeStandalone:
		return opt, "", fmt.Errorf("standalone mode takes one address, got %d", len(opt.InitAddress))
	case len(opt.InitAddress) > 1:
		mode = ModeCluster
	}
	// One server, or one to ask whether it is in a cluster; not a
	// cluster client that falls back to one server, which would leave
	// the cluster's topology refresh hooked to the connection.
	opt.ForceSingleClient = mode == ModeStandalone || mode == ModeAuto
	return opt, mode, nil
}

// addrOptions reads a host:port, a list of them (host:port,host:port) or a
// redis:// / rediss:// URL.
func addrOptions(addr string) (rueidis.ClientOption, error) {
	if strings.Contains(addr, "://") {
		opt, err := rueidis.ParseURL(addr)
		if err != nil {
			// Not the parser's message: it quotes the URL, password and all.
			return opt, fmt.Errorf("invalid Redis URL %q (a password with / # %% ? or @ must be percent-encoded)", Redacted(addr))
		}
		return opt, nil
	}
	var opt rueidis.ClientOption
	for _, a := range strings.Split(addr, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			return opt, fmt.Errorf("invalid Redis address %q: want host:port (several: host:port,host:port) or redis://host:port", a)
		}
		opt.InitAddress = append(opt.InitAddress, a)
	}
	return opt, nil
}
