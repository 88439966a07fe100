package service

import (
	"testing"
	"time"

	"github.com/proofline/proofline/verifier/collateral"
)

// Every number in the configuration has a range, its ends included, and a value outside it is
// refused with a message naming the key, the value and the range; 0 is the default.
func TestConfigBounds(t *testing.T) {
	fetch := func(f FetchConfig) CollateralConfig { f.Enabled = true; return CollateralConfig{Fetch: f} }
	for _, c := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none: valid
	}{
		{name: "defaults", cfg: Config{}},
		{name: "tokens.ttl 1ms", cfg: Config{Tokens: TokenConfig{TTL: time.Millisecond}}, want: []string{"tokens.ttl is 1ms", "between 1s and 24h"}},
		{name: "tokens.ttl negative", cfg: Config{Tokens: TokenConfig{TTL: -time.Minute}}, want: []string{"tokens.ttl is -1m", "between 1s and 24h"}},
		{name: "tokens.ttl 25h", cfg: Config{Tokens: TokenConfig{TTL: 25 * time.Hour}}, want: []string{"tokens.ttl is 25h", "between 1s and 24h"}},
		{name: "tokens.ttl ends", cfg: Config{Tokens: TokenConfig{TTL: time.Second}}},
		{name: "tokens.ttl 24h", cfg: Config{Tokens: TokenConfig{TTL: 24 * time.Hour}}},

		{name: "queue.workers 4097", cfg: Config{Queue: QueueConfig{Workers: 4097}}, want: []string{"queue.workers is 4097", "between 1 and 4096"}},
		{name: "queue.workers negative", cfg: Config{Queue: QueueConfig{Workers: -1}}, want: []string{"queue.workers is -1", "between 1 and 4096"}},
		{name: "queue.size overflows", cfg: Config{Queue: QueueConfig{Workers: 1, Size: int(^uint(0) >> 1)}}, want: []string{"queue.size is 9223372036854775807", "between 1 and 65536"}},
		{name: "queue.size negative", cfg: Config{Queue: QueueConfig{Size: -64}}, want: []string{"queue.size is -64", "between 1 and 65536"}},
		{name: "queue at its ends", cfg: Config{Queue: QueueConfig{Workers: 4096, Size: 1 << 16, RetryAfter: time.Hour}}},
		{name: "queue.retry_after 2h", cfg: Config{Queue: QueueConfig{RetryAfter: 2 * time.Hour}}, want: []string{"queue.retry_after is 2h", "between 1s and 1h"}},
		{name: "queue.retry_after 10ms", cfg: Config{Queue: QueueConfig{RetryAfter: 10 * time.Millisecond}}, want: []string{"queue.retry_after is 10ms", "between 1s and 1h"}},

		{name: "checkpoint_interval 2m", cfg: Config{Log: LogConfig{CheckpointInterval: 2 * time.Minute}}, want: []string{"log.checkpoint_interval is 2m", "between 100ms and 1m"}},
		{name: "checkpoint_interval 50ms", cfg: Config{Log: LogConfig{CheckpointInterval: 50 * time.Millisecond}}, want: []string{"log.checkpoint_interval is 50ms", "between 100ms and 1m"}},
		{name: "checkpoint_interval 1m", cfg: Config{Log: LogConfig{CheckpointInterval: time.Minute}}},
		{name: "checkpoint_interval database 2m", cfg: Config{Database: "u@tcp(h:3306)/p", Log: LogConfig{CheckpointInterval: 2 * time.Minute}}, want: []string{"log.checkpoint_interval (with a database) is 2m", "between 1s and 1m"}},

		{name: "fetch.timeout 1h", cfg: Config{Collateral: fetch(FetchConfig{Timeout: time.Hour})}, want: []string{"collateral.fetch.timeout is 1h", "between 1s and 5m"}},
		{name: "fetch.timeout 1ms", cfg: Config{Collateral: fetch(FetchConfig{Timeout: time.Millisecond})}, want: []string{"collateral.fetch.timeout is 1ms", "between 1s and 5m"}},
		{name: "fetch.max_wait 2h", cfg: Config{Collateral: fetch(FetchConfig{MaxWait: 2 * time.Hour})}, want: []string{"collateral.fetch.max_wait is 2h", "between 1s and 1h"}},
		{name: "fetch.max_wait negative", cfg: Config{Collateral: fetch(FetchConfig{MaxWait: -time.Second})}, want: []string{"collateral.fetch.max_wait is -1s", "between 1s and 1h"}},
		{name: "fetch.refetch_every negative", cfg: Config{Collateral: fetch(FetchConfig{RefetchEvery: -time.Nanosecond})}, want: []string{"collateral.fetch.refetch_every is -1ns", "between 1m and 168h"}},
		{name: "fetch.refetch_every 200h", cfg: Config{Collateral: fetch(FetchConfig{RefetchEvery: 200 * time.Hour})}, want: []string{"collateral.fetch.refetch_every is 200h", "between 1m and 168h"}},
		{name: "fetch at its ends", cfg: Config{Collateral: fetch(FetchConfig{Timeout: 5 * time.Minute, MaxWait: time.Hour, RefetchEvery: 168 * time.Hour})}},
		{name: "fetch low ends", cfg: Config{Collateral: fetch(FetchConfig{Timeout: time.Second, MaxWait: time.Second, RefetchEvery: time.Minute})}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.DataDir = "/d"
			checkValidate(t, c.cfg.Validate(false), c.want)
		})
	}
}

// The defaults the bound messages name are those Settings and collateral apply.
func TestConfigBoundDefaults(t *testing.T) {
	s := Settings{}.withDefaults()
	if s.Workers != defaultQueueWorkers || s.Queue != defaultQueueSize || s.RetryAfter != defaultRetryAfter || s.TokenTTL != defaultTokenTTL {
		t.Fatalf("Settings defaults %d %d %v %v differ from config.go's", s.Workers, s.Queue, s.RetryAfter, s.TokenTTL)
	}
	if collateral.DefaultRefetchEvery < minRefetchEvery || collateral.DefaultRefetchEvery > maxRefetchEvery ||
		collateral.DefaultMaxWait > maxFetchMaxWait || DefaultCollateralTimeout > maxFetchTimeout {
		t.Fatal("a collateral default is outside the range config.go allows")
	}
}
