//! QoS evaluation: a percentile over a sliding window of ticks per entry endpoint, violation
//! ticks, and violation episodes with gap merging.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::QosSpec;
use seer_proto::Histogram;

/// A violation episode: a maximal run of violation ticks, merging gaps shorter than the
/// configured number of ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Stable id: `episode-<start tick>`.
    pub id: String,
    /// First violation tick.
    pub start_tick: u64,
    /// Last violation tick so far.
    pub end_tick: u64,
    /// Whether the episode may still grow.
    pub open: bool,
    /// Violation ticks in the episode.
    pub violation_ticks: u64,
    /// Worst windowed percentile seen, milliseconds.
    pub peak_ms: f64,
    /// The QoS target that was exceeded first (`service endpoint`).
    pub target: String,
    /// Culprit at the episode start (ground truth or critical-path attribution).
    pub culprit: Option<String>,
}

/// The evaluator's verdict for one tick.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QosVerdict {
    /// Some target's windowed percentile exceeded it.
    pub violation: bool,
    /// An episode began in this tick.
    pub episode_start: bool,
    /// Windowed percentile per spec, milliseconds (`NaN` without data).
    pub values_ms: Vec<f64>,
    /// An episode that closed in this tick (its gap ran out).
    pub closed: Option<Episode>,
    /// The open episode after this tick.
    pub current: Option<Episode>,
}

#[derive(Debug)]
struct SpecState {
    spec: QosSpec,
    window_ticks: usize,
    ring: VecDeque<Histogram>,
}

/// Evaluates every QoS spec once per closed tick.
#[derive(Debug)]
pub struct QosEvaluator {
    specs: Vec<SpecState>,
    gap_ticks: u64,
    episode: Option<Episode>,
}

impl QosEvaluator {
    /// An evaluator for `specs` with ticks of `tick_ns`; gaps shorter than `gap_ticks` merge.
    pub fn new(specs: &[QosSpec], tick_ns: u64, gap_ticks: u32) -> Self {
        Self {
            specs: specs
                .iter()
                .map(|s| SpecState {
                    window_ticks: usize::try_from(
                        (s.window_ms.saturating_mul(1_000_000) / tick_ns.max(1)).max(1),
                    )
                    .unwrap_or(10)
                    .min(10_000),
                    spec: s.clone(),
                    ring: VecDeque::new(),
                })
                .collect(),
            gap_ticks: u64::from(gap_ticks),
            episode: None,
        }
    }

    /// The specs, in order.
    pub fn specs(&self) -> impl Iterator<Item = &QosSpec> {
        self.specs.iter().map(|s| &s.spec)
    }

    /// Whether `spec` `i` covers (service, endpoint).
    pub fn matches(&self, i: usize, service: &str, endpoint: &str) -> bool {
        self.specs.get(i).is_some_and(|s| {
            s.spec.service == service && s.spec.endpoint.as_deref().is_none_or(|e| e == endpoint)
        })
    }

    /// Number of specs.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether there are no specs.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The slow threshold for a trace whose root is (service, endpoint), ns.
    pub fn target_ns(&self, service: &str, endpoint: &str) -> Option<u64> {
        self.specs
            .iter()
            .enumerate()
            .find(|(i, _)| self.matches(*i, service, endpoint))
            .map(|(_, s)| (s.spec.target_ms * 1e6) as u64)
    }

    /// Folds one closed tick: `latency[i]` is the tick's latency histogram for spec `i`.
    pub fn close_tick(
        &mut self,
        tick: u64,
        latency: Vec<Histogram>,
        culprit: Option<&str>,
    ) -> QosVerdict {
        let mut verdict = QosVerdict::default();
        let mut first_violated: Option<String> = None;
        let mut worst = 0.0_f64;
        let mut hists = latency.into_iter();
        for st in &mut self.specs {
            st.ring.push_back(hists.next().unwrap_or_default());
            while st.ring.len() > st.window_ticks {
                st.ring.pop_front();
            }
            let mut merged = Histogram::new_latency();
            for h in &st.ring {
                let _ = merged.merge(h);
            }
            let v = if merged.is_empty() {
                f64::NAN
            } else {
                merged.quantile_ns(st.spec.percentile) as f64 / 1e6
            };
            verdict.values_ms.push(v);
            if v > st.spec.target_ms {
                verdict.violation = true;
                worst = worst.max(v);
                first_violated.get_or_insert_with(|| {
                    format!(
                        "{} {}",
                        st.spec.service,
                        st.spec.endpoint.as_deref().unwrap_or("*")
                    )
                });
            }
        }
        // Close an episode whose gap ran out.
        if let Some(ep) = &self.episode
            && !verdict.violation
            && tick.saturating_sub(ep.end_tick) >= self.gap_ticks.max(1)
        {
            let mut ep = ep.clone();
            ep.open = false;
            verdict.closed = Some(ep);
            self.episode = None;
        }
        if verdict.violation {
            match &mut self.episode {
                Some(ep) => {
                    ep.end_tick = tick;
                    ep.violation_ticks += 1;
                    ep.peak_ms = ep.peak_ms.max(worst);
                    if ep.culprit.is_none() {
                        ep.culprit = culprit.map(str::to_owned);
                    }
                }
                None => {
                    verdict.episode_start = true;
                    self.episode = Some(Episode {
                        id: format!("episode-{tick}"),
                        start_tick: tick,
                        end_tick: tick,
                        open: true,
                        violation_ticks: 1,
                        peak_ms: worst,
                        target: first_violated.unwrap_or_default(),
                        culprit: culprit.map(str::to_owned),
                    });
                }
            }
        }
        verdict.current = self.episode.clone();
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ms: &[u64]) -> Histogram {
        let mut h = Histogram::new_latency();
        for m in ms {
            h.record_ns(m * 1_000_000);
        }
        h
    }

    fn spec() -> QosSpec {
        QosSpec {
            service: "fe".into(),
            endpoint: Some("POST /compose".into()),
            percentile: 0.99,
            target_ms: 100.0,
            window_ms: 300,
        }
    }

    #[test]
    fn sliding_window_episodes_and_gap_merging() {
        let mut q = QosEvaluator::new(&[spec()], 100_000_000, 3);
        assert!(q.matches(0, "fe", "POST /compose") && !q.matches(0, "fe", "GET /"));
        let v = q.close_tick(1, vec![h(&[10, 20])], None);
        assert!(!v.violation && !v.episode_start);
        let v = q.close_tick(2, vec![h(&[500])], Some("c"));
        assert!(v.violation && v.episode_start);
        // The slow value stays in the 3-tick window for two more ticks.
        assert!(q.close_tick(3, vec![h(&[10])], None).violation);
        assert!(q.close_tick(4, vec![h(&[10])], None).violation);
        let v = q.close_tick(5, vec![h(&[10])], None);
        assert!(
            !v.violation && v.closed.is_none(),
            "gap of 1 < 3 keeps it open"
        );
        // A violation within the gap continues the same episode.
        let v = q.close_tick(6, vec![h(&[400])], None);
        assert!(v.violation && !v.episode_start);
        let mut closed = None;
        for t in 7..15 {
            if let Some(e) = q.close_tick(t, vec![h(&[10])], None).closed {
                closed = Some(e);
                break;
            }
        }
        let e = closed.expect("episode closes after the gap");
        assert_eq!(e.start_tick, 2);
        assert_eq!(e.end_tick, 8);
        assert_eq!(e.culprit.as_deref(), Some("c"));
        assert!(e.peak_ms >= 400.0);
    }

    #[test]
    fn no_data_is_no_violation() {
        let mut q = QosEvaluator::new(&[spec()], 100_000_000, 3);
        let v = q.close_tick(1, vec![], None);
        assert!(!v.violation);
        assert!(v.values_ms[0].is_nan());
    }
}
