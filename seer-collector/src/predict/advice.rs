//! The advice policy: from a tick's predictions to what each service is told in the reply to
//! its window post.
//!
//! | situation (risk `r` of the service, alarm threshold `T`, default 0.5) | `admit_fraction` | `max_in_flight` |
//! |---|---|---|
//! | `r < T` and no alarm elsewhere | 1.0 | none |
//! | `r >= T` (the service itself is at risk) | `1 - (r - T) / (1 - T) * (1 - min_admit)`; default `min_admit` 0.5, so 0.5 at `r = 1` | `ceil(healthy_local_inflight * (1 + 2 (1 - r)))`, at least 1, when a healthy baseline is known |
//! | an entry service (named in the QoS spec) while another service is the culprit with global risk `g >= T` | `1 - (g - T) / (1 - T) * (1 - min_entry_admit)`; default `min_entry_admit` 0.7 | none |
//!
//! `culprit` is true for the single service with the highest risk at or above `T`. Advice
//! expires `ttl_ticks` ticks (default 3) after it is published, so a collector that goes quiet
//! fails open: the SDK then admits everything. The reactive rule's risk is a
//! smoothed score rather than a calibrated probability; the same policy applies to both.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::PredictionSet;

/// Tunables of [`AdvicePolicy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdviceConfig {
    /// Risk at or above which a service is alarmed (`T`).
    pub threshold: f32,
    /// Admit fraction of an alarmed service at risk 1.
    pub min_admit: f32,
    /// Admit fraction of an entry service when the global risk is 1 and the culprit is elsewhere.
    pub min_entry_admit: f32,
    /// Ticks the advice holds.
    pub ttl_ticks: u32,
}

impl Default for AdviceConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_admit: 0.5,
            min_entry_admit: 0.7,
            ttl_ticks: 3,
        }
    }
}

/// The advice for one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// Service name.
    pub service: String,
    /// Risk (0..1) that this service causes a QoS violation within the horizon.
    pub risk: f32,
    /// Whether the service is the named culprit.
    pub culprit: bool,
    /// Fraction of requests to admit (0..1).
    pub admit_fraction: f32,
    /// Cap on requests in flight, when one is advised.
    pub max_in_flight: Option<u32>,
    /// Why.
    pub reason: String,
    /// Model version that produced the prediction (0 for the reactive baseline).
    pub model_version: u64,
    /// Tick the advice was computed for.
    pub tick: u64,
    /// Expiry, unix nanoseconds.
    pub expires_at_unix_ns: u64,
}

impl Advice {
    /// The fail-open advice for a service nobody has predicted for yet.
    pub fn admit_all(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            risk: 0.0,
            culprit: false,
            admit_fraction: 1.0,
            max_in_flight: None,
            reason: "no prediction for this service".to_owned(),
            model_version: 0,
            tick: 0,
            expires_at_unix_ns: 0,
        }
    }

    /// The wire form sent back to the SDK.
    pub fn to_reply(&self) -> seer_proto::AdviceReply {
        seer_proto::AdviceReply {
            version: seer_proto::WIRE_VERSION,
            service: self.service.clone(),
            risk: self.risk,
            culprit: self.culprit,
            admit_fraction: self.admit_fraction,
            max_in_flight: self.max_in_flight,
            reason: self.reason.clone(),
            model_version: self.model_version,
            expires_at_unix_ns: self.expires_at_unix_ns,
        }
    }
}

/// Per-tick context the policy needs beyond the predictions.
#[derive(Debug, Clone, Copy)]
pub struct AdviceContext<'a> {
    /// Tick start, unix nanoseconds.
    pub tick_start_unix_ns: u64,
    /// Now (when the advice is published), unix nanoseconds: expiry counts from here.
    pub now_unix_ns: u64,
    /// Tick length, nanoseconds.
    pub tick_ns: u64,
    /// Services named as entries in the QoS spec.
    pub entries: &'a HashSet<String>,
    /// Local in-flight mean per service this tick (same order as the prediction's services),
    /// `NaN` when unknown.
    pub local_inflight: &'a [f32],
}

/// Maps predictions to advice (see the module docs for the table). Keeps a healthy baseline of
/// each service's local in-flight count to size `max_in_flight`.
#[derive(Debug, Clone, Default)]
pub struct AdvicePolicy {
    config: AdviceConfig,
    healthy_inflight: HashMap<String, f64>,
}

impl AdvicePolicy {
    /// A policy with the given tunables.
    pub fn new(config: AdviceConfig) -> Self {
        Self {
            config,
            healthy_inflight: HashMap::new(),
        }
    }

    /// The tunables in use.
    pub fn config(&self) -> &AdviceConfig {
        &self.config
    }

    /// Computes every service's advice for one tick.
    pub fn advise(&mut self, set: &PredictionSet, ctx: &AdviceContext<'_>) -> Vec<Advice> {
        let t = self.config.threshold.clamp(0.01, 0.99);
        let culprit = set
            .services
            .iter()
            .filter(|s| s.risk >= t)
            .max_by(|a, b| a.risk.total_cmp(&b.risk))
            .map(|s| s.service.clone());
        let expires = ctx
            .now_unix_ns
            .max(ctx.tick_start_unix_ns)
            .saturating_add(ctx.tick_ns.saturating_mul(u64::from(self.config.ttl_ticks)));
        let global = set.global_risk.clamp(0.0, 1.0);
        let mut out = Vec::with_capacity(set.services.len());
        for (i, p) in set.services.iter().enumerate() {
            let risk = if p.risk.is_finite() {
                p.risk.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let inflight = ctx
                .local_inflight
                .get(i)
                .copied()
                .filter(|v| v.is_finite())
                .map(f64::from);
            if risk < t
                && let Some(v) = inflight
            {
                let b = self.healthy_inflight.entry(p.service.clone()).or_insert(v);
                *b += 0.05 * (v - *b);
            }
            let is_culprit = culprit.as_deref() == Some(p.service.as_str());
            let (admit, cap, reason) = if risk >= t {
                let over = (risk - t) / (1.0 - t);
                let admit = 1.0 - over * (1.0 - self.config.min_admit.clamp(0.0, 1.0));
                let cap = self.healthy_inflight.get(&p.service).map(|b| {
                    let c = (b * (1.0 + 2.0 * f64::from(1.0 - risk))).ceil();
                    c.clamp(1.0, f64::from(u32::MAX)) as u32
                });
                (
                    admit,
                    cap,
                    format!(
                        "{} at risk {risk:.2} (model {}): shed to {admit:.2}",
                        if is_culprit { "culprit" } else { "service" },
                        set.model_version
                    ),
                )
            } else if ctx.entries.contains(&p.service) && global >= t && culprit.is_some() {
                let over = (global - t) / (1.0 - t);
                let admit = 1.0 - over * (1.0 - self.config.min_entry_admit.clamp(0.0, 1.0));
                (
                    admit,
                    None,
                    format!(
                        "entry shedding: culprit {} at risk {global:.2}",
                        culprit.as_deref().unwrap_or("?")
                    ),
                )
            } else {
                (1.0, None, "healthy".to_owned())
            };
            out.push(Advice {
                service: p.service.clone(),
                risk,
                culprit: is_culprit,
                admit_fraction: admit.clamp(0.0, 1.0),
                max_in_flight: cap,
                reason,
                model_version: set.model_version,
                tick: set.tick,
                expires_at_unix_ns: expires,
            });
        }
        if self.healthy_inflight.len() > 4096 {
            self.healthy_inflight
                .retain(|k, _| set.services.iter().any(|s| &s.service == k));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::{Mode, ServicePrediction};

    fn set(risks: &[(&str, f32)]) -> PredictionSet {
        PredictionSet {
            tick: 7,
            mode: Mode::Fallback,
            model_version: 0,
            global_risk: risks.iter().map(|r| r.1).fold(0.0, f32::max),
            services: risks
                .iter()
                .map(|(s, r)| ServicePrediction {
                    service: (*s).into(),
                    risk: *r,
                })
                .collect(),
            precision: None,
            recall: None,
        }
    }

    #[test]
    fn table_rows_hold() {
        let mut p = AdvicePolicy::default();
        let entries: HashSet<String> = ["fe".to_string()].into();
        let ctx = AdviceContext {
            tick_start_unix_ns: 1_000,
            now_unix_ns: 1_100,
            tick_ns: 100,
            entries: &entries,
            local_inflight: &[2.0, 4.0, 1.0],
        };
        // Healthy: learns baselines.
        for _ in 0..5 {
            let a = p.advise(&set(&[("fe", 0.1), ("c", 0.1), ("d", 0.0)]), &ctx);
            assert!(
                a.iter()
                    .all(|a| a.admit_fraction == 1.0 && a.max_in_flight.is_none())
            );
        }
        let a = p.advise(&set(&[("fe", 0.1), ("c", 1.0), ("d", 0.6)]), &ctx);
        assert!(a[1].culprit && !a[2].culprit && !a[0].culprit);
        assert!((a[1].admit_fraction - 0.5).abs() < 1e-6);
        assert_eq!(a[1].max_in_flight, Some(4));
        assert!(a[2].admit_fraction < 1.0 && a[2].admit_fraction > 0.5);
        assert!(
            (a[0].admit_fraction - 0.7).abs() < 1e-6,
            "entry sheds gently"
        );
        assert_eq!(a[0].expires_at_unix_ns, 1_100 + 3 * 100);
        let reply = a[1].to_reply();
        assert_eq!(reply.version, seer_proto::WIRE_VERSION);
        assert!(reply.culprit);
    }

    #[test]
    fn nan_risk_is_healthy() {
        let mut p = AdvicePolicy::default();
        let entries = HashSet::new();
        let ctx = AdviceContext {
            tick_start_unix_ns: 0,
            now_unix_ns: 0,
            tick_ns: 100,
            entries: &entries,
            local_inflight: &[],
        };
        let a = p.advise(&set(&[("x", f32::NAN)]), &ctx);
        assert_eq!(a[0].admit_fraction, 1.0);
        assert_eq!(a[0].risk, 0.0);
    }
}
