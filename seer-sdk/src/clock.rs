//! The hot-path clock: a TSC read where the TSC is invariant, else the OS monotonic clock.
//!
//! [`minstant`] decides at start-up whether the TSC is usable (invariant and synchronised across
//! cores) and falls back to `clock_gettime(CLOCK_MONOTONIC_COARSE..)`-class reads otherwise, so
//! callers never have to. Raw instants are stored in records; the conversion to unix
//! nanoseconds happens on the exporter thread with an [`Anchor`].

pub use minstant::{Anchor, Instant};

/// Reads the clock. About 10 ns with the TSC.
#[inline(always)]
pub fn now() -> Instant {
    Instant::now()
}

/// Whether the fast TSC path is in use (otherwise the OS clock is).
pub fn is_tsc() -> bool {
    minstant::is_tsc_available()
}

/// Nanoseconds from `earlier` to `later`, saturating at 0.
#[inline(always)]
pub(crate) fn nanos_between(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_nanos()).unwrap_or(u64::MAX)
}
