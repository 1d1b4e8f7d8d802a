package lm

import (
	"time"
)

// DefaultProgressInterval is how often a copying pair logs its progress.
const DefaultProgressInterval = 30 * time.Second

// startProgress starts the progress logger (owned by the Manager: it ends
// with m.ctx and Close waits for it): every ProgressInterval, one info
// line per copying pair with what it copied, its rate and ETA. The
// summary of a pair that ended is logged by the event log's writer
// (events.go logSummary), which knows the pair's timeline.
func (m *Manager) startProgress() {
	iv := m.opts.ProgressInterval
	if iv == 0 {
		iv = DefaultProgressInterval
	}
	if iv < 0 {
		return
	}
	m.every(iv, m.logProgress)
}

// logProgress logs one line per pair that is copying.
func (m *Manager) logProgress() {
	ps := m.activePairs()
	for _, p := range ps {
		if p.getState() != StateCopying {
			continue
		}
		st := p.status()
		pct := 0.0
		if st.TotalBytes > 0 {
			pct = 100 * float64(st.CopiedBytes) / float64(st.TotalBytes)
		}
		p.zlog.Info().Int64("copied_bytes", st.CopiedBytes).Int64("total_bytes", st.TotalBytes).
			Float64("percent", float64(int(pct*10))/10).Int64("dcl_bytes", st.DCLBytes).
			Float64("rate_mbps", float64(st.RateBps)/1e6).Int64("eta_s", st.ETASeconds).
			Str("vehicle", st.Vehicle).Msg("copy progress")
	}
}
