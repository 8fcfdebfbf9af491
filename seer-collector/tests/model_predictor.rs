//! The collector with the `model` feature serves predictions from the model once it is trained,
//! and from the reactive rule before that.
#![cfg(feature = "model")]

use seer_collector::predict::{FEATURES, Mode, ModelPredictor, Predictor, TickInput, TickOutcome};
use seer_model::ModelConfig;

/// A short synthetic stream: every 24 ticks one service (in turn) builds its own queue over six
/// ticks, then the QoS is violated for five ticks with that service as the culprit.
fn features(services: usize, tick: u64) -> Vec<f32> {
    let culprit = (tick / 24) as usize % services;
    let phase = tick % 24;
    let mut out = Vec::with_capacity(services * FEATURES.len());
    for i in 0..services {
        let noise = ((tick * 7 + i as u64 * 13) % 5) as f32 * 0.05;
        let q = if i == culprit && (12..23).contains(&phase) {
            (phase - 11) as f32 * 1.5
        } else {
            0.1
        };
        out.extend(FEATURES.iter().map(|f| match *f {
            "queue_depth_mean" => q + noise,
            "queue_wait_p99_ms" => 2.0 * q + noise,
            _ => f32::NAN,
        }));
    }
    out
}

#[test]
fn serves_model_predictions_once_trained() {
    let config = ModelConfig::default()
        .with_features(["queue_depth_mean", "queue_wait_p99_ms"])
        .with_window(8)
        .with_horizon(4)
        .with_conv_channels(8)
        .with_lstm_hidden(8)
        .with_embed(8)
        .with_history(2048)
        .with_learning_rate(1e-2)
        .with_train_every(1)
        .with_min_train_steps(100)
        .with_min_positives(20)
        .with_score_window(200)
        .with_smoothing(1.0)
        .with_seed(3);
    let mut predictor = ModelPredictor::new(config).expect("model starts");
    assert_eq!(predictor.name(), "cnn-lstm");
    let services: Vec<String> = (0..3).map(|i| format!("svc{i}")).collect();
    let edges = [(0, 1), (0, 2)];
    let mut first_mode = None;
    let mut predicting_from = None;
    let mut named_ahead = 0;
    let mut events = 0;
    for tick in 0..900u64 {
        let f = features(services.len(), tick);
        let set = predictor.observe(&TickInput {
            tick,
            services: &services,
            features: &f,
            feature_names: FEATURES,
            edges: &edges,
        });
        assert_eq!(set.services.len(), 3);
        first_mode.get_or_insert(set.mode);
        if set.mode == Mode::Predicting {
            predicting_from.get_or_insert(tick);
            assert!(set.model_version > 0);
            // Just before each violation the model names the service building the queue.
            if tick % 24 == 17 {
                events += 1;
                let culprit = format!("svc{}", (tick / 24) % 3);
                let top = set
                    .services
                    .iter()
                    .max_by(|a, b| a.risk.total_cmp(&b.risk))
                    .map(|s| s.service.clone());
                if top.as_deref() == Some(culprit.as_str())
                    && set.services.iter().any(|s| s.risk >= 0.5)
                {
                    named_ahead += 1;
                }
            }
        }
        let phase = tick % 24;
        let violation = (18..23).contains(&phase);
        let culprit = format!("svc{}", (tick / 24) % 3);
        predictor.outcome(&TickOutcome {
            tick,
            violation,
            episode_start: phase == 18,
            culprit: violation.then_some(culprit.as_str()),
        });
    }
    assert_eq!(
        first_mode,
        Some(Mode::Learning),
        "the reactive rule answers first"
    );
    let from = predicting_from.expect("the model earned its place");
    assert!(from > 100, "not before it trained (from tick {from})");
    assert!(
        events > 5 && named_ahead * 10 >= events * 8,
        "named {named_ahead} of {events}"
    );
    assert!(predictor.stats().train_steps >= 800);
    assert_eq!(predictor.failures(), 0);
}
