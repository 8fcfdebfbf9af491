//! What the model returns, what it is told, and how far it is trusted.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::diagnosis::Diagnosis;

/// Whose answer a caller should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Still learning: not yet trusted; callers answer with their reactive rule.
    Learning,
    /// Trusted: recent precision and recall are over their floors.
    Predicting,
    /// Was trusted, but recent precision (or recall) fell below the floor; callers answer with
    /// their reactive rule until it recovers.
    Fallback,
}

/// What happened in one tick, as the QoS evaluator saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    /// Tick index.
    pub tick: u64,
    /// The windowed percentile exceeded its target in this tick.
    pub violation: bool,
    /// The culprit of the ongoing violation, if known (injected ground truth in a controlled
    /// run, else critical-path attribution).
    pub culprit: Option<&'a str>,
}

/// One service's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRisk {
    /// Service name.
    pub service: String,
    /// P(this service causes a QoS violation within the horizon).
    pub risk: f32,
    /// For services at or over the alarm threshold: the scarce resource and the action.
    pub diagnosis: Option<Diagnosis>,
}

/// The model's answer for one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The tick predicted at.
    pub tick: u64,
    /// Weights version that produced it (training steps applied, counting from a checkpoint).
    pub model_version: u64,
    /// Whether the model is trusted right now.
    pub mode: Mode,
    /// P(a QoS violation within the horizon).
    pub global_risk: f32,
    /// One entry per input service, in input order.
    pub services: Vec<ServiceRisk>,
    /// Recent precision of the model's alarms on matured labels, when any alarm matured.
    pub precision: Option<f32>,
    /// Recent recall on matured labels, when any violation matured.
    pub recall: Option<f32>,
}

impl Prediction {
    /// The service with the highest risk, if any.
    pub fn top(&self) -> Option<&ServiceRisk> {
        self.services
            .iter()
            .max_by(|a, b| a.risk.total_cmp(&b.risk))
    }
}

/// A snapshot of the model's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Weights version.
    pub version: u64,
    /// Training steps taken by this process.
    pub train_steps: u64,
    /// Current mode.
    pub mode: Mode,
    /// Recent precision on matured labels.
    pub precision: Option<f32>,
    /// Recent recall on matured labels.
    pub recall: Option<f32>,
    /// Ticks whose labels have matured.
    pub matured: u64,
    /// Matured ticks with a violation within the horizon.
    pub matured_positive: u64,
    /// Samples in the replay buffer (violation, healthy).
    pub replay: (usize, usize),
    /// Loss of the last training step.
    pub last_loss: Option<f32>,
    /// Training steps skipped because their loss was not finite (the weights were left as
    /// they were).
    #[serde(default)]
    pub skipped_steps: u64,
    /// Mean duration of recent training steps, ms.
    pub train_step_ms: Option<f32>,
    /// Mean duration of recent predictions on the model thread (one tick, all services), ms.
    pub infer_ms: Option<f32>,
    /// Why the last save failed (until a save succeeds), else why the checkpoint at start was
    /// not used (the model then started fresh).
    pub checkpoint_error: Option<String>,
}

/// Online precision and recall over the last `capacity` matured ticks, and the mode switch.
#[derive(Debug)]
pub(crate) struct Score {
    window: VecDeque<(bool, bool)>,
    capacity: usize,
    tp: u64,
    fp: u64,
    fn_: u64,
    pub(crate) matured: u64,
    pub(crate) matured_positive: u64,
}

/// Alarms that must have matured in the window before precision is trusted either way.
pub(crate) const MIN_ALARMS: u64 = 20;
/// Violation ticks that must have matured in the window before recall can demote the model:
/// one unforeseeable step fault after a quiet spell is a recall of 0 / 1, not a verdict.
pub(crate) const MIN_POSITIVES: u64 = 20;
/// Margin over the floors needed to come back from fallback.
const HYSTERESIS: f32 = 0.05;

impl Score {
    pub(crate) fn new(capacity: usize) -> Self {
        Score {
            window: VecDeque::with_capacity(capacity),
            capacity,
            tp: 0,
            fp: 0,
            fn_: 0,
            matured: 0,
            matured_positive: 0,
        }
    }

    pub(crate) fn record(&mut self, alarm: bool, actual: bool) {
        if self.window.len() == self.capacity
            && let Some(old) = self.window.pop_front()
        {
            self.count(old, false);
        }
        self.window.push_back((alarm, actual));
        self.count((alarm, actual), true);
        self.matured += 1;
        self.matured_positive += u64::from(actual);
    }

    fn count(&mut self, (alarm, actual): (bool, bool), add: bool) {
        let slot = match (alarm, actual) {
            (true, true) => &mut self.tp,
            (true, false) => &mut self.fp,
            (false, true) => &mut self.fn_,
            (false, false) => return,
        };
        if add {
            *slot += 1;
        } else {
            *slot -= 1;
        }
    }

    pub(crate) fn alarms(&self) -> u64 {
        self.tp + self.fp
    }

    pub(crate) fn precision(&self) -> Option<f32> {
        let alarms = self.tp + self.fp;
        (alarms > 0).then(|| self.tp as f32 / alarms as f32)
    }

    pub(crate) fn recall(&self) -> Option<f32> {
        let positives = self.positives();
        (positives > 0).then(|| self.tp as f32 / positives as f32)
    }

    /// Violation ticks in the window.
    pub(crate) fn positives(&self) -> u64 {
        self.tp + self.fn_
    }

    /// The next mode, given the current one and the gates.
    pub(crate) fn next_mode(&self, mode: Mode, gate: &Gate) -> Mode {
        let precision = self.precision().unwrap_or(0.0);
        let recall = self.recall().unwrap_or(0.0);
        let judged = self.alarms() >= MIN_ALARMS;
        match mode {
            Mode::Learning => {
                let earned = gate.train_steps >= gate.min_train_steps
                    && self.matured_positive >= gate.min_positives
                    && judged
                    && precision >= gate.precision_floor
                    && recall >= gate.recall_floor;
                if earned {
                    Mode::Predicting
                } else {
                    Mode::Learning
                }
            }
            Mode::Predicting => {
                let poor = (judged && precision < gate.precision_floor)
                    || (self.positives() >= MIN_POSITIVES && recall < gate.recall_floor);
                if poor {
                    Mode::Fallback
                } else {
                    Mode::Predicting
                }
            }
            Mode::Fallback => {
                let back = judged
                    && precision >= gate.precision_floor + HYSTERESIS
                    && recall >= gate.recall_floor;
                if back {
                    Mode::Predicting
                } else {
                    Mode::Fallback
                }
            }
        }
    }
}

/// The thresholds of the mode switch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gate {
    pub(crate) train_steps: u64,
    pub(crate) min_train_steps: u64,
    pub(crate) min_positives: u64,
    pub(crate) precision_floor: f32,
    pub(crate) recall_floor: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(train_steps: u64) -> Gate {
        Gate {
            train_steps,
            min_train_steps: 10,
            min_positives: 5,
            precision_floor: 0.8,
            recall_floor: 0.5,
        }
    }

    #[test]
    fn learning_until_earned_then_fallback_on_poor_precision_and_back() {
        let mut s = Score::new(100);
        assert_eq!(s.next_mode(Mode::Learning, &gate(100)), Mode::Learning);
        for _ in 0..30 {
            s.record(true, true);
        }
        assert_eq!(
            s.next_mode(Mode::Learning, &gate(3)),
            Mode::Learning,
            "too few steps"
        );
        assert_eq!(s.next_mode(Mode::Learning, &gate(100)), Mode::Predicting);
        // A burst of false alarms pushes precision under the floor.
        for _ in 0..20 {
            s.record(true, false);
        }
        assert!(s.precision().is_some_and(|p| p < 0.8));
        assert_eq!(s.next_mode(Mode::Predicting, &gate(100)), Mode::Fallback);
        assert_eq!(s.next_mode(Mode::Fallback, &gate(100)), Mode::Fallback);
        // Good alarms push the false ones out of the window.
        for _ in 0..100 {
            s.record(true, true);
        }
        assert_eq!(s.precision(), Some(1.0));
        assert_eq!(s.next_mode(Mode::Fallback, &gate(100)), Mode::Predicting);
    }

    #[test]
    fn missed_violations_cost_recall_once_enough_have_matured() {
        let mut s = Score::new(100);
        s.record(true, true);
        s.record(false, true);
        s.record(false, true);
        s.record(false, false);
        assert_eq!(s.recall(), Some(1.0 / 3.0));
        assert_eq!(s.precision(), Some(1.0));
        assert_eq!(
            s.next_mode(Mode::Predicting, &gate(100)),
            Mode::Predicting,
            "three violation ticks are no verdict"
        );
        for _ in 3..MIN_POSITIVES {
            s.record(false, true);
        }
        assert_eq!(s.positives(), MIN_POSITIVES);
        assert_eq!(s.next_mode(Mode::Predicting, &gate(100)), Mode::Fallback);
    }
}
