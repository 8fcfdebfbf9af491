//! Ingest: OTLP/HTTP traces (protobuf and JSON, gzip) and the native window endpoint.

pub mod body;
pub mod budget;
pub mod error;
pub mod otlp;
