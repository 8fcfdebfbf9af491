//! Seer's predictor: a CNN+LSTM in libtorch (through `tch`) that learns online which service
//! will cause a QoS violation, and diagnoses the resource it is short of.
//!
//! No `tch` type appears in this crate's public API: callers hand in plain slices
//! ([`TickFeatures`]) and get plain Rust values back ([`Prediction`]). All libtorch state lives on
//! one OS thread behind a [`ModelHandle`].
//!
//! # Quick start
//!
//! ```
//! use seer_model::{ModelConfig, ModelHandle, Mode, Outcome, TickFeatures};
//!
//! // Tiny shapes for the example; the defaults are W = 64, H = 30 (see `ModelConfig`).
//! let model = ModelHandle::spawn(ModelConfig::default().with_window(8).with_horizon(3))?;
//! let services = vec!["frontend".to_owned(), "posts".to_owned()];
//! let names = ["queue_depth_mean", "queue_wait_p99_ms", "self_latency_p99_ms"];
//! let p = model.observe(&TickFeatures {
//!     tick: 1,
//!     services: &services,
//!     features: &[0.2, 1.5, 3.0, 0.1, 0.8, 2.0],
//!     feature_names: &names,
//!     edges: &[(0, 1)], // frontend calls posts
//!     node: &[("psi_cpu_some", 2.0)],
//! })?;
//! assert_eq!(p.services.len(), 2);
//! assert_eq!(p.mode, Mode::Learning); // untrained: callers use their reactive rule
//! model.outcome(&Outcome { tick: 1, violation: false, culprit: None })?;
//! # Ok::<(), seer_model::ModelError>(())
//! ```
//!
//! # How it works
//!
//! - **Input** ([`TickFeatures`]): for every service, the last W ticks of its configured
//!   features, each normalised online, as a deviation from the service's own slow baseline, and
//!   as that deviation relative to the other services in the same tick (machine-wide stalls
//!   cancel), plus a presence flag.
//! - **Network**: a strided two-layer 1-D convolution over time, an LSTM over the result, a skip
//!   path from the last ticks, then a neighbour mix (mean of callee and of caller embeddings over
//!   the call graph). Heads: per service, P(this service causes a violation within H); global,
//!   P(a violation within H). Services are the batch dimension, so the weights are shared and
//!   services may come and go at run time.
//! - **Training**: online, on the model thread, from a replay buffer with violation upsampling.
//!   The label of tick t matures once the outcomes of t+1..=t+H are known: a violation in that
//!   span, and the culprits named for it.
//! - **Output**: risks smoothed over ticks (weight 0.2 per tick while they rise, 0.1 while they
//!   fall, by default), so one noisy tick does not raise an alarm and a building fault's alarm
//!   does not flicker off and on.
//! - **Trust**: precision and recall of the model's own alarms (highest service risk at or over
//!   the threshold) on matured labels, tick by tick, decide the
//!   [`Mode`]: learning until the model has earned its place, fallback whenever recent
//!   precision (or recall) drops below its floor.
//! - **Quality check**: [`sim`] streams a seeded queueing simulation through the model and a
//!   reactive baseline (`cargo xtask model-eval [--seed N]`).
//! - **Diagnosis** ([`Diagnoser`]): for flagged services, the most deviated resource against a
//!   healthy baseline, with evidence and a recommended action.
//! - **Checkpoints**: weights, normaliser and feature schema in one checksummed file written
//!   crash-safely; a bad file gives a clear error and a fresh model.

mod checkpoint;
mod config;
pub mod diagnosis;
mod error;
mod features;
mod handle;
mod net;
mod prediction;
mod replay;
pub mod sim;
mod smoke;
mod trainer;

pub use config::{DEFAULT_FEATURES, ModelConfig};
pub use diagnosis::{Diagnoser, Diagnosis, Evidence, Resource};
pub use error::ModelError;
pub use features::TickFeatures;
pub use handle::ModelHandle;
pub use prediction::{Mode, ModelStatus, Outcome, Prediction, ServiceRisk};
pub use smoke::{SmokeReport, smoke};
