//! The engine that lives on the model thread: inference, label maturing, the replay buffer,
//! training steps, the mode switch and checkpoints. Everything tch is in here and in `net`.
//!
//! Inference and training share the one thread, so a prediction always sees one whole set of
//! weights: a training step is applied between two predictions and bumps the version. That is
//! the atomic swap, without a second copy of the weights.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use crate::ModelError;
use crate::checkpoint::{self, Schema};
use crate::config::ModelConfig;
use crate::diagnosis::{Diagnoser, Resource};
use crate::features::{Frame, History, Normaliser, TickFeatures, Windows};
use crate::net::{NetShape, SeerNet};
use crate::prediction::{Gate, Mode, ModelStatus, Outcome, Prediction, Score, ServiceRisk};
use crate::replay::{Replay, Sample};

/// Weight of the culprit's label against the other services' in the service head. Kept at 1 so
/// that the per-service risk stays a calibrated probability: a weight `k` would move the optimum
/// to `k p / (k p + 1 - p)`, and a true risk of 0.2 would cross an alarm threshold of 0.5.
const CULPRIT_WEIGHT: f64 = 1.0;
/// Steps over which the learning rate falls to 1/sqrt(2) of its start.
const LR_DECAY_STEPS: f64 = 2000.0;
/// Gradient norm clip.
const CLIP_NORM: f64 = 1.0;
/// Training steps averaged in `train_step_ms`.
const STEP_TIMES: usize = 50;

/// A tick predicted and waiting for its label.
#[derive(Debug)]
struct Pending {
    seq: u64,
    tick: u64,
    ids: Vec<u32>,
    /// The alarm signal: the highest per-service risk.
    alarm: f32,
}

/// The model thread's state.
#[derive(Debug)]
pub(crate) struct Engine {
    cfg: ModelConfig,
    schema: Schema,
    vs: nn::VarStore,
    net: SeerNet,
    opt: nn::Optimizer,
    norm: Normaliser,
    history: History,
    ids: HashMap<String, u32>,
    smoothed: HashMap<u32, f32>,
    smoothed_global: Option<f32>,
    pending: VecDeque<Pending>,
    /// (tick, violation, culprit id), in tick order.
    outcomes: VecDeque<(u64, bool, Option<u32>)>,
    replay: Replay,
    score: Score,
    mode: Mode,
    version: u64,
    train_steps: u64,
    observed: u64,
    rng: StdRng,
    diagnoser: Diagnoser,
    last_loss: Option<f32>,
    skipped_steps: u64,
    step_ms: VecDeque<f32>,
    infer_ms: VecDeque<f32>,
    /// Why the checkpoint at start was not used.
    load_error: Option<String>,
    /// Why the last save failed; cleared by a save that succeeds.
    save_error: Option<String>,
}

impl Engine {
    /// Builds a fresh network, then restores the checkpoint when one is configured and present.
    /// A checkpoint that cannot be used is reported in [`ModelStatus::checkpoint_error`] and the
    /// model starts fresh.
    pub(crate) fn new(cfg: ModelConfig) -> Result<Self, ModelError> {
        cfg.validate().map_err(ModelError::Config)?;
        tch::set_num_threads(i32::try_from(cfg.threads).unwrap_or(1));
        tch::manual_seed(cfg.seed as i64);
        let channels = cfg.channels();
        let shape = NetShape {
            channels: channels as i64,
            conv: cfg.conv_channels,
            hidden: cfg.lstm_hidden,
            embed: cfg.embed,
        };
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = SeerNet::new(&vs.root(), shape);
        let schema = Schema {
            features: cfg.features.clone(),
            window: cfg.window,
            horizon: cfg.horizon,
            shape: [shape.channels, shape.conv, shape.hidden, shape.embed],
        };
        let mut norm = Normaliser::new(cfg.features.len());
        let mut version = 0;
        let mut checkpoint_error = None;
        if let Some(path) = cfg.checkpoint.as_deref().filter(|p| p.exists()) {
            match checkpoint::load(path, &schema, &mut vs) {
                Ok(restored) => {
                    version = restored.version;
                    norm = restored.normaliser;
                }
                Err(err) => {
                    // A corrupt or mismatched file is set aside for inspection and the next save
                    // writes a fresh one; one that could not be read (permissions, I/O) stays
                    // where it is, for a later start to load.
                    if matches!(
                        err,
                        ModelError::CheckpointCorrupt { .. }
                            | ModelError::CheckpointMismatch { .. }
                    ) {
                        let mut rejected = path.as_os_str().to_owned();
                        rejected.push(".rejected");
                        let _ = std::fs::rename(path, rejected);
                    }
                    checkpoint_error = Some(error_chain(&err));
                }
            }
        }
        let opt = nn::Adam::default().build(&vs, cfg.learning_rate)?;
        Ok(Engine {
            history: History::new(cfg.history, channels),
            replay: Replay::new(cfg.replay_capacity),
            score: Score::new(cfg.score_window),
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            schema,
            vs,
            net,
            opt,
            norm,
            ids: HashMap::new(),
            smoothed: HashMap::new(),
            smoothed_global: None,
            pending: VecDeque::new(),
            outcomes: VecDeque::new(),
            mode: Mode::Learning,
            version,
            train_steps: 0,
            observed: 0,
            diagnoser: Diagnoser::new(),
            last_loss: None,
            skipped_steps: 0,
            step_ms: VecDeque::new(),
            infer_ms: VecDeque::new(),
            load_error: checkpoint_error,
            save_error: None,
        })
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// Records one tick and predicts every service in it.
    pub(crate) fn observe(&mut self, input: &TickFeatures<'_>) -> Result<Prediction, ModelError> {
        let started = Instant::now();
        let out = self.observe_inner(input);
        if self.infer_ms.len() == STEP_TIMES {
            self.infer_ms.pop_front();
        }
        self.infer_ms
            .push_back(started.elapsed().as_secs_f32() * 1000.0);
        out
    }

    fn observe_inner(&mut self, input: &TickFeatures<'_>) -> Result<Prediction, ModelError> {
        let s = input.services.len();
        if input.features.len() != s * input.feature_names.len() {
            return Err(ModelError::Input(format!(
                "{} values for {} services x {} features",
                input.features.len(),
                s,
                input.feature_names.len()
            )));
        }
        let ids: Vec<u32> = input.services.iter().map(|n| self.intern(n)).collect();
        let rows = self.norm.rows(input, &self.cfg.features);
        let edges = input
            .edges
            .iter()
            .copied()
            .filter(|(a, b)| *a < s && *b < s && a != b)
            .collect::<Vec<_>>();
        let seq = self.history.push(Frame {
            ids: ids.clone(),
            rows,
            edges: edges.clone(),
        });
        let min_seq = self.history.first() + self.cfg.window as u64 - 1;
        self.replay.drop_before(min_seq);

        let (risks, global) = if s == 0 {
            (Vec::new(), 0.0)
        } else {
            let w = self.history.windows(&[seq], self.cfg.window);
            let (x, mask, adj) = self.tensors(&w)?;
            let logits = self.net.infer(&x, &mask, &adj);
            let risks = Vec::<f32>::try_from(&logits.service.sigmoid().view([-1]))?;
            let global = Vec::<f32>::try_from(&logits.global.sigmoid())?;
            (risks, global.first().copied().unwrap_or(0.0))
        };
        // Smooth over ticks, per service, so one spiky tick does not make an alarm; falling
        // more slowly than rising, so an alarm does not flicker off and on while a fault builds.
        let (rise, fall) = (self.cfg.smoothing, self.cfg.decay);
        let smooth = |prev: f32, r: f32| prev + if r > prev { rise } else { fall } * (r - prev);
        let risks: Vec<f32> = risks
            .iter()
            .zip(&ids)
            .map(|(r, id)| {
                let v = smooth(self.smoothed.get(id).copied().unwrap_or(*r), *r);
                self.smoothed.insert(*id, v);
                v
            })
            .collect();
        let global = self
            .smoothed_global
            .map_or(global, |prev| smooth(prev, global));
        self.smoothed_global = Some(global);
        if self.smoothed.len() > 4 * ids.len() + 64 {
            let live: HashSet<u32> = ids.iter().copied().collect();
            self.smoothed.retain(|id, _| live.contains(id));
        }
        self.pending.push_back(Pending {
            seq,
            tick: input.tick,
            ids,
            alarm: risks.iter().copied().fold(0.0, f32::max),
        });
        self.observed += 1;

        let services = (0..s)
            .map(|i| {
                let risk = risks.get(i).copied().unwrap_or(0.0);
                let diagnosis = self.diagnose(input, i, risk, &risks, &edges);
                ServiceRisk {
                    service: input.services[i].clone(),
                    risk,
                    diagnosis,
                }
            })
            .collect();
        Ok(Prediction {
            tick: input.tick,
            model_version: self.version,
            mode: self.mode,
            global_risk: global,
            services,
            precision: self.score.precision(),
            recall: self.score.recall(),
        })
    }

    /// Learns healthy baselines from unflagged services and diagnoses flagged ones.
    fn diagnose(
        &mut self,
        input: &TickFeatures<'_>,
        row: usize,
        risk: f32,
        risks: &[f32],
        edges: &[(usize, usize)],
    ) -> Option<crate::diagnosis::Diagnosis> {
        let width = input.feature_names.len();
        let values = &input.features[row * width..(row + 1) * width];
        let mut signals: Vec<(&str, f32)> = input
            .feature_names
            .iter()
            .zip(values)
            .filter(|(_, v)| v.is_finite())
            .map(|(name, v)| (*name, *v))
            .collect();
        if let (Some(total), Some(own)) = (
            input.value(row, "latency_p99_ms"),
            input.value(row, "self_latency_p99_ms"),
        ) {
            signals.push(("downstream_ms", (total - own).max(0.0)));
        }
        let service = input.services[row].as_str();
        if risk < self.cfg.threshold {
            self.diagnoser.learn(service, &signals, input.node);
            return None;
        }
        let mut d = self.diagnoser.diagnose(service, &signals, input.node);
        // A callee at higher risk than this service points at the dependency.
        let worst_callee = edges
            .iter()
            .filter(|(from, _)| *from == row)
            .map(|(_, to)| *to)
            .max_by(|a, b| risks[*a].total_cmp(&risks[*b]));
        if let Some(callee) = worst_callee
            && (d.resource == Resource::Downstream || risks[callee] > risk)
        {
            d.dependency = Some(input.services[callee].clone());
            if d.resource == Resource::Unknown {
                d.resource = Resource::Downstream;
                d.action = Resource::Downstream.action().to_owned();
            }
        }
        Some(d)
    }

    fn tensors(&self, w: &Windows) -> Result<(Tensor, Tensor, Tensor), ModelError> {
        let (b, s) = (w.ticks as i64, w.services as i64);
        let x = Tensor::f_from_slice(&w.x)?.f_view([
            b,
            s,
            self.cfg.window as i64,
            self.cfg.channels() as i64,
        ])?;
        let mask = Tensor::f_from_slice(&w.mask)?.f_view([b, s])?;
        let adj = Tensor::f_from_slice(&w.adjacency)?.f_view([b, s, s])?;
        Ok((x, mask, adj))
    }

    /// Records what happened in a tick and matures the labels it completes.
    pub(crate) fn outcome(&mut self, o: &Outcome<'_>) {
        if self.outcomes.back().is_some_and(|(t, _, _)| *t >= o.tick) {
            return; // duplicate or out of order: the first report stands
        }
        let culprit = o.culprit.map(|c| self.intern(c));
        self.outcomes.push_back((o.tick, o.violation, culprit));
        let h = self.cfg.horizon as u64;
        while self.pending.front().is_some_and(|p| p.tick + h <= o.tick) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.mature(p, h);
        }
        let keep_after = self.pending.front().map_or(o.tick, |p| p.tick);
        while self
            .outcomes
            .front()
            .is_some_and(|(t, _, _)| *t <= keep_after)
        {
            self.outcomes.pop_front();
        }
        let gate = Gate {
            train_steps: self.train_steps,
            min_train_steps: self.cfg.min_train_steps,
            min_positives: self.cfg.min_positives,
            precision_floor: self.cfg.precision_floor,
            recall_floor: self.cfg.recall_floor,
        };
        self.mode = self.score.next_mode(self.mode, &gate);
    }

    fn mature(&mut self, p: Pending, h: u64) {
        let start = self.outcomes.partition_point(|(t, _, _)| *t <= p.tick);
        let mut violation = false;
        let mut culprits = HashSet::new();
        for (t, v, c) in self.outcomes.iter().skip(start) {
            if *t > p.tick + h {
                break;
            }
            if *v {
                violation = true;
                if let Some(c) = c {
                    culprits.insert(*c);
                }
            }
        }
        self.score.record(p.alarm >= self.cfg.threshold, violation);
        if p.seq + 1 < self.history.first() + self.cfg.window as u64 {
            return;
        }
        let services: Vec<f32> = p
            .ids
            .iter()
            .map(|id| f32::from(u8::from(culprits.contains(id))))
            .collect();
        // A culprit that is none of this tick's services (an uninstrumented backend, one gone
        // from the frame) teaches the service heads nothing: all-zero targets would say "no
        // service is the culprit".
        let culprit_known = !violation || services.iter().any(|v| *v > 0.0);
        self.replay.push(Sample {
            seq: p.seq,
            global: violation,
            services,
            culprit_known,
        });
    }

    /// One training step when one is due after an observation.
    pub(crate) fn maybe_train(&mut self) -> Result<(), ModelError> {
        let every = self.cfg.train_every as u64;
        if every > 0 && self.observed.is_multiple_of(every) {
            self.train_step()?;
        }
        Ok(())
    }

    /// One training step on a replay batch; `None` when the buffer is still empty or the
    /// batch's loss was not finite (the step is skipped and counted, so one bad batch cannot
    /// poison the weights and, through the next checkpoint, later runs).
    pub(crate) fn train_step(&mut self) -> Result<Option<f32>, ModelError> {
        let started = Instant::now();
        let batch = self.replay.sample(
            &mut self.rng,
            self.cfg.batch_ticks,
            self.cfg.positive_fraction,
        );
        if batch.is_empty() {
            return Ok(None);
        }
        let seqs: Vec<u64> = batch.iter().map(|s| s.seq).collect();
        let w = self.history.windows(&seqs, self.cfg.window);
        let s_max = w.services;
        let mut y = vec![0.0f32; batch.len() * s_max];
        let mut weight = vec![0.0f32; batch.len() * s_max];
        let mut yg = Vec::with_capacity(batch.len());
        for (b, sample) in batch.iter().enumerate() {
            yg.push(f32::from(u8::from(sample.global)));
            if !sample.culprit_known {
                continue;
            }
            for (i, label) in sample.services.iter().enumerate().take(s_max) {
                let k = b * s_max + i;
                y[k] = *label;
                weight[k] = w.mask[k] * (1.0 + (CULPRIT_WEIGHT as f32 - 1.0) * *label);
            }
        }
        let (x, mask, adj) = self.tensors(&w)?;
        let shape = [batch.len() as i64, s_max as i64];
        let y = Tensor::f_from_slice(&y)?.f_view(shape)?;
        let weight = Tensor::f_from_slice(&weight)?.f_view(shape)?;
        let yg = Tensor::f_from_slice(&yg)?;
        let logits = self.net.forward(&x, &mask, &adj);
        let global_loss = logits.global.f_binary_cross_entropy_with_logits::<Tensor>(
            &yg,
            None,
            None,
            Reduction::Mean,
        )?;
        let service_loss = logits
            .service
            .f_binary_cross_entropy_with_logits::<Tensor>(
                &y,
                Some(weight.shallow_clone()),
                None,
                Reduction::Sum,
            )?
            / weight.sum(Kind::Float).clamp_min(1.0);
        let loss = global_loss + service_loss;
        if self.train_steps.is_multiple_of(100) {
            // Decay as 1 / sqrt(1 + steps / 2000): fast early learning, steadier outputs later.
            let decay = (1.0 + self.train_steps as f64 / LR_DECAY_STEPS).sqrt();
            self.opt.set_lr(self.cfg.learning_rate / decay);
        }
        let value = loss.f_double_value(&[])? as f32;
        self.last_loss = Some(value);
        if !value.is_finite() {
            if self.skipped_steps == 0 {
                tracing::warn!(
                    loss = value,
                    "seer-model: a training step's loss was not finite; skipped (counted in the status)"
                );
            }
            self.skipped_steps += 1;
            return Ok(None);
        }
        self.opt.backward_step_clip_norm(&loss, CLIP_NORM);
        self.version += 1;
        self.train_steps += 1;
        if self.step_ms.len() == STEP_TIMES {
            self.step_ms.pop_front();
        }
        self.step_ms
            .push_back(started.elapsed().as_secs_f32() * 1000.0);
        if self.cfg.checkpoint.is_some()
            && self.cfg.checkpoint_every > 0
            && self.train_steps.is_multiple_of(self.cfg.checkpoint_every)
        {
            // A failure is kept in the status (`save` records it) and retried at the next one.
            let _ = self.save();
        }
        Ok(Some(value))
    }

    /// Writes the checkpoint, when one is configured.
    pub(crate) fn save(&mut self) -> Result<(), ModelError> {
        let Some(path) = self.cfg.checkpoint.clone() else {
            return Err(ModelError::Config(
                "no checkpoint path configured".to_owned(),
            ));
        };
        let saved = checkpoint::save(&path, &self.schema, self.version, &self.norm, &self.vs);
        self.save_error = saved.as_ref().err().map(|e| error_chain(e));
        saved
    }

    pub(crate) fn has_checkpoint(&self) -> bool {
        self.cfg.checkpoint.is_some()
    }

    pub(crate) fn status(&self) -> ModelStatus {
        let ms: f32 = self.step_ms.iter().sum();
        ModelStatus {
            version: self.version,
            train_steps: self.train_steps,
            mode: self.mode,
            precision: self.score.precision(),
            recall: self.score.recall(),
            matured: self.score.matured,
            matured_positive: self.score.matured_positive,
            replay: self.replay.len(),
            last_loss: self.last_loss,
            skipped_steps: self.skipped_steps,
            train_step_ms: (!self.step_ms.is_empty()).then(|| ms / self.step_ms.len() as f32),
            infer_ms: (!self.infer_ms.is_empty())
                .then(|| self.infer_ms.iter().sum::<f32>() / self.infer_ms.len() as f32),
            checkpoint_error: self.save_error.clone().or_else(|| self.load_error.clone()),
        }
    }

    /// Number of trainable parameters.
    pub(crate) fn parameters(&self) -> usize {
        self.vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum()
    }
}

/// An error and its causes, one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
