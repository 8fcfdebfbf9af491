//! The reactive baseline the model must beat: a port of the collector's default reactive rule
//! (`seer-collector`'s `ReactivePredictor`; this crate may not depend on the collector).
//!
//! Per service: an own-queue term (queue depth at least 0.5 and up to 3x the largest other
//! service's queue scores 0..1) and a self-latency term (self p99 over its own healthy EWMA
//! baseline, divided by the median of the other services' ratios, up to 3x scores 0..1); the
//! raw score is `max(queue, 0.8 * latency)`, smoothed with weight 0.5 per tick. The global risk
//! is the largest service risk.

/// The rule's state.
#[derive(Debug, Clone)]
pub struct Reactive {
    baseline: Vec<Option<f64>>,
    seen: Vec<u32>,
    risk: Vec<f64>,
}

const QUEUE_FLOOR: f64 = 0.5;
const QUEUE_RATIO: f64 = 3.0;
const LATENCY_RATIO: f64 = 3.0;
const ALPHA: f64 = 0.05;
const SMOOTHING: f64 = 0.5;
const WARMUP: u32 = 20;

impl Reactive {
    /// A rule for `services` services.
    pub fn new(services: usize) -> Self {
        Reactive {
            baseline: vec![None; services],
            seen: vec![0; services],
            risk: vec![0.0; services],
        }
    }

    /// Scores one tick: `queues` (own queue depth) and `self_p99` (self latency p99, ms) per
    /// service. Returns the per-service risks.
    pub fn observe(&mut self, queues: &[f64], self_p99: &[f64]) -> Vec<f32> {
        let n = queues.len();
        let ratios: Vec<Option<f64>> = (0..n)
            .map(|i| {
                if self.seen[i] < WARMUP {
                    return None;
                }
                Some(self_p99[i] / self.baseline[i]?.max(0.05))
            })
            .collect();
        let mut raw = Vec::with_capacity(n);
        for i in 0..n {
            let others_max = (0..n)
                .filter(|j| *j != i)
                .map(|j| queues[j])
                .fold(0.0, f64::max);
            let queue_term = if queues[i] >= QUEUE_FLOOR {
                let rel = queues[i] / others_max.max(QUEUE_FLOOR / 2.0);
                ((rel - 1.0) / (QUEUE_RATIO - 1.0)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let latency_term = match ratios[i] {
                Some(r) => {
                    let mut others: Vec<f64> = (0..n)
                        .filter(|j| *j != i)
                        .filter_map(|j| ratios[j])
                        .collect();
                    others.sort_by(f64::total_cmp);
                    let median = others.get(others.len() / 2).copied().unwrap_or(1.0);
                    (((r / median.max(1.0)) - 1.0) / (LATENCY_RATIO - 1.0)).clamp(0.0, 1.0)
                }
                None => 0.0,
            };
            raw.push(queue_term.max(0.8 * latency_term));
        }
        for i in 0..n {
            self.seen[i] = self.seen[i].saturating_add(1);
            let alpha = if self.seen[i] <= WARMUP {
                1.0 / f64::from(self.seen[i])
            } else {
                ALPHA
            };
            if raw[i] < 0.5 {
                self.baseline[i] = Some(match self.baseline[i] {
                    Some(b) => b + alpha * (self_p99[i] - b),
                    None => self_p99[i],
                });
            }
            self.risk[i] += SMOOTHING * (raw[i] - self.risk[i]);
        }
        self.risk.iter().map(|r| r.clamp(0.0, 1.0) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_queue_alarms_and_a_shared_one_does_not() {
        let mut r = Reactive::new(3);
        for _ in 0..30 {
            r.observe(&[0.1, 0.1, 0.1], &[2.0, 2.0, 2.0]);
        }
        let shared = r.observe(&[5.0, 5.0, 5.0], &[6.0, 6.0, 6.0]);
        assert!(shared.iter().all(|x| *x < 0.5), "{shared:?}");
        r.observe(&[8.0, 0.2, 0.2], &[2.0, 2.0, 2.0]);
        let lone = r.observe(&[8.0, 0.2, 0.2], &[2.0, 2.0, 2.0]);
        assert!(lone[0] >= 0.5 && lone[1] < 0.5, "{lone:?}");
    }
}
