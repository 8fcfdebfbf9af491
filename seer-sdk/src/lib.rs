#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

pub mod advice;
pub mod attr;
mod buffer;
pub mod clock;
pub mod config;
pub mod context;
pub mod counters;
#[cfg(feature = "export")]
pub mod export;
pub mod id;
mod intern;
mod internal_log;
pub mod limit;
#[cfg(feature = "otel")]
pub mod otel;
pub mod propagation;
pub mod record;
mod recorder;
pub mod span;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tracing")]
pub mod tracing_layer;
mod window;
mod worker;

pub use advice::{Advice, DEFAULT_PRIORITY, ShedReason};
pub use config::{Builder, ConfigError};
pub use counters::{Counters, CountersSnapshot, DropReason};
#[cfg(feature = "export")]
pub use export::HttpExporter;
pub use id::{SpanId, TraceId};
pub use intern::OVERFLOW_NAME;
pub use limit::{LimiterConfig, LimiterKind, LimiterMode};
#[cfg(feature = "otel")]
pub use otel::SeerSpanProcessor;
pub use propagation::SpanContext;
pub use record::SpanKind;
pub use recorder::{ClientSpan, EndpointId, ExternalSpan, Recorder, ServerSpan, Shed};
pub use span::{FinishedSpan, Resource};
#[cfg(feature = "tracing")]
pub use tracing_layer::SeerTracingLayer;
pub use worker::{ExportBatch, ExportHandle, ExportWorker, Exporter, ShutdownError};
