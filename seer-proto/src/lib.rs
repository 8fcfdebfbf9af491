//! Seer wire types: the native window-stats and advice messages shared by `seer-sdk` and
//! `seer-collector`.
//!
//! Spans travel as standard OTLP/HTTP protobuf (`opentelemetry-proto` types) on `POST /v1/traces`.
//! Everything OTLP has no word for travels in the versioned messages of this crate, posted to
//! [`WINDOWS_PATH`] on the same port:
//!
//! - [`WindowBatch`]: all of one process's per-(service, endpoint) window stats for one tick.
//! - [`AdviceReply`]: the reply to a window post, carrying the collector's current advice for
//!   that service, so advice costs no extra connection and no extra round trip.
//!
//! Latency distributions travel as [`Histogram`]s: HDR histograms in their V2 serialized form,
//! which merge losslessly on the collector.
//!
//! # Quick start
//!
//! ```
//! use prost::Message;
//! use seer_proto::{EndpointWindow, Histogram, WindowBatch, WIRE_VERSION};
//!
//! let mut latency = Histogram::new_latency();
//! latency.record_ns(1_250_000); // 1.25 ms
//!
//! let batch = WindowBatch {
//!     version: WIRE_VERSION,
//!     service: "compose-post".into(),
//!     tick_start_unix_ns: 1_700_000_000_000_000_000,
//!     tick_ns: 100_000_000,
//!     windows: vec![EndpointWindow {
//!         endpoint: "POST /compose".into(),
//!         arrivals: 1,
//!         completions: 1,
//!         latency: latency.encode(),
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! let bytes = batch.encode_to_vec();
//! let back = WindowBatch::decode(bytes.as_slice())?;
//! let hist = Histogram::decode(&back.windows[0].latency)?;
//! assert_eq!(hist.count(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod histogram;
mod messages;

pub use histogram::{Histogram, HistogramError};
pub use messages::{AdviceReply, EndpointWindow, SdkCounters, WindowBatch};

/// Version of the native messages in this crate. Bumped on any incompatible change; the
/// collector rejects batches whose version it does not know with `400 Bad Request`.
pub const WIRE_VERSION: u32 = 1;

/// Path of the native window endpoint on the collector's ingest port.
pub const WINDOWS_PATH: &str = "/v1/seer/windows";

/// Path of the OTLP/HTTP traces endpoint on the collector's ingest port.
pub const TRACES_PATH: &str = "/v1/traces";

/// Content type of every protobuf body (OTLP and native).
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// Content type of OTLP/JSON bodies.
pub const JSON_CONTENT_TYPE: &str = "application/json";
