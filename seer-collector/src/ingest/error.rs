//! Why an ingest request was refused, and the HTTP status each reason maps to (per the OTLP
//! spec: 400 not retryable, 408 body too slow, 413 too large, 429/503 retryable with
//! `Retry-After`).

use http::StatusCode;

use super::otlp::DecodeError;

/// Why an ingest request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The body is not valid for its content type.
    #[error("bad request: {0}")]
    Decode(#[from] DecodeError),
    /// A native message with an unknown version or missing fields.
    #[error("bad request: {0}")]
    Invalid(String),
    /// Every span of the request was rejected.
    #[error("all {count} spans rejected: {reason}")]
    AllRejected {
        /// Spans rejected.
        count: u64,
        /// Why the first was rejected.
        reason: &'static str,
    },
    /// `Content-Type` is not one this endpoint reads.
    #[error("unsupported content type (use application/x-protobuf or application/json)")]
    UnsupportedMediaType,
    /// `Content-Encoding` is not gzip or identity.
    #[error("unsupported content encoding (use gzip or identity)")]
    UnsupportedEncoding,
    /// The gzip stream is corrupt.
    #[error("bad request: corrupt gzip stream")]
    BadGzip,
    /// The body (decompressed) is over the limit.
    #[error("request body too large")]
    TooLarge,
    /// The memory budget or a queue is full; retry later.
    #[error("collector overloaded, retry later")]
    Overloaded,
    /// The store could not commit; retry later.
    #[error("store unavailable, retry later")]
    Unavailable,
    /// Agent mode: the upstream collector is unreachable or refused the agent (its token or
    /// URL); retry later.
    #[error("{0}, retry later")]
    Upstream(String),
    /// The body could not be read.
    #[error("cannot read body: {0}")]
    Body(String),
    /// The body did not arrive within the read deadline.
    #[error("request body not received within {} ms", .0.as_millis())]
    Timeout(std::time::Duration),
}

impl IngestError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Decode(_)
            | Self::Invalid(_)
            | Self::AllRejected { .. }
            | Self::BadGzip
            | Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType | Self::UnsupportedEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded | Self::Unavailable | Self::Upstream(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Seconds to put in `Retry-After`, for retryable errors.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(
            self,
            Self::Overloaded | Self::Unavailable | Self::Upstream(_)
        )
        .then_some(1)
    }
}
