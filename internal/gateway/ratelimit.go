package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiter keeps a token bucket (rate.Limiter) per client key (the API
// key, or the client address when no keys are configured): rate requests
// per second on average, bursts of up to burst.
type rateLimiter struct {
	rate  rate.Limit
	burst int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	swept    time.Time
}

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate.Limit(perSecond), burst: max(burst, 1), limiters: map[string]*rate.Limiter{}}
}

// allow takes a token for key; when there is none it returns how long until
// there will be one, and takes nothing.
func (l *rateLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	lim, ok := l.limiters[key]
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.limiters[key] = lim
	}
	// A reservation tells the wait; a refused request gives its token back.
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep forgets the limiters whose bucket has filled up again once a
// minute: such a client is idle, and a new limiter for it would be the
// same. Many one-off clients thus cannot grow the map without bound.
func (l *rateLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, lim := range l.limiters {
		if lim.TokensAt(now) >= float64(l.burst) {
			delete(l.limiters, k)
		}
	}
}
