//! Alerts: a service whose risk crosses the alarm threshold opens an alert; the alert changes
//! when its resource or risk band changes, and ends after the risk stays below the threshold
//! (minus a hysteresis) for a few ticks.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Mode;
use super::diagnosis::{Diagnosis, Evidence, Resource};

/// The moment an alert event describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPhase {
    /// The alert opened.
    Start,
    /// Its resource or risk band changed.
    Change,
    /// It closed.
    End,
}

/// An alert, as stored, served by `GET /v1/alerts` and posted to webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: `<service>-<start tick>`.
    pub id: String,
    /// The flagged service.
    pub service: String,
    /// Latest phase.
    pub phase: AlertPhase,
    /// Whether the alert is still open.
    pub open: bool,
    /// Whether the service was the named culprit at the latest update.
    pub culprit: bool,
    /// Tick the alert opened at.
    pub start_tick: u64,
    /// Open time, unix nanoseconds.
    pub started_at_unix_ns: u64,
    /// Latest update, unix nanoseconds.
    pub updated_at_unix_ns: u64,
    /// Close time, unix nanoseconds.
    pub ended_at_unix_ns: Option<u64>,
    /// Risk at the latest update.
    pub risk: f32,
    /// Highest risk seen.
    pub peak_risk: f32,
    /// Diagnosed resource.
    pub resource: Resource,
    /// Recommended action.
    pub action: String,
    /// Evidence behind the resource.
    pub evidence: Vec<Evidence>,
    /// Who predicted.
    pub mode: Mode,
    /// Model version.
    pub model_version: u64,
}

/// One tick's view of a service for the tracker.
#[derive(Debug, Clone)]
pub struct AlertInput<'a> {
    /// Service.
    pub service: &'a str,
    /// Risk.
    pub risk: f32,
    /// Named culprit this tick.
    pub culprit: bool,
    /// Diagnosis, present when the service is at or above the threshold.
    pub diagnosis: Option<&'a Diagnosis>,
}

/// Tracks open alerts and produces start/change/end events.
#[derive(Debug)]
pub struct AlertTracker {
    threshold: f32,
    hysteresis: f32,
    end_ticks: u32,
    open: HashMap<String, (Alert, u32)>,
}

impl AlertTracker {
    /// A tracker alarming at `threshold`, ending after `end_ticks` quiet ticks.
    pub fn new(threshold: f32, end_ticks: u32) -> Self {
        Self {
            threshold,
            hysteresis: 0.1,
            end_ticks: end_ticks.max(1),
            open: HashMap::new(),
        }
    }

    /// Number of open alerts.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Folds one tick; returns the alerts whose state changed, with their new phase.
    pub fn update(
        &mut self,
        tick: u64,
        now_unix_ns: u64,
        mode: Mode,
        model_version: u64,
        inputs: &[AlertInput<'_>],
    ) -> Vec<Alert> {
        let mut events = Vec::new();
        for inp in inputs {
            let risk = if inp.risk.is_finite() { inp.risk } else { 0.0 };
            match self.open.get_mut(inp.service) {
                None if risk >= self.threshold => {
                    let d = inp.diagnosis;
                    let resource = d.map_or(Resource::Unknown, |d| d.resource);
                    let alert = Alert {
                        id: format!("{}-{tick}", inp.service),
                        service: inp.service.to_owned(),
                        phase: AlertPhase::Start,
                        open: true,
                        culprit: inp.culprit,
                        start_tick: tick,
                        started_at_unix_ns: now_unix_ns,
                        updated_at_unix_ns: now_unix_ns,
                        ended_at_unix_ns: None,
                        risk,
                        peak_risk: risk,
                        resource,
                        action: resource.action().to_owned(),
                        evidence: d.map(|d| d.evidence.clone()).unwrap_or_default(),
                        mode,
                        model_version,
                    };
                    events.push(alert.clone());
                    self.open.insert(inp.service.to_owned(), (alert, 0));
                }
                None => {}
                Some((alert, quiet)) => {
                    if risk < self.threshold - self.hysteresis {
                        *quiet += 1;
                    } else {
                        *quiet = 0;
                    }
                    alert.peak_risk = alert.peak_risk.max(risk);
                    let band = |r: f32| (r * 5.0).floor() as i32;
                    let new_resource = inp.diagnosis.map(|d| d.resource);
                    let changed_resource = new_resource.is_some_and(|r| r != alert.resource);
                    let changed_band = risk >= self.threshold && band(risk) != band(alert.risk);
                    let changed_culprit = inp.culprit != alert.culprit && risk >= self.threshold;
                    if changed_resource || changed_band || changed_culprit {
                        if let Some(d) = inp.diagnosis {
                            alert.resource = d.resource;
                            alert.action = d.resource.action().to_owned();
                            alert.evidence = d.evidence.clone();
                        }
                        alert.risk = risk;
                        alert.culprit = inp.culprit;
                        alert.phase = AlertPhase::Change;
                        alert.updated_at_unix_ns = now_unix_ns;
                        alert.mode = mode;
                        alert.model_version = model_version;
                        events.push(alert.clone());
                    }
                }
            }
        }
        // End alerts that stayed quiet long enough, or whose service left.
        let ended: Vec<String> = self
            .open
            .iter()
            .filter(|(svc, (_, quiet))| {
                *quiet >= self.end_ticks || !inputs.iter().any(|i| i.service == svc.as_str())
            })
            .map(|(svc, _)| svc.clone())
            .collect();
        for svc in ended {
            if let Some((mut alert, _)) = self.open.remove(&svc) {
                alert.phase = AlertPhase::End;
                alert.open = false;
                alert.updated_at_unix_ns = now_unix_ns;
                alert.ended_at_unix_ns = Some(now_unix_ns);
                events.push(alert);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inp(risk: f32) -> Vec<AlertInput<'static>> {
        vec![AlertInput {
            service: "c",
            risk,
            culprit: risk >= 0.5,
            diagnosis: None,
        }]
    }

    #[test]
    fn start_change_end() {
        let mut t = AlertTracker::new(0.5, 3);
        assert!(t.update(1, 1, Mode::Fallback, 0, &inp(0.2)).is_empty());
        let e = t.update(2, 2, Mode::Fallback, 0, &inp(0.6));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].phase, AlertPhase::Start);
        assert_eq!(e[0].id, "c-2");
        assert!(t.update(3, 3, Mode::Fallback, 0, &inp(0.65)).is_empty());
        let e = t.update(4, 4, Mode::Fallback, 0, &inp(0.95));
        assert_eq!(e[0].phase, AlertPhase::Change);
        // Hysteresis: 0.45 is not quiet.
        for k in 5..10 {
            assert!(t.update(k, k, Mode::Fallback, 0, &inp(0.45)).is_empty());
        }
        assert!(t.update(10, 10, Mode::Fallback, 0, &inp(0.1)).is_empty());
        assert!(t.update(11, 11, Mode::Fallback, 0, &inp(0.1)).is_empty());
        let e = t.update(12, 12, Mode::Fallback, 0, &inp(0.1));
        assert_eq!(e[0].phase, AlertPhase::End);
        assert_eq!(e[0].peak_risk, 0.95);
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn service_leaving_ends_its_alert() {
        let mut t = AlertTracker::new(0.5, 3);
        t.update(1, 1, Mode::Fallback, 0, &inp(0.9));
        let e = t.update(2, 2, Mode::Fallback, 0, &[]);
        assert_eq!(e[0].phase, AlertPhase::End);
    }
}
