//! The [time, service, feature] ring: the last N closed ticks of per-service features.

use std::collections::VecDeque;

use crate::predict::FEATURES;

#[derive(Debug, Clone)]
struct Slot {
    tick: u64,
    services: Vec<String>,
    features: Vec<f32>,
}

/// A bounded ring of closed ticks. Services may differ between ticks; [`FeatureRing::tensor`]
/// aligns them.
#[derive(Debug, Clone)]
pub struct FeatureRing {
    slots: VecDeque<Slot>,
    capacity: usize,
}

/// A dense `[time, service, feature]` block cut from the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tick of each time step, oldest first.
    pub ticks: Vec<u64>,
    /// Services (union over the steps, sorted).
    pub services: Vec<String>,
    /// `ticks.len() * services.len() * FEATURES.len()` values; `NaN` where a service had no
    /// row in a tick.
    pub values: Vec<f32>,
}

impl FeatureRing {
    /// A ring of `capacity` ticks.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
        }
    }

    /// Appends a closed tick (`features` row-major, `FEATURES.len()` per service).
    pub fn push(&mut self, tick: u64, services: &[String], features: &[f32]) {
        if self.slots.len() == self.capacity {
            self.slots.pop_front();
        }
        self.slots.push_back(Slot {
            tick,
            services: services.to_vec(),
            features: features.to_vec(),
        });
    }

    /// Ticks held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The last `n` ticks as a dense tensor.
    pub fn tensor(&self, n: usize) -> Tensor {
        let skip = self.slots.len().saturating_sub(n);
        let steps: Vec<&Slot> = self.slots.iter().skip(skip).collect();
        let mut services: Vec<String> = steps
            .iter()
            .flat_map(|s| s.services.iter().cloned())
            .collect();
        services.sort();
        services.dedup();
        let width = FEATURES.len();
        let mut values = vec![f32::NAN; steps.len() * services.len() * width];
        for (t, slot) in steps.iter().enumerate() {
            for (i, svc) in slot.services.iter().enumerate() {
                let Ok(j) = services.binary_search(svc) else {
                    continue;
                };
                let src = slot.features.get(i * width..(i + 1) * width);
                let dst_at = (t * services.len() + j) * width;
                if let (Some(src), Some(dst)) = (src, values.get_mut(dst_at..dst_at + width)) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Tensor {
            ticks: steps.iter().map(|s| s.tick).collect(),
            services,
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_services_that_come_and_go() {
        let w = FEATURES.len();
        let mut r = FeatureRing::new(2);
        r.push(1, &["a".into()], &vec![1.0; w]);
        r.push(2, &["b".into()], &vec![2.0; w]);
        r.push(
            3,
            &["a".into(), "b".into()],
            &[vec![3.0; w], vec![4.0; w]].concat(),
        );
        assert_eq!(r.len(), 2);
        let t = r.tensor(10);
        assert_eq!(t.ticks, vec![2, 3]);
        assert_eq!(t.services, vec!["a".to_string(), "b".to_string()]);
        assert!(t.values[0].is_nan());
        assert_eq!(t.values[w], 2.0);
        assert_eq!(t.values[2 * w], 3.0);
        assert_eq!(t.values[3 * w], 4.0);
    }
}
