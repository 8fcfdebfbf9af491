//! The replay buffer: matured samples in two pools, so violations can be upsampled.

use std::collections::VecDeque;

use rand::Rng;
use rand::rngs::StdRng;

/// One matured training sample: the window ending at frame `seq`, and its labels.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) seq: u64,
    /// A violation within the horizon.
    pub(crate) global: bool,
    /// Per service row of the end frame: this service was the culprit.
    pub(crate) services: Vec<f32>,
    /// Whether the per-service labels are known (a violation without a culprit trains only the
    /// global head).
    pub(crate) culprit_known: bool,
}

/// Two FIFO pools (violation / healthy), each holding the newest `capacity` samples.
#[derive(Debug)]
pub(crate) struct Replay {
    positive: VecDeque<Sample>,
    negative: VecDeque<Sample>,
    capacity: usize,
}

impl Replay {
    pub(crate) fn new(capacity: usize) -> Self {
        Replay {
            positive: VecDeque::new(),
            negative: VecDeque::new(),
            capacity,
        }
    }

    pub(crate) fn push(&mut self, sample: Sample) {
        let pool = if sample.global {
            &mut self.positive
        } else {
            &mut self.negative
        };
        if pool.len() == self.capacity {
            pool.pop_front();
        }
        pool.push_back(sample);
    }

    /// Forgets samples whose window is no longer fully in the history.
    pub(crate) fn drop_before(&mut self, seq: u64) {
        for pool in [&mut self.positive, &mut self.negative] {
            while pool.front().is_some_and(|s| s.seq < seq) {
                pool.pop_front();
            }
        }
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        (self.positive.len(), self.negative.len())
    }

    /// `n` samples, a `positive_fraction` share of them violations (when there are any),
    /// drawn uniformly with replacement within each pool.
    pub(crate) fn sample(
        &self,
        rng: &mut StdRng,
        n: usize,
        positive_fraction: f64,
    ) -> Vec<&Sample> {
        let (p, q) = (self.positive.len(), self.negative.len());
        if p + q == 0 {
            return Vec::new();
        }
        let mut from_pos = if p == 0 {
            0
        } else if q == 0 {
            n
        } else {
            ((n as f64 * positive_fraction).round() as usize).min(n)
        };
        if from_pos == 0 && p > 0 && positive_fraction > 0.0 && n > 1 {
            from_pos = 1;
        }
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let s = if k < from_pos {
                &self.positive[rng.random_range(0..p)]
            } else {
                &self.negative[rng.random_range(0..q)]
            };
            out.push(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn s(seq: u64, global: bool) -> Sample {
        Sample {
            seq,
            global,
            services: vec![],
            culprit_known: true,
        }
    }

    #[test]
    fn violations_are_upsampled_and_old_samples_dropped() {
        let mut r = Replay::new(100);
        r.push(s(1, true));
        for k in 2..90 {
            r.push(s(k, false));
        }
        let mut rng = StdRng::seed_from_u64(1);
        let batch = r.sample(&mut rng, 10, 0.5);
        assert_eq!(batch.iter().filter(|s| s.global).count(), 5);
        r.drop_before(10);
        assert_eq!(r.len(), (0, 80));
        for k in 0..200 {
            r.push(s(100 + k, false));
        }
        assert_eq!(r.len(), (0, 100), "bounded");
    }
}
