//! The model through its public API: learning, services coming and going, checkpoints, modes.

use seer_model::{Mode, ModelConfig, ModelError, ModelHandle, Outcome, TickFeatures};

const NAMES: [&str; 2] = ["queue_depth_mean", "queue_wait_p99_ms"];

fn tiny() -> ModelConfig {
    ModelConfig::default()
        .with_features(NAMES)
        .with_window(8)
        .with_horizon(4)
        .with_conv_channels(8)
        .with_lstm_hidden(8)
        .with_embed(8)
        .with_batch_ticks(8)
        .with_history(2048)
        .with_learning_rate(1e-2)
        // The toy's events are 24 ticks apart: no smoothing, so risks fall as soon as a queue
        // drains.
        .with_smoothing(1.0)
        .with_seed(7)
}

/// A learnable toy stream: every 24 ticks one service (in turn) builds a queue over 6 ticks,
/// then the QoS is violated for 5 ticks with that service as the culprit. `violate = false`
/// keeps the queues but never reports a violation.
struct Toy {
    services: Vec<String>,
    tick: u64,
    violate: bool,
}

impl Toy {
    fn new(n: usize) -> Self {
        Toy {
            services: (0..n).map(|i| format!("svc{i}")).collect(),
            tick: 0,
            violate: true,
        }
    }

    fn phase(&self) -> (usize, u64) {
        let event = (self.tick / 24) as usize;
        (event % self.services.len(), self.tick % 24)
    }

    /// Features of the current tick.
    fn features(&self) -> Vec<f32> {
        let (culprit, phase) = self.phase();
        let mut f = Vec::new();
        for i in 0..self.services.len() {
            let noise = ((self.tick * 7 + i as u64 * 13) % 5) as f32 * 0.05;
            let q = if i == culprit && (12..23).contains(&phase) {
                (phase - 11) as f32 * 1.5
            } else {
                0.1
            };
            f.extend([q + noise, 2.0 * q + noise]);
        }
        f
    }

    /// Drives the model one tick; returns the prediction.
    fn step(&mut self, model: &ModelHandle) -> seer_model::Prediction {
        let features = self.features();
        let edges: Vec<(usize, usize)> = (1..self.services.len()).map(|i| (0, i)).collect();
        let p = model
            .observe(&TickFeatures {
                tick: self.tick,
                services: &self.services,
                features: &features,
                feature_names: &NAMES,
                edges: &edges,
                node: &[],
            })
            .expect("observe");
        let (culprit, phase) = self.phase();
        let violation = self.violate && (18..23).contains(&phase);
        model
            .outcome(&Outcome {
                tick: self.tick,
                violation,
                culprit: violation.then_some(self.services[culprit].as_str()),
            })
            .expect("outcome");
        self.tick += 1;
        p
    }
}

#[test]
fn loss_decreases_on_a_learnable_task() {
    let model = ModelHandle::spawn(tiny().with_train_every(0)).expect("spawn");
    let mut toy = Toy::new(3);
    for _ in 0..300 {
        toy.step(&model);
    }
    let losses = model.train(160).expect("train");
    assert_eq!(losses.len(), 160);
    let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = losses[140..].iter().sum::<f32>() / 20.0;
    assert!(last < 0.6 * first, "loss {first} -> {last}");
    assert_eq!(model.status().expect("status").version, 160);
}

#[test]
fn online_training_names_the_culprit_and_earns_trust() {
    let model = ModelHandle::spawn(
        tiny()
            .with_train_every(1)
            .with_min_train_steps(100)
            .with_min_positives(20)
            .with_score_window(200),
    )
    .expect("spawn");
    let mut toy = Toy::new(3);
    let mut named = 0;
    let mut events = 0;
    for _ in 0..900 {
        let p = toy.step(&model);
        let (culprit, phase) = toy.phase();
        // Just before each violation (it starts at phase 18), in the last third of the run.
        if toy.tick > 600 && phase == 17 {
            events += 1;
            if p.top().map(|s| s.service.as_str()) == Some(toy.services[culprit].as_str())
                && p.global_risk > 0.5
            {
                named += 1;
            }
        }
    }
    assert!(
        named * 10 >= events * 8,
        "named {named} of {events} culprits ahead"
    );
    let status = model.status().expect("status");
    assert_eq!(status.mode, Mode::Predicting, "{status:?}");

    // The world changes: the same queues no longer lead to violations. Precision collapses and
    // the model falls back to the reactive rule.
    toy.violate = false;
    let mut fell_back = false;
    for _ in 0..400 {
        if toy.step(&model).mode == Mode::Fallback {
            fell_back = true;
            break;
        }
    }
    assert!(fell_back, "{:?}", model.status().expect("status"));
}

#[test]
fn services_come_and_go_without_restart() {
    let model = ModelHandle::spawn(tiny().with_train_every(1)).expect("spawn");
    let mut toy = Toy::new(3);
    for _ in 0..60 {
        toy.step(&model);
    }
    // A fourth service appears, then the second one disappears.
    toy.services.push("late".to_owned());
    for _ in 0..30 {
        let p = toy.step(&model);
        assert_eq!(p.services.len(), 4);
        assert_eq!(p.services[3].service, "late");
        assert!(p.services.iter().all(|s| s.risk.is_finite()));
    }
    toy.services.remove(1);
    for _ in 0..30 {
        let p = toy.step(&model);
        let names: Vec<&str> = p.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, ["svc0", "svc2", "late"]);
        assert!(p.global_risk.is_finite());
    }
    // Nothing at all, and a mismatched row.
    let empty = model
        .observe(&TickFeatures {
            tick: 10_000,
            services: &[],
            features: &[],
            feature_names: &NAMES,
            edges: &[],
            node: &[],
        })
        .expect("empty tick");
    assert!(empty.services.is_empty());
    let bad = model.observe(&TickFeatures {
        tick: 10_001,
        services: &toy.services,
        features: &[1.0],
        feature_names: &NAMES,
        edges: &[(0, 99)],
        node: &[],
    });
    assert!(matches!(bad, Err(ModelError::Input(_))), "{bad:?}");
    assert!(model.status().is_ok(), "the thread survives bad input");
}

fn predict_fixed(model: &ModelHandle) -> Vec<f32> {
    let services: Vec<String> = ["a", "b"].iter().map(|s| (*s).to_owned()).collect();
    let p = model
        .observe(&TickFeatures {
            tick: 1,
            services: &services,
            features: &[3.0, 4.0, 0.1, 0.1],
            feature_names: &NAMES,
            edges: &[(0, 1)],
            node: &[],
        })
        .expect("observe");
    let mut out: Vec<f32> = p.services.iter().map(|s| s.risk).collect();
    out.push(p.global_risk);
    out
}

#[test]
fn checkpoint_round_trip_restores_weights_and_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.ckpt");
    let model =
        ModelHandle::spawn(tiny().with_train_every(0).with_checkpoint(&path)).expect("spawn");
    let mut toy = Toy::new(3);
    for _ in 0..100 {
        toy.step(&model);
    }
    model.train(30).expect("train");
    model.save().expect("save");
    let version = model.status().expect("status").version;
    assert_eq!(version, 30);
    drop(model);

    // Same weights, same normaliser: a fresh process (no history) predicts the same as a
    // second fresh process restored from a copy of the same file.
    let copy = dir.path().join("copy.ckpt");
    std::fs::copy(&path, &copy).expect("copy");
    let a = ModelHandle::spawn(tiny().with_train_every(0).with_checkpoint(&path)).expect("spawn");
    let sa = a.status().expect("status");
    assert_eq!(sa.version, version);
    assert_eq!(sa.checkpoint_error, None);
    let ra = predict_fixed(&a);
    drop(a);
    let b = ModelHandle::spawn(tiny().with_train_every(0).with_checkpoint(&copy)).expect("spawn");
    assert_eq!(predict_fixed(&b), ra);
    let fresh = ModelHandle::spawn(tiny().with_train_every(0).with_seed(99)).expect("spawn");
    assert_ne!(
        predict_fixed(&fresh),
        ra,
        "restored weights differ from a fresh model"
    );
}

/// What the model's status says about its checkpoint.
fn checkpoint_error(model: &ModelHandle) -> Option<String> {
    model.status().expect("status").checkpoint_error
}

#[test]
fn corrupt_or_mismatched_checkpoints_give_a_fresh_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.ckpt");
    {
        let model =
            ModelHandle::spawn(tiny().with_train_every(0).with_checkpoint(&path)).expect("spawn");
        let mut toy = Toy::new(2);
        for _ in 0..40 {
            toy.step(&model);
        }
        model.train(5).expect("train");
    } // dropping the last handle writes the final checkpoint
    let good = std::fs::read(&path).expect("checkpoint written on shutdown");

    // Flip one byte in the middle.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    std::fs::write(&path, &bad).expect("write");
    let model = ModelHandle::spawn(tiny().with_checkpoint(&path))
        .expect("a corrupt file never fails spawn");
    let status = model.status().expect("status");
    assert_eq!(status.version, 0, "fresh model");
    let err = status.checkpoint_error.expect("reported");
    assert!(err.contains("corrupt"), "{err}");
    assert!(
        dir.path().join("model.ckpt.rejected").exists(),
        "kept for inspection"
    );
    predict_fixed(&model);
    drop(model);

    // Truncated, and garbage.
    for bytes in [
        &good[..good.len() / 3],
        b"not a checkpoint at all".as_slice(),
    ] {
        std::fs::write(&path, bytes).expect("write");
        let model = ModelHandle::spawn(tiny().with_checkpoint(&path)).expect("spawn");
        let err = checkpoint_error(&model).expect("reported");
        assert!(err.contains("corrupt"), "{err}");
    }

    // Intact, but written for another feature set.
    std::fs::write(&path, &good).expect("write");
    let other = tiny()
        .with_features(["queue_depth_mean", "runq_wait_ms_per_s"])
        .with_checkpoint(&path);
    let model = ModelHandle::spawn(other).expect("spawn");
    let err = checkpoint_error(&model).expect("reported");
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn an_unreadable_checkpoint_stays_in_place_and_a_failed_save_is_reported_until_one_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.ckpt");
    // Something that exists but cannot be read as a file (an I/O error, not a damaged file).
    std::fs::create_dir(&path).expect("mkdir");
    let model = ModelHandle::spawn(tiny().with_train_every(0).with_checkpoint(&path))
        .expect("an unreadable file never fails spawn");
    let status = model.status().expect("status");
    assert_eq!(status.version, 0, "fresh model");
    let err = status.checkpoint_error.expect("reported");
    assert!(err.contains("i/o"), "{err}");
    assert!(path.is_dir(), "not set aside: a later start may read it");
    assert!(!dir.path().join("model.ckpt.rejected").exists());
    drop(model);
    std::fs::remove_dir(&path).expect("rmdir");

    // A save that fails is reported until one succeeds.
    let model =
        ModelHandle::spawn(tiny().with_train_every(0).with_checkpoint(&path)).expect("spawn");
    assert_eq!(checkpoint_error(&model), None);
    std::fs::create_dir(&path).expect("mkdir");
    model.save().expect_err("cannot replace a folder");
    let err = checkpoint_error(&model).expect("reported");
    assert!(err.contains("i/o"), "{err}");
    std::fs::remove_dir(&path).expect("rmdir");
    model.save().expect("save");
    assert!(path.is_file());
    assert_eq!(checkpoint_error(&model), None);
}

#[test]
fn bad_config_is_a_clear_error() {
    let err = ModelHandle::spawn(ModelConfig::default().with_window(1)).expect_err("rejected");
    assert!(matches!(err, ModelError::Config(_)));
    assert!(err.to_string().contains("window"), "{err}");
}
