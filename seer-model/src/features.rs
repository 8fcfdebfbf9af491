//! Model input: one tick of per-service features, online normalisation, and the frame history
//! that windows are cut from.
//!
//! Each feature value `v` goes through these steps:
//!
//! 1. `ln(1 + max(v, 0))`: queues and latencies are heavy-tailed and non-negative.
//! 2. A running mean and variance per feature over all services (exponentially weighted with
//!    weight `max(1/n, 1e-3)`; values beyond 4 sd are left out of the update, so a long fault
//!    does not inflate the healthy variance), giving `z`, clipped to `[-8, 8]`.
//! 3. The deviation `d` of `z` from the service's own slow baseline (an exponentially weighted
//!    mean of its `z`, time constant about 500 ticks, leaving out ticks more than 2 units off): a
//!    service whose queue creeps up stands out against its own normal, whatever that normal is.
//!    `d` carries no service identity, so the shared weights cannot learn "service X is risky".
//! 4. That deviation relative to the other services in the same tick: `d - median(d)`. A
//!    machine-wide stall raises every service's queue at once and cancels here; a service whose
//!    own queue grows alone stands out.
//!
//! Each tick row thus holds `3F + 1` channels: `F` values `z`, `F` relative deviations, `F` own
//! deviations `d`, and a presence flag (0 for ticks in the window before the service existed).
//! Missing values (`NaN`) and features absent from the tick read as the running mean.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// One tick of aligned per-service features: the model's input.
///
/// Row `i` of `features` belongs to `services[i]`; columns are named by `feature_names`. The model
/// picks its configured feature set out of these columns by name, so extra columns are ignored
/// and missing ones read as unknown.
#[derive(Debug, Clone, Copy)]
pub struct TickFeatures<'a> {
    /// Tick index (monotonic; gaps are allowed).
    pub tick: u64,
    /// Service names. The set may change from tick to tick.
    pub services: &'a [String],
    /// `services.len() * feature_names.len()` values, row-major; `NaN` = missing.
    pub features: &'a [f32],
    /// Column names of `features`.
    pub feature_names: &'a [&'a str],
    /// Call-graph edges, caller -> callee, as indices into `services`.
    pub edges: &'a [(usize, usize)],
    /// Node-level counters (name -> value) for resource diagnosis, e.g. `psi_memory_some`,
    /// `llc_mpki`, `net_retransmits_per_s`. Empty when unknown.
    pub node: &'a [(&'a str, f32)],
}

impl TickFeatures<'_> {
    /// Value of column `name` for service row `row`, if present and finite.
    pub fn value(&self, row: usize, name: &str) -> Option<f32> {
        let col = self.feature_names.iter().position(|n| *n == name)?;
        let v = *self.features.get(row * self.feature_names.len() + col)?;
        v.is_finite().then_some(v)
    }
}

/// Exponentially weighted running mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Running {
    pub(crate) n: u64,
    pub(crate) mean: f64,
    pub(crate) var: f64,
}

const MIN_WEIGHT: f64 = 1e-3;
const CLIP: f32 = 8.0;
/// Values further than this many standard deviations from the mean are left out of the update
/// once the statistics have settled, so a long fault does not inflate the healthy variance.
const WINSOR: f64 = 4.0;
/// Weight of a new tick in a service's own baseline (time constant of about 50 s).
const OWN_WEIGHT: f32 = 2e-3;
/// Deviations (in z units) beyond which a tick is left out of a service's own baseline.
const OWN_SKIP: f32 = 2.0;
/// Services not seen for this many ticks are forgotten by the normaliser.
const FORGET_TICKS: u64 = 100_000;

impl Running {
    pub(crate) fn update(&mut self, x: f64) {
        if self.n > 100 && (x - self.mean).abs() > WINSOR * (self.var + 1e-4).sqrt() {
            return;
        }
        self.n += 1;
        let w = (1.0 / self.n as f64).max(MIN_WEIGHT);
        let d = x - self.mean;
        self.mean += w * d;
        self.var = (1.0 - w) * (self.var + w * d * d);
    }

    pub(crate) fn z(&self, x: f64) -> f32 {
        if self.n < 2 {
            return 0.0;
        }
        let z = (x - self.mean) / (self.var + 1e-4).sqrt();
        (z as f32).clamp(-CLIP, CLIP)
    }
}

/// A service's own slow baseline of its normalised features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OwnBaseline {
    pub(crate) mean: Vec<f32>,
    pub(crate) n: u64,
    pub(crate) last_tick: u64,
}

/// Online normaliser (its state goes into checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Normaliser {
    pub(crate) stats: Vec<Running>,
    pub(crate) own: HashMap<String, OwnBaseline>,
}

impl Normaliser {
    pub(crate) fn new(features: usize) -> Self {
        Normaliser {
            stats: vec![Running::default(); features],
            own: HashMap::new(),
        }
    }

    /// Normalises one tick into `S x (3F + 1)` rows and updates the running statistics.
    ///
    /// Channels per row: `F` online-normalised values `z`, `F` values relative to the other
    /// services (`d - median d`, where `d` is the next channel), `F` values relative to the
    /// service's own slow baseline (`d = z - own mean`), and the presence flag.
    pub(crate) fn rows(&mut self, input: &TickFeatures<'_>, features: &[String]) -> Vec<f32> {
        let s = input.services.len();
        let f = features.len();
        let c = 3 * f + 1;
        let cols: Vec<Option<usize>> = features
            .iter()
            .map(|name| input.feature_names.iter().position(|n| n == name))
            .collect();
        let width = input.feature_names.len();
        let mut out = vec![0.0f32; s * c];
        let mut present = vec![false; s * f];
        let mut column = Vec::with_capacity(s);
        for (j, col) in cols.iter().enumerate() {
            let Some(col) = *col else { continue };
            let raw: Vec<Option<f64>> = (0..s)
                .map(|i| {
                    input
                        .features
                        .get(i * width + col)
                        .copied()
                        .filter(|v| v.is_finite())
                        .map(|v| f64::from(v.max(0.0)).ln_1p())
                })
                .collect();
            column.clear();
            for (i, t) in raw.iter().enumerate() {
                if let Some(t) = t {
                    let z = self.stats[j].z(*t);
                    out[i * c + j] = z;
                    present[i * f + j] = true;
                    column.push(z);
                }
            }
            for t in raw.iter().flatten() {
                self.stats[j].update(*t);
            }
        }
        // Deviation from each service's own baseline.
        for (i, name) in input.services.iter().enumerate() {
            let row = &mut out[i * c..(i + 1) * c];
            row[3 * f] = 1.0;
            let own = self.own.entry(name.clone()).or_insert_with(|| OwnBaseline {
                mean: row[..f].to_vec(),
                n: 0,
                last_tick: input.tick,
            });
            own.n += 1;
            own.last_tick = input.tick;
            let w = (1.0 / own.n as f32).max(OWN_WEIGHT);
            for j in 0..f {
                if !present[i * f + j] {
                    continue;
                }
                let d = row[j] - own.mean[j];
                row[2 * f + j] = d;
                // Far-off values (a fault under way) are left out, so a long fault does not drag
                // the service's normal with it and leave it looking odd once the fault is over.
                if d.abs() <= OWN_SKIP || own.n < 50 {
                    own.mean[j] += w * d;
                }
            }
        }
        // That deviation relative to the other services' (machine-wide rises cancel).
        for j in 0..f {
            column.clear();
            column.extend(
                (0..s)
                    .filter(|i| present[i * f + j])
                    .map(|i| out[i * c + 2 * f + j]),
            );
            let median = median(&mut column);
            for i in 0..s {
                if present[i * f + j] {
                    out[i * c + f + j] = out[i * c + 2 * f + j] - median;
                }
            }
        }
        if self.own.len() > 4 * s + 64 {
            let now = input.tick;
            self.own
                .retain(|_, b| now.saturating_sub(b.last_tick) < FORGET_TICKS);
        }
        out
    }
}

fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// One observed tick, normalised, with services as interned ids.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) ids: Vec<u32>,
    /// `ids.len() x channels`, row-major.
    pub(crate) rows: Vec<f32>,
    /// Caller -> callee, as row indices.
    pub(crate) edges: Vec<(usize, usize)>,
}

/// The last frames, addressed by a monotonic sequence number.
#[derive(Debug)]
pub(crate) struct History {
    frames: VecDeque<Frame>,
    /// Sequence number of `frames[0]`.
    first: u64,
    capacity: usize,
    channels: usize,
}

/// A batch of windows, ready to become tensors: `ticks x services x window x channels`, padded.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    pub(crate) ticks: usize,
    pub(crate) services: usize,
    pub(crate) x: Vec<f32>,
    /// `ticks x services`: 1 for a real service, 0 for padding.
    pub(crate) mask: Vec<f32>,
    /// `ticks x services x services`: caller -> callee.
    pub(crate) adjacency: Vec<f32>,
}

impl History {
    pub(crate) fn new(capacity: usize, channels: usize) -> Self {
        History {
            frames: VecDeque::with_capacity(capacity.min(4096)),
            first: 0,
            capacity,
            channels,
        }
    }

    /// Appends a frame and returns its sequence number.
    pub(crate) fn push(&mut self, frame: Frame) -> u64 {
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
            self.first += 1;
        }
        self.frames.push_back(frame);
        self.first + self.frames.len() as u64 - 1
    }

    /// Oldest sequence number still held.
    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    pub(crate) fn get(&self, seq: u64) -> Option<&Frame> {
        let idx = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.frames.get(idx)
    }

    /// Windows of `window` frames ending at each of `seqs`, for the services of each end frame.
    pub(crate) fn windows(&self, seqs: &[u64], window: usize) -> Windows {
        let c = self.channels;
        let ends: Vec<Option<&Frame>> = seqs.iter().map(|s| self.get(*s)).collect();
        let s_max = ends
            .iter()
            .map(|f| f.map_or(0, |f| f.ids.len()))
            .max()
            .unwrap_or(0)
            .max(1);
        let b = seqs.len();
        let mut out = Windows {
            ticks: b,
            services: s_max,
            x: vec![0.0; b * s_max * window * c],
            mask: vec![0.0; b * s_max],
            adjacency: vec![0.0; b * s_max * s_max],
        };
        let mut slot: HashMap<u32, usize> = HashMap::new();
        for (bi, (seq, end)) in seqs.iter().zip(&ends).enumerate() {
            let Some(end) = end else { continue };
            slot.clear();
            for (si, id) in end.ids.iter().enumerate() {
                slot.insert(*id, si);
                out.mask[bi * s_max + si] = 1.0;
            }
            for &(from, to) in &end.edges {
                if from < end.ids.len() && to < end.ids.len() && from != to {
                    out.adjacency[(bi * s_max + from) * s_max + to] = 1.0;
                }
            }
            for w in 0..window {
                let back = (window - 1 - w) as u64;
                let Some(frame) = seq.checked_sub(back).and_then(|q| self.get(q)) else {
                    continue;
                };
                // Usually the same services in the same order as at the end: no lookups.
                let same = frame.ids == end.ids;
                for (row, id) in frame.ids.iter().enumerate() {
                    let si = if same {
                        Some(row)
                    } else {
                        slot.get(id).copied()
                    };
                    if let Some(si) = si {
                        let dst = ((bi * s_max + si) * window + w) * c;
                        out.x[dst..dst + c].copy_from_slice(&frame.rows[row * c..(row + 1) * c]);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick<'a>(
        services: &'a [String],
        features: &'a [f32],
        names: &'a [&'a str],
    ) -> TickFeatures<'a> {
        TickFeatures {
            tick: 0,
            services,
            features,
            feature_names: names,
            edges: &[],
            node: &[],
        }
    }

    #[test]
    fn machine_wide_rise_cancels_in_the_relative_channel() {
        let services: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let names = ["q"];
        let feats = vec!["q".to_owned()];
        let mut norm = Normaliser::new(1);
        for k in 0..200 {
            let v = (k % 3) as f32 * 0.1;
            norm.rows(&tick(&services, &[v, v, v], &names), &feats);
        }
        let stall = norm.rows(&tick(&services, &[5.0, 5.0, 5.0], &names), &feats);
        assert!(stall[0] > 3.0, "absolute channel rises: {stall:?}");
        assert!(stall[1].abs() < 1e-6, "relative channel cancels: {stall:?}");
        assert!(stall[2] > 3.0, "own-baseline channel rises: {stall:?}");
        assert_eq!(stall[3], 1.0, "presence");
        let own = norm.rows(&tick(&services, &[5.0, 0.1, 0.1], &names), &feats);
        // Rows are [z, relative deviation, own deviation, presence] per service.
        assert!(
            own[1] > 3.0 && own[4 + 1] < 0.5,
            "culprit stands out: {own:?}"
        );
    }

    #[test]
    fn missing_values_read_as_the_mean() {
        let services = vec!["a".to_owned()];
        let mut norm = Normaliser::new(2);
        let rows = norm.rows(
            &tick(&services, &[f32::NAN], &["x"]),
            &["x".to_owned(), "absent".to_owned()],
        );
        assert_eq!(
            rows,
            vec![0.0; 6].into_iter().chain([1.0]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn windows_follow_services_across_frames() {
        let mut h = History::new(8, 1);
        // a only, then a+b, then b only.
        let s0 = h.push(Frame {
            ids: vec![0],
            rows: vec![1.0],
            edges: vec![],
        });
        h.push(Frame {
            ids: vec![0, 1],
            rows: vec![2.0, 20.0],
            edges: vec![(0, 1)],
        });
        let s2 = h.push(Frame {
            ids: vec![1],
            rows: vec![30.0],
            edges: vec![],
        });
        let w = h.windows(&[s0, s2], 3);
        assert_eq!((w.ticks, w.services), (2, 1));
        assert_eq!(&w.x[0..3], &[0.0, 0.0, 1.0]);
        assert_eq!(&w.x[3..6], &[0.0, 20.0, 30.0]);
        assert_eq!(w.mask, vec![1.0, 1.0]);
        for _ in 0..10 {
            h.push(Frame {
                ids: vec![],
                rows: vec![],
                edges: vec![],
            });
        }
        assert!(h.get(s0).is_none(), "old frames are evicted");
    }

    #[test]
    fn windows_follow_services_that_change_order() {
        let mut h = History::new(8, 1);
        h.push(Frame {
            ids: vec![0, 1],
            rows: vec![1.0, 10.0],
            edges: vec![],
        });
        h.push(Frame {
            ids: vec![0, 1],
            rows: vec![2.0, 20.0],
            edges: vec![],
        });
        let end = h.push(Frame {
            ids: vec![1, 0],
            rows: vec![30.0, 3.0],
            edges: vec![],
        });
        let w = h.windows(&[end], 3);
        // Rows follow the end frame's order: b first, then a.
        assert_eq!(w.x, vec![10.0, 20.0, 30.0, 1.0, 2.0, 3.0]);
    }
}
