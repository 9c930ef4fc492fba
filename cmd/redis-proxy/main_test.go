package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestDefaults(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{listen: "127.0.0.1:6380", redis: "127.0.0.1:6379", capacity: 100000, ttl: 10 * time.Second,
		maxClients: 10000, maxParallel: 256, loops: 0, backendTimeout: time.Second, shutdownTimeout: 5 * time.Second,
		pinCPUs: true, logLevel: "info", pprof: "", invalidation: true, respectTTL: true}
	if c != want {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
}

func TestEnvAndFlags(t *testing.T) {
	c, err := parseConfig([]string{"--ttl", "2s", "--pin-cpus=false"},
		env(map[string]string{"REDIS_PROXY_TTL": "1m", "REDIS_PROXY_CAPACITY": "7", "REDIS_PROXY_REDIS": "redis://h:1/0"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ttl != 2*time.Second || c.capacity != 7 || c.redis != "redis://h:1/0" || c.pinCPUs {
		t.Fatalf("%+v", c)
	}
}

func TestErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--capacity=-1"}, nil, "--capacity"},
		{[]string{"--ttl=-1s"}, nil, "--ttl"},
		{[]string{"--backend-timeout=0"}, nil, "--backend-timeout"},
		{[]string{"--shutdown-timeout=0s"}, nil, "--shutdown-timeout"},
		{[]string{"--loops=300"}, nil, "--loops"},
		{[]string{"--listen="}, nil, "--listen"},
		{[]string{"--max-memory=-1"}, nil, "--max-memory"},
		{[]string{"--stale-if-error=-1s"}, nil, "--stale-if-error"},
		{[]string{"--max-memory=12parsecs"}, nil, "--max-memory"},
		{[]string{"--bogus"}, nil, "unknown flag --bogus"},
		{nil, map[string]string{"REDIS_PROXY_MAX_CLIENTS": "many"}, "REDIS_PROXY_MAX_CLIENTS (--max-clients)"},
		{nil, map[string]string{"REDIS_PROXY_PIN_CPUS": "maybe"}, "REDIS_PROXY_PIN_CPUS (--pin-cpus)"},
	} {
		_, err := parseConfig(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %v: %v, want one line naming %s", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "512MiB": 512 << 20, "2GB": 2e9, "1.5kib": 1536, "64 KB": 64000} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: %d %v, want %d", in, b, err, want)
		}
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	if _, err := parseConfig([]string{"--help"}, env(nil), &out); err == nil {
		t.Fatal("--help did not stop parsing")
	}
	for _, want := range []string{"--listen", "REDIS_PROXY_LISTEN", "--max-parallel", "--ttl"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %s", want)
		}
	}
}
