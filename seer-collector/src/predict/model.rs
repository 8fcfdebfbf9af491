//! The CNN+LSTM predictor (feature `model`): `seer-model`'s online-learning network behind the
//! [`Predictor`] seam, with the reactive baseline answering until the model has earned its place.
//!
//! Every tick goes to both: the model (to learn and to keep its own precision and recall on
//! matured labels) and the [`ReactivePredictor`] (to keep its baselines warm). Which answer is
//! served follows the model's [`seer_model::Mode`]:
//!
//! | model mode | served predictions | reported mode |
//! |---|---|---|
//! | predicting | per service, the higher of the model's and the rule's risk (the model's alone with [`ModelPredictor::with_ensemble`]`(false)`) | [`Mode::Predicting`] |
//! | learning | the reactive rule's | [`Mode::Learning`] |
//! | fallback (recent precision, or recall once 20 violation ticks matured, under its floor) | the reactive rule's | [`Mode::Fallback`] |
//! | the model thread failed | the reactive rule's | [`Mode::Fallback`] |
//!
//! The model version and its recent precision and recall are reported in every mode.
//!
//! Why the ensemble: the model learns from windows of past ticks, so a step fault shows in its
//! input only once a tick has been dominated by it; the rule's hard-evidence terms (a cgroup
//! throttled or starved of CPU while its own queue grows) name such a culprit in the first tick.
//! Replaying a recorded run with `seer-collector replay --predictor model` against
//! `--predictor model-only` measures what the union adds (docs/EVALUATION.md).

use seer_model::{ModelConfig, ModelError, ModelHandle, Outcome, TickFeatures};

use super::{
    Mode, PredictionSet, Predictor, PredictorStats, ReactivePredictor, ServicePrediction,
    TickInput, TickOutcome,
};

/// [`seer_model::ModelHandle`] as a [`Predictor`], falling back to a [`ReactivePredictor`].
#[derive(Debug)]
pub struct ModelPredictor {
    model: ModelHandle,
    reactive: ReactivePredictor,
    start_version: u64,
    version: u64,
    failures: u64,
    ensemble: bool,
}

impl ModelPredictor {
    /// Starts the model thread with `config` (loading its checkpoint when one is configured).
    ///
    /// # Errors
    ///
    /// Whatever [`ModelHandle::spawn`] reports (bad configuration, libtorch failure). A corrupt
    /// or mismatched checkpoint is not an error: the model starts fresh.
    pub fn new(config: ModelConfig) -> Result<Self, ModelError> {
        let model = ModelHandle::spawn(config)?;
        let start_version = model.status()?.version;
        Ok(Self {
            model,
            reactive: ReactivePredictor::new(),
            start_version,
            version: start_version,
            failures: 0,
            ensemble: true,
        })
    }

    /// Uses `reactive` as the fallback rule.
    #[must_use]
    pub fn with_reactive(mut self, reactive: ReactivePredictor) -> Self {
        self.reactive = reactive;
        self
    }

    /// While the model predicts, serve per service the higher of its risk and the reactive
    /// rule's (`true`, the default), or the model's alone (`false`).
    #[must_use]
    pub fn with_ensemble(mut self, ensemble: bool) -> Self {
        self.ensemble = ensemble;
        self
    }

    /// The model behind this predictor (for status, checkpoints or extra training).
    pub fn handle(&self) -> &ModelHandle {
        &self.model
    }

    /// Model calls that failed since start (each answered by the reactive rule).
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

fn mode_of(mode: seer_model::Mode) -> Mode {
    match mode {
        seer_model::Mode::Learning => Mode::Learning,
        seer_model::Mode::Predicting => Mode::Predicting,
        seer_model::Mode::Fallback => Mode::Fallback,
    }
}

/// Raises each service's risk in `set` to the rule's, and the global risk with it. Services are
/// matched by name (both answer for the same input, but the model may order or omit rows).
fn union(set: &mut PredictionSet, rule: &PredictionSet) {
    for r in &rule.services {
        match set.services.iter_mut().find(|s| s.service == r.service) {
            Some(s) if r.risk > s.risk || s.risk.is_nan() => s.risk = r.risk,
            Some(_) => {}
            None => set.services.push(r.clone()),
        }
    }
    if rule.global_risk > set.global_risk || set.global_risk.is_nan() {
        set.global_risk = rule.global_risk;
    }
}

impl Predictor for ModelPredictor {
    fn name(&self) -> &'static str {
        "cnn-lstm"
    }

    fn observe(&mut self, input: &TickInput<'_>) -> PredictionSet {
        let mut fallback = self.reactive.observe(input);
        let names: &[&str] = input.feature_names;
        let answer = self.model.observe(&TickFeatures {
            tick: input.tick,
            services: input.services,
            features: input.features,
            feature_names: names,
            edges: input.edges,
            node: &[],
        });
        match answer {
            Ok(p) => {
                self.version = p.model_version;
                let mode = mode_of(p.mode);
                if mode == Mode::Predicting {
                    let mut set = PredictionSet {
                        tick: p.tick,
                        mode,
                        model_version: p.model_version,
                        global_risk: p.global_risk,
                        services: p
                            .services
                            .into_iter()
                            .map(|s| ServicePrediction {
                                service: s.service,
                                risk: s.risk,
                            })
                            .collect(),
                        precision: p.precision,
                        recall: p.recall,
                    };
                    if self.ensemble {
                        union(&mut set, &fallback);
                    }
                    return set;
                }
                fallback.mode = mode;
                fallback.model_version = p.model_version;
                fallback.precision = p.precision;
                fallback.recall = p.recall;
                fallback
            }
            Err(err) => {
                self.failures += 1;
                if self.failures == 1 || self.failures.is_power_of_two() {
                    tracing::warn!(error = %err, failures = self.failures, "model predict failed; the reactive rule answers");
                }
                fallback.mode = Mode::Fallback;
                fallback
            }
        }
    }

    fn outcome(&mut self, outcome: &TickOutcome<'_>) {
        self.reactive.outcome(outcome);
        if let Err(err) = self.model.outcome(&Outcome {
            tick: outcome.tick,
            violation: outcome.violation,
            culprit: outcome.culprit,
        }) {
            self.failures += 1;
            if self.failures == 1 || self.failures.is_power_of_two() {
                tracing::warn!(error = %err, "model outcome failed");
            }
        }
    }

    fn stats(&self) -> PredictorStats {
        PredictorStats::default().with_train_steps(self.version.saturating_sub(self.start_version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(global: f32, risks: &[(&str, f32)]) -> PredictionSet {
        PredictionSet {
            tick: 7,
            mode: Mode::Predicting,
            model_version: 3,
            global_risk: global,
            services: risks
                .iter()
                .map(|(s, r)| ServicePrediction {
                    service: (*s).to_owned(),
                    risk: *r,
                })
                .collect(),
            precision: Some(0.9),
            recall: Some(0.8),
        }
    }

    #[test]
    fn union_takes_the_higher_risk_per_service_and_keeps_the_model_fields() {
        let mut model = set(0.3, &[("a", 0.2), ("b", 0.7), ("c", f32::NAN)]);
        let mut rule = set(0.9, &[("b", 0.1), ("a", 0.95), ("c", 0.4), ("d", 0.5)]);
        rule.model_version = 0;
        rule.mode = Mode::Learning;
        union(&mut model, &rule);
        let risks: Vec<(&str, f32)> = model
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.risk))
            .collect();
        assert_eq!(risks, vec![("a", 0.95), ("b", 0.7), ("c", 0.4), ("d", 0.5)]);
        assert_eq!(model.global_risk, 0.9);
        assert_eq!(model.mode, Mode::Predicting);
        assert_eq!(model.model_version, 3);
        assert_eq!(model.precision, Some(0.9));
    }

    #[test]
    fn union_never_lowers_a_risk() {
        let mut model = set(0.8, &[("a", 0.6)]);
        union(&mut model, &set(0.1, &[("a", 0.0)]));
        assert_eq!(model.services[0].risk, 0.6);
        assert_eq!(model.global_risk, 0.8);
    }
}
