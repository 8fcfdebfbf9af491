//! Header names, pre-parsed once (a `&str` key is parsed and validated on every lookup).

use http::HeaderName;

/// `traceparent`.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `grpc-status`.
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
