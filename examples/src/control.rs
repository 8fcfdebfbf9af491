//! The reactive baselines each service can run: a static concurrency limit, AIMD, and a
//! gradient limiter (Netflix Gradient2-like). They act on the service's own measured latency
//! (arrival to response), as those limiters do in production: only after latency has risen.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::scenario::{ControlSpec, Mode};

/// Which algorithm a [`Limiter`] runs.
#[derive(Clone, Copy, Debug)]
pub enum Algorithm {
    /// A fixed limit.
    Static,
    /// Additive increase, multiplicative decrease on slow or failed completions.
    Aimd {
        /// Completions slower than this count as drops.
        latency_ms: f64,
    },
    /// Gradient2: `limit = limit * clamp(tol * long_rtt / short_rtt, 0.5, 1) + queue`.
    Gradient {
        /// Tolerance on the long-term RTT.
        tolerance: f64,
    },
}

#[derive(Debug)]
struct State {
    limit: f64,
    long_rtt_ms: f64,
    short_rtt_ms: f64,
}

/// A concurrency limiter: admits a request while fewer than `limit` are in flight.
#[derive(Debug)]
pub struct Limiter {
    algo: Algorithm,
    inflight: AtomicUsize,
    limit: AtomicUsize,
    state: Mutex<State>,
}

const MAX_LIMIT: f64 = 500.0;

impl Limiter {
    /// The limiter of a control mode, or `None` for modes without one.
    pub fn for_mode(mode: Mode, c: &ControlSpec) -> Option<Self> {
        let (algo, initial) = match mode {
            Mode::StaticLimit => (Algorithm::Static, c.static_limit as f64),
            Mode::Aimd => (
                Algorithm::Aimd {
                    latency_ms: c.aimd_latency_ms,
                },
                c.initial_limit,
            ),
            Mode::Gradient => (
                Algorithm::Gradient {
                    tolerance: c.gradient_tolerance,
                },
                c.initial_limit,
            ),
            _ => return None,
        };
        Some(Self::new(algo, initial))
    }

    /// A limiter with an initial limit.
    pub fn new(algo: Algorithm, initial: f64) -> Self {
        let initial = initial.clamp(1.0, MAX_LIMIT);
        Self {
            algo,
            inflight: AtomicUsize::new(0),
            limit: AtomicUsize::new(initial as usize),
            state: Mutex::new(State {
                limit: initial,
                long_rtt_ms: 0.0,
                short_rtt_ms: 0.0,
            }),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Admits a request, or returns `false` when the limit is reached. Every `true` must be
    /// followed by one [`Limiter::complete`].
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let prev = self.inflight.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Records a completion and adapts the limit.
    pub fn complete(&self, rtt: Duration, ok: bool) {
        let inflight = self.inflight.fetch_sub(1, Ordering::AcqRel);
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        let Ok(mut s) = self.state.lock() else { return };
        match self.algo {
            Algorithm::Static => return,
            Algorithm::Aimd { latency_ms } => {
                if !ok || rtt_ms > latency_ms {
                    s.limit = (s.limit * 0.9).max(1.0);
                } else if (inflight as f64) * 2.0 >= s.limit {
                    s.limit = (s.limit + 1.0 / s.limit.max(1.0)).min(MAX_LIMIT);
                }
            }
            Algorithm::Gradient { tolerance } => {
                if s.long_rtt_ms == 0.0 {
                    s.long_rtt_ms = rtt_ms;
                    s.short_rtt_ms = rtt_ms;
                }
                s.short_rtt_ms = 0.8 * s.short_rtt_ms + 0.2 * rtt_ms;
                s.long_rtt_ms = 0.995 * s.long_rtt_ms + 0.005 * rtt_ms;
                // Let the long-term RTT drift down after a period of overload.
                if s.long_rtt_ms / s.short_rtt_ms.max(1e-6) > 2.0 {
                    s.long_rtt_ms *= 0.95;
                }
                let gradient =
                    (tolerance * s.long_rtt_ms / s.short_rtt_ms.max(1e-6)).clamp(0.5, 1.0);
                let queue = s.limit.sqrt();
                let target = s.limit * gradient + queue;
                let target = if ok { target } else { s.limit * 0.9 };
                s.limit = (0.8 * s.limit + 0.2 * target).clamp(1.0, MAX_LIMIT);
            }
        }
        self.limit
            .store(s.limit.round().max(1.0) as usize, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_limit_sheds_over_limit() {
        let l = Limiter::new(Algorithm::Static, 2.0);
        assert!(l.try_acquire());
        assert!(l.try_acquire());
        assert!(!l.try_acquire());
        l.complete(Duration::from_millis(1), true);
        assert!(l.try_acquire());
    }

    #[test]
    fn aimd_backs_off_on_slow_completions() {
        let l = Limiter::new(Algorithm::Aimd { latency_ms: 10.0 }, 20.0);
        for _ in 0..10 {
            assert!(l.try_acquire());
            l.complete(Duration::from_millis(50), true);
        }
        assert!(l.limit() < 10, "{}", l.limit());
    }

    #[test]
    fn gradient_shrinks_when_latency_rises() {
        let l = Limiter::new(Algorithm::Gradient { tolerance: 1.5 }, 20.0);
        for _ in 0..200 {
            assert!(l.try_acquire());
            l.complete(Duration::from_millis(2), true);
        }
        let healthy = l.limit();
        for _ in 0..30 {
            assert!(l.try_acquire());
            l.complete(Duration::from_millis(40), true);
        }
        assert!(l.limit() < healthy, "{} vs {healthy}", l.limit());
    }
}
