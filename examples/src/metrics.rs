//! The evaluation summary of a run, against an `off` run of the same seed and schedule.
//!
//! Definitions (ticks are the run's ticks, 100 ms by default):
//! - **violation tick**: the client-side windowed percentile (p99 over 1 s) exceeds the target;
//!   **episode**: a maximal run of violation ticks, gaps shorter than `merge_gap_ticks` merged.
//! - **named**: a tick where the collector names a culprit (a service flagged `culprit` with
//!   risk at or above the threshold) that it also named in the [`CONFIRM_TICKS`]` - 1` distinct
//!   predictions before (the actuator's confirmation; one-tick noise does not count). An **alarm** is a
//!   maximal run of named ticks (gaps under 10 ticks merged). It is **true** when it overlaps a fault's window (start to end + 5 s) or
//!   starts at most `HORIZON_TICKS` before a violation episode; precision is true / all alarms.
//! - per fault, in its window: the first named tick and service (culprit accuracy: that service
//!   is the injected one); the first tick naming the injected service (time to culprit); the
//!   resource named with it (resource accuracy, over faults whose resource is in the
//!   collector's vocabulary: cpu, memory, downstream).
//! - **gradual detection**: the first violation onset `v` in the fault window of the `off` run
//!   (a violation tick after a tick without one; a violation already in progress when the fault
//!   began is not the fault's); detected when a named tick came at least one tick before `v`
//!   (lead = `v` - that tick). Faults that caused no violation in the `off` run are not counted.
//! - **avoided**: the fault caused a violation in the `off` run and none in this run.
//! - **recovery**: seconds from the first to the last violation tick of the window (0 if none).

use serde::Serialize;

use crate::faults::FaultClass;
use crate::harness::RunRecord;

/// Ticks before an episode in which an alarm counts as a true prediction.
pub const HORIZON_TICKS: usize = 50;
/// Seconds after a fault's end that still belong to its window.
pub const GRACE_S: f64 = 5.0;
/// Ticks in a row a service must be named before it counts (filters one-tick noise).
pub const CONFIRM_TICKS: usize = 3;
/// The step-fault floor: the culprit named (confirmed) within this many ticks of the start.
pub const STEP_NAMED_WITHIN_TICKS: usize = 5;

/// The summary `cargo xtask eval` prints.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Violation episodes in the run.
    pub episodes: usize,
    /// True alarms over all alarms.
    pub precision: Option<f64>,
    /// False alarms per hour of run.
    pub false_alarms_per_hour: Option<f64>,
    /// Faults whose first named service was the injected one, over all faults.
    pub culprit_accuracy: Option<f64>,
    /// Faults whose injected service was named with the right resource.
    pub resource_accuracy: Option<f64>,
    /// Shed (503) responses over requests sent.
    pub shed_fraction: f64,
    /// Ok responses per second.
    pub goodput_rps: f64,
    /// Whole-run client p99, milliseconds.
    pub p99_ms: Option<f64>,
    /// Gradual faults.
    pub gradual: GradualSummary,
    /// Step faults.
    pub step: StepSummary,
}

/// Lead-time quantiles.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Lead {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
}

/// Gradual-fault figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GradualSummary {
    /// Gradual faults injected.
    pub faults: usize,
    /// Detected ahead (lead >= 1 tick) over those that caused a violation in the `off` run.
    pub detection_rate: Option<f64>,
    /// Lead of the detected faults, ticks.
    pub lead_time_ticks: Lead,
    /// Avoided over those that caused a violation in the `off` run.
    pub avoided_fraction: Option<f64>,
    /// Culprit accuracy on gradual faults.
    pub culprit_accuracy: Option<f64>,
}

/// Step-fault figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StepSummary {
    /// Step faults injected.
    pub faults: usize,
    /// Culprit accuracy on step faults.
    pub culprit_accuracy: Option<f64>,
    /// Median ticks from the fault's start to the first tick naming its service.
    pub time_to_culprit_ticks_p50: Option<f64>,
    /// Step faults whose service was named within [`STEP_NAMED_WITHIN_TICKS`] ticks of the
    /// start, over all step faults.
    pub named_within_5_ticks: Option<f64>,
    /// Median seconds of violation within the fault window.
    pub recovery_s_p50: Option<f64>,
    /// Avoided over those that caused a violation in the `off` run.
    pub avoided_fraction: Option<f64>,
}

/// Per-fault evaluation, kept in the report.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEval {
    /// Fault id.
    pub id: usize,
    /// Class.
    pub class: FaultClass,
    /// Kind.
    pub kind: String,
    /// Injected service.
    pub service: String,
    /// First named service in the window.
    pub first_named: Option<String>,
    /// Resource named with the injected service.
    pub resource_named: Option<String>,
    /// Ticks from the start to the first tick naming the injected service.
    pub time_to_culprit_ticks: Option<usize>,
    /// First violation tick of the window in the reference (`off`) run, relative to the start.
    pub ref_violation_tick: Option<usize>,
    /// Lead of the first named tick over the reference violation, ticks.
    pub lead_ticks: Option<i64>,
    /// Violation ticks in this run's window.
    pub violation_ticks: usize,
    /// Seconds from the first to the last violation tick in the window.
    pub recovery_s: f64,
}

/// Violation episodes: `(first tick, last tick)`.
pub fn episodes(r: &RunRecord, merge_gap: usize) -> Vec<(usize, usize)> {
    runs(&violations(r), merge_gap)
}

/// Violation flag per tick.
pub fn violations(r: &RunRecord) -> Vec<bool> {
    r.ticks
        .iter()
        .map(|t| t.window_p_ms.is_some_and(|p| p > r.qos_target_ms))
        .collect()
}

fn runs(flags: &[bool], merge_gap: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, f) in flags.iter().enumerate() {
        if !*f {
            continue;
        }
        match out.last_mut() {
            Some((_, end)) if i - *end <= merge_gap.max(1) => *end = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// Per tick, the services named in [`CONFIRM_TICKS`] predictions in a row ending at that tick
/// (the same confirmation the actuators wait for), with the resource named at that tick.
/// Predictions are told apart by their collector tick: a tick that shows the same prediction
/// as the one before (the collector was late) confirms nothing new, and predictions that
/// arrived earlier in a tick ([`TickPred::earlier`](crate::harness::TickPred::earlier)) count in their order. A tick without a
/// prediction breaks the run. Runs recorded without collector ticks count every harness tick.
fn confirmed(r: &RunRecord) -> Vec<Vec<(String, String)>> {
    const NONE: &[(String, String)] = &[];
    // Every distinct prediction in arrival order, keyed (0, collector tick), or (1, harness
    // tick) in old runs, or (2, harness tick) for a tick without one; and per tick the index
    // of the last prediction shown by then.
    type Seen<'a> = ((u8, u64), &'a [(String, String)]);
    let mut seq: Vec<Seen<'_>> = Vec::new();
    let push = |seq: &mut Vec<_>, key: (u8, u64), named| {
        if seq.last().is_none_or(|(k, _)| *k != key) {
            seq.push((key, named));
        }
    };
    let n = r.ticks.len().max(r.preds.len());
    let mut at: Vec<Option<usize>> = Vec::with_capacity(n);
    for i in 0..n {
        match r.preds.get(i).and_then(|p| p.as_ref()) {
            Some(p) => {
                for (t, named) in &p.earlier {
                    push(&mut seq, (0, *t), named.as_slice());
                }
                let key = p.collector_tick.map_or((1, i as u64), |t| (0, t));
                push(&mut seq, key, p.named.as_slice());
                at.push(Some(seq.len() - 1));
            }
            None => {
                push(&mut seq, (2, i as u64), NONE);
                at.push(None);
            }
        }
    }
    at.iter()
        .map(|k| {
            let Some(k) = *k else { return Vec::new() };
            let Some(first) = (k + 1).checked_sub(CONFIRM_TICKS) else {
                return Vec::new();
            };
            let (_, named) = seq[k];
            named
                .iter()
                .filter(|(s, _)| {
                    seq[first..k]
                        .iter()
                        .all(|(_, prev)| prev.iter().any(|(n, _)| n == s))
                })
                .cloned()
                .collect()
        })
        .collect()
}

fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[idx.min(v.len() - 1)])
}

fn ratio(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn resource_matches(truth: &str, named: &str) -> Option<bool> {
    match truth {
        "cpu" => Some(named == "cpu"),
        "memory" => Some(named == "memory"),
        "dependency" => Some(named == "downstream"),
        _ => None,
    }
}

/// Evaluates every fault of `r`, with `reference` (the `off` run) for violation timing.
pub fn evaluate_faults(r: &RunRecord, reference: &RunRecord) -> Vec<FaultEval> {
    let tick_s = r.tick_ms as f64 / 1000.0;
    let viol = violations(r);
    let ref_viol = violations(reference);
    let conf = confirmed(r);
    let named = |i: usize| conf.get(i).map_or(&[][..], Vec::as_slice);
    r.faults
        .iter()
        .map(|f| {
            let s = (f.start_s / tick_s).round() as usize;
            let e = (((f.end_s + GRACE_S) / tick_s).round() as usize).min(r.ticks.len());
            let window = s..e.max(s);
            let first_named = window
                .clone()
                .find_map(|i| named(i).first().map(|(n, _)| (i, n.clone())));
            let culprit_tick = window.clone().find_map(|i| {
                named(i)
                    .iter()
                    .find(|(n, _)| n == &f.service)
                    .map(|(_, res)| (i, res.clone()))
            });
            // The first violation *onset* in the window: a violation already in progress when
            // the fault began (the tail of an earlier fault, or a stall) was not caused by it.
            let ref_v = window.clone().find(|i| {
                ref_viol.get(*i).copied().unwrap_or(false)
                    && !(*i > 0 && ref_viol.get(*i - 1).copied().unwrap_or(false))
            });
            // The first named tick before the reference violation (from the fault's start).
            let lead = ref_v.and_then(|v| {
                (s..=v)
                    .find(|i| !named(*i).is_empty())
                    .map(|a| v as i64 - a as i64)
            });
            let vticks: Vec<usize> = window
                .clone()
                .filter(|i| viol.get(*i).copied().unwrap_or(false))
                .collect();
            let recovery_s = match (vticks.first(), vticks.last()) {
                (Some(a), Some(b)) => (b - a + 1) as f64 * tick_s,
                _ => 0.0,
            };
            FaultEval {
                id: f.id,
                class: f.class,
                kind: f.kind.as_str().into(),
                service: f.service.clone(),
                first_named: first_named.map(|(_, n)| n),
                resource_named: culprit_tick.as_ref().map(|(_, r)| r.clone()),
                time_to_culprit_ticks: culprit_tick.map(|(i, _)| i - s),
                ref_violation_tick: ref_v.map(|v| v - s),
                lead_ticks: lead,
                violation_ticks: vticks.len(),
                recovery_s,
            }
        })
        .collect()
}

/// The summary of `r`; `off` is the `off` run of the same seed and schedule (`None` when `r` is
/// itself the `off` run, or when no comparison was run: then avoided fractions are `null`).
pub fn summarize(
    r: &RunRecord,
    off: Option<&RunRecord>,
    merge_gap: usize,
) -> (Summary, Vec<FaultEval>) {
    let reference = off.unwrap_or(r);
    let evals = evaluate_faults(r, reference);
    let eps = episodes(r, merge_gap);
    let tick_s = r.tick_ms as f64 / 1000.0;

    // Alarms.
    let conf = confirmed(r);
    let flags: Vec<bool> = (0..r.ticks.len())
        .map(|i| conf.get(i).is_some_and(|n| !n.is_empty()))
        .collect();
    let alarms = runs(&flags, 10);
    let has_preds = r.preds.iter().any(Option::is_some);
    let mut true_alarms = 0;
    for (a, b) in &alarms {
        let in_fault = r.faults.iter().any(|f| {
            let s = (f.start_s / tick_s) as usize;
            let e = ((f.end_s + GRACE_S) / tick_s) as usize;
            *a <= e && *b >= s
        });
        let before_episode = eps
            .iter()
            .any(|(es, ee)| *a + HORIZON_TICKS >= *es && *a <= *ee);
        if in_fault || before_episode {
            true_alarms += 1;
        }
    }
    let hours = r.ticks.len() as f64 * tick_s / 3600.0;
    let precision = if has_preds {
        ratio(true_alarms, alarms.len())
    } else {
        None
    };
    let false_alarms_per_hour =
        (has_preds && hours > 0.0).then(|| (alarms.len() - true_alarms) as f64 / hours);

    let all_culprit = evals
        .iter()
        .filter(|e| e.first_named.as_ref() == Some(&e.service))
        .count();
    let res_pool: Vec<&FaultEval> = evals
        .iter()
        .filter(|e| {
            r.faults
                .iter()
                .find(|f| f.id == e.id)
                .and_then(|f| resource_matches(&f.resource, ""))
                .is_some()
        })
        .collect();
    let res_ok = res_pool
        .iter()
        .filter(|e| {
            let truth = r
                .faults
                .iter()
                .find(|f| f.id == e.id)
                .map(|f| f.resource.as_str());
            match (truth, e.resource_named.as_deref()) {
                (Some(t), Some(n)) => resource_matches(t, n).unwrap_or(false),
                _ => false,
            }
        })
        .count();

    let class_of = |c: FaultClass| evals.iter().filter(move |e| e.class == c);
    let avoided = |c: FaultClass| -> Option<f64> {
        off?;
        let violating: Vec<&FaultEval> = class_of(c)
            .filter(|e| e.ref_violation_tick.is_some())
            .collect();
        ratio(
            violating.iter().filter(|e| e.violation_ticks == 0).count(),
            violating.len(),
        )
    };
    let culprit_acc = |c: FaultClass| -> Option<f64> {
        let v: Vec<&FaultEval> = class_of(c).collect();
        if !has_preds {
            return None;
        }
        ratio(
            v.iter()
                .filter(|e| e.first_named.as_ref() == Some(&e.service))
                .count(),
            v.len(),
        )
    };
    let gradual_violating: Vec<&FaultEval> = class_of(FaultClass::Gradual)
        .filter(|e| e.ref_violation_tick.is_some())
        .collect();
    let mut leads: Vec<f64> = gradual_violating
        .iter()
        .filter_map(|e| e.lead_ticks)
        .filter(|l| *l >= 1)
        .map(|l| l as f64)
        .collect();
    let detected = leads.len();
    let mut ttc: Vec<f64> = class_of(FaultClass::Step)
        .filter_map(|e| e.time_to_culprit_ticks.map(|t| t as f64))
        .collect();
    let mut rec: Vec<f64> = class_of(FaultClass::Step).map(|e| e.recovery_s).collect();

    let sent: u64 = r.ticks.iter().map(|t| t.sent).sum();
    let shed: u64 = r.ticks.iter().map(|t| t.shed).sum();
    let ok: u64 = r.ticks.iter().map(|t| t.ok).sum();
    let secs = (r.ticks.len() as f64 * tick_s).max(1e-9);
    let summary = Summary {
        episodes: eps.len(),
        precision,
        false_alarms_per_hour,
        culprit_accuracy: if has_preds {
            ratio(all_culprit, evals.len())
        } else {
            None
        },
        resource_accuracy: if has_preds {
            ratio(res_ok, res_pool.len())
        } else {
            None
        },
        shed_fraction: shed as f64 / sent.max(1) as f64,
        goodput_rps: ok as f64 / secs,
        p99_ms: r.p_ms,
        gradual: GradualSummary {
            faults: class_of(FaultClass::Gradual).count(),
            detection_rate: if has_preds {
                ratio(detected, gradual_violating.len())
            } else {
                None
            },
            lead_time_ticks: Lead {
                p50: quantile(&mut leads, 0.5),
                p90: quantile(&mut leads, 0.9),
            },
            avoided_fraction: avoided(FaultClass::Gradual),
            culprit_accuracy: culprit_acc(FaultClass::Gradual),
        },
        step: StepSummary {
            faults: class_of(FaultClass::Step).count(),
            culprit_accuracy: culprit_acc(FaultClass::Step),
            named_within_5_ticks: if has_preds {
                ratio(
                    ttc.iter()
                        .filter(|t| **t <= STEP_NAMED_WITHIN_TICKS as f64)
                        .count(),
                    class_of(FaultClass::Step).count(),
                )
            } else {
                None
            },
            time_to_culprit_ticks_p50: quantile(&mut ttc, 0.5),
            recovery_s_p50: quantile(&mut rec, 0.5),
            avoided_fraction: avoided(FaultClass::Step),
        },
    };
    (summary, evals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_short_gaps() {
        let f = [false, true, true, false, true, false, false, false, true];
        assert_eq!(runs(&f, 1), vec![(1, 2), (4, 4), (8, 8)]);
        assert_eq!(runs(&f, 2), vec![(1, 4), (8, 8)]);
    }

    use crate::faults::{FaultKind, GroundTruth};
    use crate::harness::{TickPred, TickRow};
    use crate::scenario::Mode;

    fn record(viol: &[(usize, usize)], named: &[(usize, usize, &str)], n: usize) -> RunRecord {
        let ticks = (0..n)
            .map(|i| TickRow {
                sent: 10,
                ok: 9,
                shed: 1,
                errors: 0,
                timeouts: 0,
                window_p_ms: Some(if viol.iter().any(|(a, b)| (*a..=*b).contains(&i)) {
                    200.0
                } else {
                    10.0
                }),
            })
            .collect();
        let preds = (0..n)
            .map(|i| {
                Some(TickPred {
                    risks: vec![],
                    named: named
                        .iter()
                        .filter(|(a, b, _)| (*a..=*b).contains(&i))
                        .map(|(_, _, s)| ((*s).to_string(), "cpu".to_string()))
                        .collect(),
                    mode: "fallback".into(),
                    collector_tick: None,
                    earlier: vec![],
                })
            })
            .collect();
        RunRecord {
            scenario: "t".into(),
            mode: Mode::Off,
            seed: 1,
            tick_ms: 100,
            duration_s: n as f64 / 10.0,
            qos_percentile: 99.0,
            qos_target_ms: 100.0,
            qos_window_ticks: 10,
            cgroups: true,
            collector: true,
            services: vec!["text".into(), "user".into()],
            ticks,
            p_ms: Some(50.0),
            preds,
            faults: vec![GroundTruth {
                id: 0,
                service: "text".into(),
                resource: "cpu".into(),
                class: FaultClass::Gradual,
                kind: FaultKind::CpuHog,
                start_unix_ns: 0,
                end_unix_ns: 0,
                start_s: 10.0,
                end_s: 30.0,
            }],
            actuations: vec![],
            service_states: Default::default(),
            notes: vec![],
        }
    }

    #[test]
    fn a_violation_in_progress_at_the_fault_start_is_not_the_faults() {
        // Off: an earlier episode runs from tick 90 to 105 (the fault starts at 100), then the
        // fault's own violation begins at 200.
        let off = record(&[(90, 105), (200, 260)], &[(150, 260, "text")], 500);
        let (_, evals) = summarize(&off, None, 10);
        assert_eq!(evals[0].ref_violation_tick, Some(100));
        // An episode covering the whole window has no onset in it: not caused by the fault.
        let off = record(&[(90, 400)], &[], 500);
        let (s, evals) = summarize(&off, None, 10);
        assert_eq!(evals[0].ref_violation_tick, None);
        assert_eq!(s.gradual.detection_rate, None);
    }

    #[test]
    fn gradual_fault_detected_ahead_and_avoided() {
        // Off: violation from tick 200 (10 s after the fault's start). Controlled: the culprit is
        // named from tick 150 and no violation follows.
        let off = record(&[(200, 260)], &[(150, 260, "text")], 500);
        let on = record(&[], &[(150, 180, "text"), (400, 405, "user")], 500);
        let (s, evals) = summarize(&on, Some(&off), 10);
        assert_eq!(evals[0].ref_violation_tick, Some(100));
        // Named from tick 150, confirmed (3 ticks in a row) at 152: 48 ticks ahead of tick 200.
        assert_eq!(evals[0].lead_ticks, Some(48));
        assert_eq!(s.gradual.detection_rate, Some(1.0));
        assert_eq!(s.gradual.lead_time_ticks.p50, Some(48.0));
        assert_eq!(s.gradual.avoided_fraction, Some(1.0));
        assert_eq!(s.culprit_accuracy, Some(1.0));
        assert_eq!(s.resource_accuracy, Some(1.0));
        // One true alarm (in the fault's window), one false (tick 400, no fault, no episode).
        assert_eq!(s.precision, Some(0.5));
        assert_eq!(s.episodes, 0);
        assert!((s.shed_fraction - 0.1).abs() < 1e-9);
        let (off_s, _) = summarize(&off, None, 10);
        assert_eq!(off_s.episodes, 1);
        assert_eq!(off_s.gradual.avoided_fraction, None);
    }

    #[test]
    fn step_time_to_culprit_counts_the_confirmation() {
        // Two step faults on text: at tick 100 (named from 102: confirmed at 104, 4 ticks) and
        // at tick 300 (named from 305: confirmed at 307, 7 ticks).
        let mut r = record(&[], &[(102, 140, "text"), (305, 340, "text")], 500);
        let step = |id, start_s: f64| GroundTruth {
            id,
            class: FaultClass::Step,
            start_s,
            end_s: start_s + 5.0,
            ..r.faults[0].clone()
        };
        r.faults = vec![step(0, 10.0), step(1, 30.0)];
        let (s, evals) = summarize(&r, None, 10);
        let ttc: Vec<_> = evals.iter().map(|e| e.time_to_culprit_ticks).collect();
        assert_eq!(ttc, vec![Some(4), Some(7)]);
        assert_eq!(s.step.named_within_5_ticks, Some(0.5));
        assert_eq!(s.step.culprit_accuracy, Some(1.0));
        assert_eq!(s.gradual.faults, 0);
    }

    #[test]
    fn a_prediction_shown_twice_confirms_once() {
        // Named at harness ticks 102-104, but 103 repeats 102's prediction (collector tick 52):
        // only two distinct predictions, so nothing is confirmed until a third one at 105.
        let mut r = record(&[], &[(102, 140, "text")], 500);
        let mut ct = 0;
        for (i, p) in r.preds.iter_mut().enumerate() {
            if i != 103 {
                ct += 1;
            }
            if let Some(p) = p {
                p.collector_tick = Some(ct);
            }
        }
        r.faults[0].class = FaultClass::Step;
        r.faults[0].start_s = 10.0;
        let conf = confirmed(&r);
        assert!(conf[104].is_empty(), "a repeat counted as a confirmation");
        assert_eq!(conf[105], vec![("text".to_string(), "cpu".to_string())]);
        let (_, evals) = summarize(&r, None, 10);
        assert_eq!(evals[0].time_to_culprit_ticks, Some(5));
        // Without collector ticks (older runs) every harness tick counts, as before.
        let old = record(&[], &[(102, 140, "text")], 500);
        assert_eq!(confirmed(&old)[104].len(), 1);
    }

    #[test]
    fn predictions_that_arrived_in_one_tick_confirm_in_order() {
        let text = || vec![("text".to_string(), "cpu".to_string())];
        let mut r = record(&[], &[(102, 103, "text")], 500);
        for (i, p) in r.preds.iter_mut().enumerate() {
            if let Some(p) = p {
                p.collector_tick = Some(i as u64);
            }
        }
        // Two named predictions shown at 102-103: not yet three.
        assert!(confirmed(&r)[103].is_empty());
        // The third arrived in tick 103 before the one shown there: confirmed at 103.
        if let Some(p) = r.preds[103].as_mut() {
            p.collector_tick = Some(1103);
            p.earlier = vec![(1102, text())];
        }
        let conf = confirmed(&r);
        assert!(conf[102].is_empty());
        assert_eq!(conf[103], text());
        // An earlier one that named someone else breaks the run.
        if let Some(p) = r.preds[103].as_mut() {
            p.earlier = vec![(1102, vec![("user".into(), "cpu".into())])];
        }
        assert!(confirmed(&r)[103].is_empty());
        // A tick without a prediction breaks it too.
        let mut gap = record(&[], &[(100, 104, "text")], 500);
        for (i, p) in gap.preds.iter_mut().enumerate() {
            if let Some(p) = p {
                p.collector_tick = Some(i as u64);
            }
        }
        gap.preds[102] = None;
        let conf = confirmed(&gap);
        assert!(conf[103].is_empty() && conf[104].is_empty());
        assert!(!confirmed(&record(&[], &[(100, 104, "text")], 500))[104].is_empty());
    }

    #[test]
    fn quantiles() {
        let mut v = vec![3.0, 1.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), Some(2.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
