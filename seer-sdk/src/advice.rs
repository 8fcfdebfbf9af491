//! The advice cell: the collector's latest advice, readable in O(1) by every request.
//!
//! The exporter thread stores each [`AdviceReply`] it receives; the hot path reads a few relaxed
//! atomics (the expiry as a clock instant, so a request compares and converts nothing). The
//! fields may be observed from two different stores for one request at the moment of an update;
//! either value is a valid decision, so no lock or sequence counter is needed.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::{self, Anchor, Instant};

use seer_proto::AdviceReply;

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Default admission priority of a request when no priority function is configured.
pub const DEFAULT_PRIORITY: u8 = 128;

/// The advice as the SDK holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Advice {
    /// Predicted probability (0..1) that this service causes a QoS violation.
    pub risk: f32,
    /// Whether this service is named as the culprit.
    pub culprit: bool,
    /// Fraction of requests to admit (0..1). A non-finite value admits everything (fail open).
    pub admit_fraction: f32,
    /// Optional cap on requests in flight.
    pub max_in_flight: Option<u32>,
    /// Why.
    pub reason: String,
    /// Model version that produced it.
    pub model_version: u64,
    /// Expiry, unix nanoseconds (0: never set, treated as expired).
    pub expires_at_unix_ns: u64,
}

impl From<AdviceReply> for Advice {
    /// Converts a reply, clamping its fractions to 0..1. A non-finite admit fraction (NaN stays
    /// NaN through `clamp`) becomes 1.0: a bad reply fails open instead of shedding everything.
    /// A non-finite risk becomes 0.
    fn from(r: AdviceReply) -> Self {
        Self {
            risk: finite_or(r.risk, 0.0).clamp(0.0, 1.0),
            culprit: r.culprit,
            admit_fraction: finite_or(r.admit_fraction, 1.0).clamp(0.0, 1.0),
            max_in_flight: r.max_in_flight,
            reason: r.reason,
            model_version: r.model_version,
            expires_at_unix_ns: r.expires_at_unix_ns,
        }
    }
}

/// `v`, or `default` when `v` is NaN or infinite.
fn finite_or(v: f32, default: f32) -> f32 {
    if v.is_finite() { v } else { default }
}

/// Why a request was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShedReason {
    /// The advice's admit fraction.
    Advice,
    /// The in-flight cap (advice `max_in_flight` or the configured one).
    MaxInFlight,
    /// The local reactive limiter.
    Limiter,
}

/// The admission decision computed from advice, read per request.
#[derive(Debug)]
pub(crate) struct AdviceCell {
    /// Unix ns when the advice expires; 0 = no advice.
    expires_at: AtomicU64,
    /// The same moment as a clock instant ([`Instant::ZERO`]: no advice, or expired when
    /// stored), so that a request compares two instants and converts nothing.
    expires: minstant::Atomic,
    /// Requests with priority below this class are shed.
    shed_below: AtomicU32,
    /// Probability (scaled to u32::MAX) of shedding a request whose priority equals `shed_below`.
    shed_at_prob: AtomicU32,
    /// In-flight cap from advice; 0 = none.
    max_in_flight: AtomicU32,
    /// Admit fraction (f32 bits), for the exporter's recomputation.
    admit_bits: AtomicU32,
    full: Mutex<Option<Advice>>,
}

/// One decision read from the cell.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdviceView {
    pub(crate) valid: bool,
    pub(crate) shed_below: u32,
    pub(crate) shed_at_prob: u32,
    pub(crate) max_in_flight: u32,
}

impl Default for AdviceCell {
    fn default() -> Self {
        Self {
            expires_at: AtomicU64::new(0),
            expires: minstant::Atomic::new(Instant::ZERO),
            shed_below: AtomicU32::new(0),
            shed_at_prob: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
            admit_bits: AtomicU32::new(0),
            full: Mutex::new(None),
        }
    }
}

impl AdviceCell {
    /// The decision at clock instant `now`.
    #[inline]
    pub(crate) fn view(&self, now: Instant) -> AdviceView {
        if now >= self.expires.load(Ordering::Relaxed) {
            return AdviceView {
                valid: false,
                shed_below: 0,
                shed_at_prob: 0,
                max_in_flight: 0,
            };
        }
        AdviceView {
            valid: true,
            shed_below: self.shed_below.load(Ordering::Relaxed),
            shed_at_prob: self.shed_at_prob.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
        }
    }

    /// Whether any advice was ever stored.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.expires_at.load(Ordering::Relaxed) != 0
    }

    /// Stores new advice and the shedding threshold for the given priority distribution;
    /// `anchor` converts its unix expiry to a clock instant.
    pub(crate) fn store(&self, advice: Advice, priorities: &[u64; 256], anchor: &Anchor) {
        let (below, prob) = shed_threshold(advice.admit_fraction, priorities);
        self.shed_below.store(below, Ordering::Relaxed);
        self.shed_at_prob.store(prob, Ordering::Relaxed);
        self.max_in_flight
            .store(advice.max_in_flight.unwrap_or(0), Ordering::Relaxed);
        self.admit_bits
            .store(advice.admit_fraction.to_bits(), Ordering::Relaxed);
        self.expires_at
            .store(advice.expires_at_unix_ns, Ordering::Relaxed);
        let now = clock::now();
        let now_unix = now.as_unix_nanos(anchor);
        let expires = match advice.expires_at_unix_ns.checked_sub(now_unix) {
            // Capped at about 36 years, far enough to mean "never" and to fit any clock.
            Some(left) if left > 0 => now
                .checked_add(Duration::from_nanos(left.min(1 << 60)))
                .unwrap_or(Instant::ZERO),
            _ => Instant::ZERO,
        };
        self.expires.store(expires, Ordering::Relaxed);
        match self.full.lock() {
            Ok(mut g) => *g = Some(advice),
            Err(p) => *p.into_inner() = Some(advice),
        }
    }

    /// Recomputes the threshold for a new priority distribution, keeping the advice.
    pub(crate) fn retarget(&self, priorities: &[u64; 256]) {
        if !self.is_set() {
            return;
        }
        let admit = f32::from_bits(self.admit_bits.load(Ordering::Relaxed));
        let (below, prob) = shed_threshold(admit, priorities);
        self.shed_below.store(below, Ordering::Relaxed);
        self.shed_at_prob.store(prob, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<Advice> {
        match self.full.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// The class below which everything is shed and the shedding probability within that class, so
/// that `1 - admit` of the requests (by the observed priority mix) are shed, lowest first. A
/// non-finite `admit` (advice stored directly, not converted from a reply) admits everything.
pub(crate) fn shed_threshold(admit: f32, priorities: &[u64; 256]) -> (u32, u32) {
    let shed_frac = f64::from(1.0 - finite_or(admit, 1.0).clamp(0.0, 1.0));
    if shed_frac <= 0.0 {
        return (0, 0);
    }
    let total: u64 = priorities.iter().sum();
    if total == 0 {
        // No mix observed: assume every request has the default priority.
        return (u32::from(DEFAULT_PRIORITY), prob_u32(shed_frac));
    }
    let target = shed_frac * total as f64;
    let mut below = 0.0;
    for (class, &n) in priorities.iter().enumerate() {
        let n = n as f64;
        if n > 0.0 && below + n >= target {
            let p = ((target - below) / n).clamp(0.0, 1.0);
            return (u32::try_from(class).unwrap_or(255), prob_u32(p));
        }
        below += n;
    }
    (256, 0) // shed everything
}

fn prob_u32(p: f64) -> u32 {
    if p >= 1.0 {
        u32::MAX
    } else {
        (p * f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_priorities_shed_by_probability() {
        let (below, prob) = shed_threshold(0.7, &[0; 256]);
        assert_eq!(below, u32::from(DEFAULT_PRIORITY));
        assert!((f64::from(prob) / f64::from(u32::MAX) - 0.3).abs() < 1e-6);
        assert_eq!(shed_threshold(1.0, &[0; 256]), (0, 0));
    }

    #[test]
    fn non_finite_admit_fraction_fails_open() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let a = Advice::from(AdviceReply {
                risk: bad,
                admit_fraction: bad,
                ..AdviceReply::default()
            });
            assert_eq!(a.admit_fraction, 1.0, "{bad}");
            assert_eq!(a.risk, 0.0, "{bad}");
            let mut mix = [0u64; 256];
            mix[10] = 5;
            assert_eq!(shed_threshold(bad, &mix), (0, 0), "{bad}");
            assert_eq!(shed_threshold(bad, &[0; 256]), (0, 0), "{bad}");
        }
        // Finite values are clamped as before.
        let a = Advice::from(AdviceReply {
            risk: 2.0,
            admit_fraction: -1.0,
            ..AdviceReply::default()
        });
        assert_eq!((a.risk, a.admit_fraction), (1.0, 0.0));
    }

    #[test]
    fn nan_advice_sheds_nothing_at_admission() {
        let recorder = crate::Builder::new("svc").build_recorder();
        let far = u64::MAX / 2;
        recorder.set_advice(Advice::from(AdviceReply {
            admit_fraction: f32::NAN,
            expires_at_unix_ns: far,
            ..AdviceReply::default()
        }));
        let ep = recorder.endpoint("GET", "/");
        // Every priority, the lowest included, is admitted.
        for priority in [0, DEFAULT_PRIORITY, u8::MAX] {
            let span = recorder.begin_server(ep, None, clock::now(), Duration::ZERO, priority);
            assert!(span.is_ok(), "priority {priority}");
        }
    }

    #[test]
    fn lowest_priority_first() {
        let mut mix = [0u64; 256];
        mix[10] = 50; // half the traffic is low priority
        mix[200] = 50;
        // shed 25%: half of class 10
        let (below, prob) = shed_threshold(0.75, &mix);
        assert_eq!(below, 10);
        assert!((f64::from(prob) / f64::from(u32::MAX) - 0.5).abs() < 1e-6);
        // shed 60%: all of class 10 and a fifth of class 200
        let (below, prob) = shed_threshold(0.4, &mix);
        assert_eq!(below, 200);
        assert!((f64::from(prob) / f64::from(u32::MAX) - 0.2).abs() < 1e-6);
    }
}
