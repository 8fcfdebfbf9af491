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
    /// The body (decompressed) is over an endpoint's own limit, named in the message.
    #[error("{what} over the {} limit of this endpoint", human_bytes(*.limit))]
    OverLimit {
        /// What the body is (e.g. `window batch`).
        what: &'static str,
        /// The endpoint's limit, bytes.
        limit: usize,
    },
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
            Self::TooLarge | Self::OverLimit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded | Self::Unavailable | Self::Upstream(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// [`IngestError::TooLarge`] named as [`IngestError::OverLimit`] (`what` over `limit`
    /// bytes); any other error unchanged.
    #[must_use]
    pub fn over_limit(self, what: &'static str, limit: usize) -> Self {
        match self {
            Self::TooLarge => Self::OverLimit { what, limit },
            e => e,
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

/// `n` bytes as `4 MiB`, `512 KiB` or `1000 bytes`.
fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_limit_is_named_in_the_413() {
        let e = IngestError::TooLarge.over_limit("window batch", 4 << 20);
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            e.to_string(),
            "window batch over the 4 MiB limit of this endpoint"
        );
        assert!(matches!(
            IngestError::Overloaded.over_limit("x", 1),
            IngestError::Overloaded
        ));
        assert_eq!(human_bytes(512 << 10), "512 KiB");
        assert_eq!(human_bytes(1536), "1536 bytes");
    }
}
