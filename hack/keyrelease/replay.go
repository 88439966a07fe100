package main

import (
	"encoding/hex"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/proofline/proofline/verifier/rp"
)

// errReplay: a passport token that already released a secret here was presented again.
var errReplay = errors.New("the token already released a secret here: a passport token releases once per key-release service, attest again for a new one")

// maxSpentTokens bounds the replay cache: about 100 bytes an entry.
const maxSpentTokens = 100_000

// replayCache remembers the passport tokens that released a secret here for as long as they
// would still verify (exp, or iat + MaxAge if that is earlier, plus Leeway), so that each
// releases at most once per service. A result token is a bearer credential: without this, anyone
// who saw one (a proxy, another relying party: every token carries the same aud) could redeem it
// until it expires. Tokens are named by jti, or by record_sha256 if they carry none.
type replayCache struct {
	mu    sync.Mutex
	max   int
	until map[string]time.Time // token name → when it stops verifying here
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, until: map[string]time.Time{}}
}

// tokenName names a token in the replay cache.
func tokenName(c *rp.Claims) string {
	if len(c.ID) > 0 {
		return "jti:" + hex.EncodeToString(c.ID)
	}
	return "record:" + hex.EncodeToString(c.RecordSHA256[:])
}

// spend marks the token name as used until the given time. It returns an error wrapping
// errReplay if it already is, and a 503 refusal if the cache is full of live tokens (fail
// closed: the service cannot tell a replay then).
func (r *replayCache) spend(name string, until, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.until[name]; ok {
		return errReplay
	}
	if len(r.until) >= r.max {
		for n, t := range r.until {
			if !now.Before(t) {
				delete(r.until, n)
			}
		}
		if len(r.until) >= r.max {
			return &refusal{http.StatusServiceUnavailable, errors.New("too many passport tokens in use to tell a replay: retry later")}
		}
	}
	r.until[name] = until
	return nil
}

// unspend forgets a token name whose release did not happen (the decision could not be
// recorded), so that the workload can present it again.
func (r *replayCache) unspend(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.until, name)
}
