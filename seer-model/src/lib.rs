//! Seer's predictor: a CNN+LSTM in libtorch (through `tch`) that learns online which service
//! will cause a QoS violation.
//!
//! No `tch` type appears in this crate's public API: callers hand in plain `f32` slices and get
//! plain Rust values back, so the collector stays free of libtorch types.
//!
//! # Quick start
//!
//! The smoke check proves that libtorch is provisioned and loads at run time: it trains a tiny
//! network for a few steps and reports the loss before and after.
//!
//! ```
//! let report = seer_model::smoke(20)?;
//! assert!(report.loss_after < report.loss_before);
//! # Ok::<(), seer_model::ModelError>(())
//! ```

mod error;
mod smoke;

pub use error::ModelError;
pub use smoke::{SmokeReport, smoke};
