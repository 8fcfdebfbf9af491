//! Local reactive concurrency limiters, the fallback when advice is missing and the baseline
//! Seer is evaluated against.
//!
//! Both update once per tick on the exporter thread, from the tick's window of every request, so
//! the hot path only reads the current limit (one relaxed load). A tick with no completed
//! request leaves the limit unchanged: it carries no latency or error evidence (a tick of only
//! shed requests says nothing about the latency at the current limit).

/// Which reactive algorithm to run.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum LimiterKind {
    /// Additive increase, multiplicative decrease: on a tick whose error rate is over
    /// [`AIMD_ERROR_RATE`] of its completions, or whose p99 is over the slow threshold,
    /// `limit *= backoff`; otherwise, when the limit was used (in-flight reached half of it),
    /// `limit += max(1, completions / limit)`. Shed requests are not a backoff signal.
    Aimd {
        /// Multiplicative decrease factor (0..1), default 0.9.
        backoff: f64,
    },
    /// Gradient2 (Netflix concurrency-limits): `gradient = clamp(tolerance * long / short, 0.5,
    /// 1)`, `new = limit * gradient + sqrt(limit)`, smoothed by `smoothing`. `short` is the tick's
    /// mean latency (of completed requests), `long` an exponential average over about
    /// `long_ticks` ticks. It grows only when the limit was used (as for AIMD).
    Gradient {
        /// Tolerated latency growth before the limit shrinks, default 1.5.
        tolerance: f64,
        /// Smoothing of the limit, default 0.2.
        smoothing: f64,
        /// Window of the long-term latency average, in ticks, default 100.
        long_ticks: u32,
    },
}

impl LimiterKind {
    /// AIMD with the default backoff 0.9.
    pub fn aimd() -> Self {
        LimiterKind::Aimd { backoff: 0.9 }
    }

    /// Gradient2 with its default parameters.
    pub fn gradient() -> Self {
        LimiterKind::Gradient {
            tolerance: 1.5,
            smoothing: 0.2,
            long_ticks: 100,
        }
    }
}

/// The error rate (errors over completions in one tick) above which AIMD backs off: a steady
/// trickle of errors below it does not shrink the limit.
pub const AIMD_ERROR_RATE: f64 = 0.01;

/// When the limiter applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LimiterMode {
    /// Only while advice is missing or expired (fail over to local control).
    #[default]
    Fallback,
    /// Always, ignoring advice: the reactive baseline for evaluations.
    Always,
}

/// Limiter configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimiterConfig {
    /// The algorithm.
    pub kind: LimiterKind,
    /// When it applies.
    pub mode: LimiterMode,
    /// Starting limit, default 20.
    pub initial: u32,
    /// Lower bound, default 1.
    pub min: u32,
    /// Upper bound, default 1000.
    pub max: u32,
}

impl LimiterConfig {
    /// A limiter of `kind` with default bounds, in fallback mode.
    pub fn new(kind: LimiterKind) -> Self {
        Self {
            kind,
            mode: LimiterMode::Fallback,
            initial: 20,
            min: 1,
            max: 1000,
        }
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: LimiterMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the starting limit.
    pub fn with_initial(mut self, initial: u32) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the bounds.
    pub fn with_bounds(mut self, min: u32, max: u32) -> Self {
        self.min = min.max(1);
        self.max = max.max(self.min);
        self
    }
}

/// What one tick looked like to the limiter (service-wide).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TickSample {
    pub(crate) completions: u64,
    pub(crate) errors: u64,
    pub(crate) mean_latency_ns: f64,
    pub(crate) p99_latency_ns: u64,
    pub(crate) inflight_max: u64,
}

/// The limiter state, owned by the exporter thread.
#[derive(Debug)]
pub(crate) struct Limiter {
    cfg: LimiterConfig,
    limit: f64,
    long_ns: f64,
}

impl Limiter {
    pub(crate) fn new(cfg: LimiterConfig) -> Self {
        Self {
            cfg,
            limit: f64::from(cfg.initial.clamp(cfg.min, cfg.max)),
            long_ns: 0.0,
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit.round() as u32
    }

    /// Updates the limit from one tick; `slow_ns` is the QoS threshold (0 = none).
    pub(crate) fn update(&mut self, s: &TickSample, slow_ns: u64) -> u32 {
        // No completion, no evidence: its mean latency would read as 0 (Gradient would grow
        // during total overload) and it has no error rate.
        if s.completions == 0 {
            return self.limit();
        }
        let used = s.inflight_max as f64 * 2.0 >= self.limit;
        match self.cfg.kind {
            LimiterKind::Aimd { backoff } => {
                let error_rate = s.errors as f64 / s.completions as f64;
                let overloaded =
                    error_rate > AIMD_ERROR_RATE || (slow_ns > 0 && s.p99_latency_ns > slow_ns);
                if overloaded {
                    self.limit *= backoff.clamp(0.1, 0.99);
                } else if used {
                    self.limit += (s.completions as f64 / self.limit.max(1.0)).max(1.0);
                }
            }
            LimiterKind::Gradient {
                tolerance,
                smoothing,
                long_ticks,
            } => {
                let short = s.mean_latency_ns.max(1.0);
                if self.long_ns == 0.0 {
                    self.long_ns = short;
                }
                let alpha = 2.0 / (f64::from(long_ticks.max(1)) + 1.0);
                self.long_ns = self.long_ns * (1.0 - alpha) + short * alpha;
                // Let the long average recover quickly after a drop in latency.
                if self.long_ns > short * 2.0 {
                    self.long_ns *= 0.95;
                }
                let gradient = (tolerance * self.long_ns / short).clamp(0.5, 1.0);
                let mut new = self.limit * gradient + self.limit.sqrt();
                if !used && new > self.limit {
                    new = self.limit; // app-limited: do not grow without evidence
                }
                self.limit = self.limit * (1.0 - smoothing) + new * smoothing;
            }
        }
        self.limit = self
            .limit
            .clamp(f64::from(self.cfg.min), f64::from(self.cfg.max));
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(completions: u64, errors: u64, mean_ms: f64, inflight: u64) -> TickSample {
        TickSample {
            completions,
            errors,
            mean_latency_ns: mean_ms * 1e6,
            p99_latency_ns: (mean_ms * 2e6) as u64,
            inflight_max: inflight,
        }
    }

    #[test]
    fn aimd_grows_when_used_and_backs_off_on_errors() {
        let mut l = Limiter::new(LimiterConfig::new(LimiterKind::aimd()).with_initial(10));
        let grown = l.update(&tick(100, 0, 1.0, 10), 0);
        assert!(grown > 10);
        let shrunk = l.update(&tick(100, 5, 1.0, 10), 0);
        assert!(shrunk < grown);
        // Idle (not using the limit): no growth.
        let idle = l.update(&tick(10, 0, 1.0, 1), 0);
        assert_eq!(idle, shrunk);
    }

    #[test]
    fn aimd_ignores_a_small_steady_error_rate_and_backs_off_above_the_threshold() {
        let mut l = Limiter::new(LimiterConfig::new(LimiterKind::aimd()).with_initial(50));
        // 0.5% errors every tick, limit in use: it must not collapse.
        for _ in 0..100 {
            let lim = u64::from(l.limit());
            l.update(&tick(1000, 5, 1.0, lim), 0);
        }
        assert!(l.limit() >= 50, "{}", l.limit());
        // 5% errors: multiplicative decrease every tick.
        let before = l.limit();
        let after = l.update(&tick(1000, 50, 1.0, u64::from(before)), 0);
        assert!(after < before, "{after} !< {before}");
        // Exactly at the threshold is not over it.
        let at = l.update(&tick(1000, 10, 1.0, 0), 0);
        assert_eq!(at, after);
    }

    #[test]
    fn ticks_with_only_sheds_leave_the_limit_alone() {
        // What a tick of only shed requests looks like: no completion, no latency.
        let shed_only = TickSample {
            completions: 0,
            errors: 0,
            mean_latency_ns: 0.0,
            p99_latency_ns: 0,
            inflight_max: 100,
        };
        for kind in [LimiterKind::aimd(), LimiterKind::gradient()] {
            let mut l = Limiter::new(LimiterConfig::new(kind).with_initial(40));
            for _ in 0..5 {
                l.update(&tick(1000, 0, 5.0, 40), 0);
            }
            let before = l.limit();
            for _ in 0..50 {
                assert_eq!(l.update(&shed_only, 0), before, "{kind:?}");
            }
        }
    }

    #[test]
    fn gradient_shrinks_when_latency_rises() {
        let mut l = Limiter::new(LimiterConfig::new(LimiterKind::gradient()).with_initial(100));
        for _ in 0..50 {
            l.update(&tick(1000, 0, 1.0, 100), 0);
        }
        let before = l.limit();
        for _ in 0..20 {
            l.update(&tick(1000, 0, 10.0, 100), 0);
        }
        assert!(l.limit() < before, "{} !< {before}", l.limit());
        assert!(l.limit() >= 1);
    }
}
