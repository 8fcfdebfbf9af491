//! Agent mode: `seer-collector agent --upstream URL` runs on each node, samples it, and
//! forwards node samples plus its local services' windows and spans to a central collector.
//!
//! Local services post to the agent exactly as they would to the collector: spans, window
//! batches, node samples and labels (`POST /v1/seer/nodes`, `/v1/labels`) are all forwarded,
//! after the same checks the collector makes. Window batches are
//! stamped with this node's name (when they carry none) before they go upstream, so the central
//! collector maps every service to its node; the upstream's advice reply is relayed back
//! unchanged. Span batches are forwarded as OTLP protobuf and acknowledged only when the
//! upstream acknowledged them.
//!
//! The upstream's refusals are mapped for the local clients: a 400 stays a 400 (the data is
//! bad), 413 stays 413, and everything else (401/403/404 from a wrong token or URL, 5xx, an
//! unreachable upstream) is a retryable 503, so that exporters keep their data while the agent's
//! own setup is fixed. Such failures are logged at warn, at most once per [`WARN_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;

use crate::hw::NodeSample;
use crate::ingest::Pending;
use crate::ingest::error::IngestError;

/// Shortest time between two warnings about upstream failures.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Posts to the upstream collector.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
    node: String,
    failures: Arc<FailureLog>,
}

/// Upstream failures: counted, and logged at warn at most once per [`WARN_EVERY`] (with the
/// number of failures since the last warning); the rest at debug.
#[derive(Debug, Default)]
struct FailureLog {
    since_warn: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

impl FailureLog {
    fn record(&self, url: &str, what: &str) {
        self.since_warn.fetch_add(1, Ordering::Relaxed);
        let due = match self.last_warn.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            let failures = self.since_warn.swap(0, Ordering::Relaxed);
            tracing::warn!(
                upstream = url,
                error = what,
                failures,
                "forwarding to the upstream collector failed; local clients get 503 until it works"
            );
        } else {
            tracing::debug!(upstream = url, error = what, "upstream post failed");
        }
    }
}

/// An HTTP client for JSON/protobuf posts (shared by the agent and webhooks).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Posts `body` to `url` and returns the status and body (bounded to 4 MiB).
///
/// # Errors
///
/// A message when the request fails or times out.
pub async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    content_type: &'static str,
    token: Option<&str>,
    body: Bytes,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let mut req = http::Request::post(url)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    if let Some(t) = token
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}"))
    {
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 4 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

impl Forwarder {
    /// A forwarder to `upstream` (e.g. `http://central:4318`).
    pub fn new(upstream: &str, token: Option<String>, node: String) -> Self {
        Self {
            client: client(),
            base: upstream.trim_end_matches('/').to_owned(),
            token,
            node,
            failures: Arc::new(FailureLog::default()),
        }
    }

    /// Posts to `path` upstream; the body of a success, the upstream's refusal mapped (see
    /// [`Forwarder::map`]) and logged otherwise.
    async fn post(&self, path: &str, ct: &'static str, body: Bytes) -> Result<Bytes, IngestError> {
        let url = format!("{}{path}", self.base);
        let (status, reply) = post(
            &self.client,
            &url,
            ct,
            self.token.as_deref(),
            body,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| {
            self.failures.record(&url, &e);
            IngestError::Upstream(format!("cannot reach the upstream collector: {e}"))
        })?;
        if !status.is_success() && status != StatusCode::BAD_REQUEST {
            self.failures
                .record(&url, &format!("upstream answered {status}"));
        }
        Self::map(status).map(|()| reply)
    }

    /// Maps the upstream's status to what the local client gets: 400 and 413 pass through
    /// (the request itself is refused), 429 and 503 are overload, and every other failure
    /// (401/403/404 from a wrong token or URL, other 4xx, 5xx) is a retryable 503: it is the
    /// agent's setup or the upstream that needs fixing, not the client's data.
    ///
    /// # Errors
    ///
    /// The [`IngestError`] for any status but a success.
    pub fn map(status: StatusCode) -> Result<(), IngestError> {
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Err(IngestError::Overloaded)
            }
            StatusCode::PAYLOAD_TOO_LARGE => Err(IngestError::TooLarge),
            StatusCode::BAD_REQUEST => Err(IngestError::Invalid(
                "upstream answered 400 Bad Request".into(),
            )),
            s => Err(IngestError::Upstream(format!("upstream answered {s}"))),
        }
    }

    /// Forwards a decoded span batch (as OTLP protobuf).
    ///
    /// # Errors
    ///
    /// The upstream's refusal mapped to an [`IngestError`].
    pub async fn spans(&self, p: &Pending) -> Result<(), IngestError> {
        self.post(
            seer_proto::TRACES_PATH,
            seer_proto::PROTOBUF_CONTENT_TYPE,
            p.batch.body.clone(),
        )
        .await
        .map(drop)
    }

    /// Forwards a (decoded and checked) window batch, stamping this node, and relays the
    /// advice reply.
    ///
    /// # Errors
    ///
    /// The upstream's refusal mapped to an [`IngestError`].
    pub async fn windows(
        &self,
        mut batch: seer_proto::WindowBatch,
        node: &str,
    ) -> Result<Response, IngestError> {
        if batch.node.is_empty() {
            batch.node = if node.is_empty() {
                self.node.clone()
            } else {
                node.to_owned()
            };
        }
        let reply = self
            .post(
                seer_proto::WINDOWS_PATH,
                seer_proto::PROTOBUF_CONTENT_TYPE,
                Bytes::from(batch.encode_to_vec()),
            )
            .await?;
        let mut r = (StatusCode::OK, reply).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(seer_proto::PROTOBUF_CONTENT_TYPE),
        );
        Ok(r)
    }

    /// Forwards a `POST /v1/labels` body (JSON, already checked).
    ///
    /// # Errors
    ///
    /// The upstream's refusal mapped to an [`IngestError`].
    pub async fn labels(&self, body: Bytes) -> Result<(), IngestError> {
        self.post(
            crate::serve::api::LABELS_PATH,
            seer_proto::JSON_CONTENT_TYPE,
            body,
        )
        .await
        .map(drop)
    }

    /// Forwards a node sample.
    ///
    /// # Errors
    ///
    /// The upstream's refusal mapped to an [`IngestError`].
    pub async fn node(&self, sample: &NodeSample) -> Result<(), IngestError> {
        let body = serde_json::to_vec(sample).map_err(|e| IngestError::Invalid(e.to_string()))?;
        self.post(
            crate::serve::api::NODES_PATH,
            seer_proto::JSON_CONTENT_TYPE,
            Bytes::from(body),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_refusals_map_to_what_exporters_retry() {
        assert!(Forwarder::map(StatusCode::OK).is_ok());
        // The agent's token, URL or the upstream itself is at fault: retryable 503.
        for s in [
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::GATEWAY_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let e = Forwarder::map(s).unwrap_err();
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{s}");
            assert_eq!(e.retry_after(), Some(1), "{s}");
        }
        assert!(
            Forwarder::map(StatusCode::UNAUTHORIZED)
                .unwrap_err()
                .to_string()
                .contains("401")
        );
        // The request itself is refused.
        assert_eq!(
            Forwarder::map(StatusCode::BAD_REQUEST)
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Forwarder::map(StatusCode::PAYLOAD_TOO_LARGE)
                .unwrap_err()
                .status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
