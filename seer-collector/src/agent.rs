//! Agent mode: `seer-collector agent --upstream URL` runs on each node, samples it, and
//! forwards node samples plus its local services' windows and spans to a central collector.
//!
//! Local services post to the agent exactly as they would to the collector. Window batches are
//! stamped with this node's name (when they carry none) before they go upstream, so the central
//! collector maps every service to its node; the upstream's advice reply is relayed back
//! unchanged. Span batches are forwarded as OTLP protobuf and acknowledged only when the
//! upstream acknowledged them.

use std::time::Duration;

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

/// Posts to the upstream collector.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
    node: String,
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
        }
    }

    async fn post(
        &self,
        path: &str,
        ct: &'static str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), IngestError> {
        post(
            &self.client,
            &format!("{}{path}", self.base),
            ct,
            self.token.as_deref(),
            body,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "upstream post failed");
            IngestError::Unavailable
        })
    }

    fn map(status: StatusCode) -> Result<(), IngestError> {
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Err(IngestError::Overloaded)
            }
            StatusCode::PAYLOAD_TOO_LARGE => Err(IngestError::TooLarge),
            s if s.is_client_error() => Err(IngestError::Invalid(format!("upstream answered {s}"))),
            _ => Err(IngestError::Unavailable),
        }
    }

    /// Forwards a decoded span batch (as OTLP protobuf).
    ///
    /// # Errors
    ///
    /// The upstream's refusal mapped to an [`IngestError`].
    pub async fn spans(&self, p: &Pending) -> Result<(), IngestError> {
        let (status, _) = self
            .post(
                seer_proto::TRACES_PATH,
                seer_proto::PROTOBUF_CONTENT_TYPE,
                p.batch.body.clone(),
            )
            .await?;
        Self::map(status)
    }

    /// Forwards a window batch, stamping this node, and relays the advice reply.
    ///
    /// # Errors
    ///
    /// The upstream's refusal mapped to an [`IngestError`].
    pub async fn windows(&self, body: Bytes, node: &str) -> Result<Response, IngestError> {
        let mut batch = seer_proto::WindowBatch::decode(body.as_ref())
            .map_err(|e| IngestError::Invalid(e.to_string()))?;
        if batch.node.is_empty() {
            batch.node = if node.is_empty() {
                self.node.clone()
            } else {
                node.to_owned()
            };
        }
        let (status, reply) = self
            .post(
                seer_proto::WINDOWS_PATH,
                seer_proto::PROTOBUF_CONTENT_TYPE,
                Bytes::from(batch.encode_to_vec()),
            )
            .await?;
        Self::map(status)?;
        let mut r = (StatusCode::OK, reply).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(seer_proto::PROTOBUF_CONTENT_TYPE),
        );
        Ok(r)
    }

    /// Forwards a node sample.
    ///
    /// # Errors
    ///
    /// The upstream's refusal mapped to an [`IngestError`].
    pub async fn node(&self, sample: &NodeSample) -> Result<(), IngestError> {
        let body = serde_json::to_vec(sample).map_err(|e| IngestError::Invalid(e.to_string()))?;
        let (status, _) = self
            .post(
                crate::serve::api::NODES_PATH,
                seer_proto::JSON_CONTENT_TYPE,
                Bytes::from(body),
            )
            .await?;
        Self::map(status)
    }
}
