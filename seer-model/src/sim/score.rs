//! Scoring a predictor's trace against the simulated truth (definitions in the module docs of
//! [`crate::sim`]).

use serde::Serialize;

use super::world::{Fault, FaultClass};

/// Violation gaps shorter than this merge into one episode.
const MERGE_GAP: u64 = 5;
/// Ticks after an episode starts within which a culprit may still be named.
const CULPRIT_GRACE: u64 = 10;
/// Ticks after a fault ends during which its queue drains and its episode may still start.
const DRAIN: u64 = 50;

/// What one predictor said, per tick.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Global risk.
    pub global: Vec<f32>,
    /// Index of the service with the highest risk.
    pub top: Vec<usize>,
}

impl Trace {
    /// Appends one tick.
    pub fn push(&mut self, global: f32, services: &[f32]) {
        self.global.push(global);
        let top = services
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        self.top.push(top);
    }
}

/// The quality figures of one predictor.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Gradual faults detected ahead / gradual faults whose violation episode started in span.
    pub recall: f64,
    /// Median lead of the detected gradual faults, ticks.
    pub lead_ticks_p50: f64,
    /// True alarm runs / all alarm runs in span.
    pub precision: f64,
    /// Faults (both classes) whose culprit was named first / faults with an episode in span.
    pub culprit_top1: f64,
    /// Alarm runs in span.
    pub alarms: usize,
    /// Gradual faults scored.
    pub gradual_faults: usize,
    /// Faults of both classes scored.
    pub faults: usize,
    /// Step faults whose culprit was named.
    pub step_culprit_top1: f64,
}

/// Violation episodes: `(start, end)` half-open, gaps shorter than 5 ticks merged.
pub fn episodes(violation: &[bool]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (t, v) in violation.iter().enumerate() {
        if !v {
            continue;
        }
        let t = t as u64;
        match out.last_mut() {
            Some((_, end)) if t < *end + MERGE_GAP => *end = t + 1,
            _ => out.push((t, t + 1)),
        }
    }
    out
}

/// Scores `trace` over ticks `from..` (the ticks before are the warm-up).
pub fn score(
    trace: &Trace,
    violation: &[bool],
    faults: &[Fault],
    from: u64,
    horizon: u64,
    threshold: f32,
) -> Scores {
    let n = trace.global.len().min(violation.len());
    let held: Vec<bool> = (0..n)
        .map(|t| t > 0 && trace.global[t] >= threshold && trace.global[t - 1] >= threshold)
        .collect();
    // Alarm runs.
    let mut runs: Vec<(u64, u64)> = Vec::new(); // inclusive
    for (t, _) in held
        .iter()
        .enumerate()
        .take(n)
        .skip(from as usize)
        .filter(|(_, h)| **h)
    {
        let t = t as u64;
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == t => *end = t,
            _ => runs.push((t, t)),
        }
    }
    let true_runs = runs
        .iter()
        .filter(|(s, e)| {
            let last = ((*e + horizon) as usize).min(n.saturating_sub(1));
            (*s as usize..=last).any(|t| violation[t])
        })
        .count();
    let eps = episodes(&violation[..n]);

    let mut gradual = 0usize;
    let mut detected = Vec::new();
    let mut culprit_ok = 0usize;
    let mut culprit_total = 0usize;
    let mut step_ok = 0usize;
    let mut step_total = 0usize;
    for f in faults.iter().filter(|f| f.start >= from) {
        let Some(&(s, _)) = eps
            .iter()
            .find(|(s, _)| *s >= f.start && *s < f.end + DRAIN)
        else {
            continue;
        };
        if s as usize >= n {
            continue;
        }
        culprit_total += 1;
        if f.class == FaultClass::Gradual {
            gradual += 1;
            let run = runs.iter().rev().find(|(rs, _)| *rs < s);
            if let Some(&(rs, re)) = run
                && rs >= f.start
                && re + horizon >= s
            {
                detected.push((s - rs) as f64);
            }
        } else {
            step_total += 1;
        }
        let lo = f.start.max(s.saturating_sub(horizon));
        let hi = (s + CULPRIT_GRACE).min(n as u64 - 1);
        let named = (lo..=hi)
            .find(|t| held[*t as usize])
            .is_some_and(|t| trace.top[t as usize] == f.service);
        if named {
            culprit_ok += 1;
            if f.class == FaultClass::Step {
                step_ok += 1;
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    detected.sort_by(f64::total_cmp);
    let lead = if detected.is_empty() {
        0.0
    } else {
        let m = detected.len() / 2;
        if detected.len() % 2 == 0 {
            (detected[m - 1] + detected[m]) / 2.0
        } else {
            detected[m]
        }
    };
    Scores {
        recall: ratio(detected.len(), gradual),
        lead_ticks_p50: lead,
        precision: ratio(true_runs, runs.len()),
        culprit_top1: ratio(culprit_ok, culprit_total),
        alarms: runs.len(),
        gradual_faults: gradual,
        faults: culprit_total,
        step_culprit_top1: ratio(step_ok, step_total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_merge_short_gaps() {
        let v = [
            false, true, true, false, false, true, false, false, false, false, false, true,
        ];
        assert_eq!(episodes(&v), vec![(1, 6), (11, 12)]);
    }
}
