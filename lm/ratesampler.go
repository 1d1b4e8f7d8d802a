package lm

import "time"

// rateSampler turns counters into rates over windows of at least a second.
// Its owner guards it (pair.mu).
type rateSampler struct {
	t0       time.Time
	moved0   int64
	done0    int64
	rate     float64 // bytes transferred per second
	progress float64 // bytes of progress (done) per second
}

func (r *rateSampler) sample(moved, done int64) (rate, progress float64) {
	now := time.Now()
	if r.t0.IsZero() {
		r.t0, r.moved0, r.done0 = now, moved, done
		return 0, 0
	}
	if dt := now.Sub(r.t0).Seconds(); dt >= 1 {
		r.rate = float64(moved-r.moved0) / dt
		r.progress = float64(max(done-r.done0, moved-r.moved0)) / dt
		r.t0, r.moved0, r.done0 = now, moved, done
	}
	return r.rate, r.progress
}
