//! The collector as the harness sees it: a child process in its own capped cgroup, and a small
//! JSON client for its API (predictions, alerts, ground-truth labels).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Path of the collector's ground-truth label endpoint.
pub const LABELS_PATH: &str = "/v1/labels";
/// Path of the collector's latest predictions.
pub const PREDICTIONS_PATH: &str = "/v1/predictions";

/// A small JSON-over-HTTP client for loopback APIs.
#[derive(Clone, Debug)]
pub struct JsonClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl JsonClient {
    /// A client for `base` (`http://127.0.0.1:port`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(4)
                .build_http(),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET base+path`, parsed as JSON.
    ///
    /// # Errors
    /// On a transport error, a non-2xx status, a timeout or a non-JSON body.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let req = Request::get(format!("{}{path}", self.base)).body(Full::new(Bytes::new()))?;
        self.send(req).await
    }

    /// `POST base+path` with a JSON body; the reply is parsed as JSON (`null` when empty).
    ///
    /// # Errors
    /// On a transport error, a non-2xx status or a timeout.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let req = Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        self.send(req).await
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<Value> {
        let uri = req.uri().to_string();
        let resp = tokio::time::timeout(Duration::from_secs(2), self.client.request(req))
            .await
            .with_context(|| format!("{uri}: timed out"))?
            .with_context(|| format!("{uri}: request failed"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{uri}: {status}: {}", String::from_utf8_lossy(&body));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).with_context(|| format!("{uri}: not JSON"))
    }
}

/// One service's prediction as the harness records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pred {
    /// Service.
    pub service: String,
    /// Risk, 0..1.
    pub risk: f64,
    /// Named as the culprit.
    pub culprit: bool,
    /// Diagnosed resource, when given.
    pub resource: Option<String>,
}

/// Predictions at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PredSet {
    /// Collector tick.
    pub tick: u64,
    /// Mode (learning, predicting, fallback).
    pub mode: String,
    /// Model version.
    pub model_version: u64,
    /// Global risk.
    pub global_risk: f64,
    /// Per-service predictions.
    pub services: Vec<Pred>,
}

/// Reads the latest predictions from a `/v1/predictions` reply, tolerating the shapes a JSON API
/// may take (`{latest: {...}}`, `{predictions: [...]}`, a bare prediction set or an array of
/// them, newest last).
pub fn parse_predictions(v: &Value) -> Option<PredSet> {
    let set = pick_set(v)?;
    let services = set
        .get("services")
        .or_else(|| set.get("predictions"))
        .and_then(Value::as_array)?;
    let mut out = PredSet {
        tick: set.get("tick").and_then(Value::as_u64).unwrap_or(0),
        mode: set
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        model_version: set
            .get("model_version")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        global_risk: set
            .get("global_risk")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        services: Vec::new(),
    };
    for s in services {
        let Some(service) = s.get("service").and_then(Value::as_str) else {
            continue;
        };
        out.services.push(Pred {
            service: service.to_string(),
            risk: s
                .get("risk")
                .or_else(|| s.get("probability"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            culprit: s.get("culprit").and_then(Value::as_bool).unwrap_or(false),
            resource: s.get("resource").and_then(|r| {
                r.as_str().map(str::to_string).or_else(|| {
                    r.get("resource")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
            }),
        });
    }
    Some(out)
}

fn pick_set(v: &Value) -> Option<&Value> {
    if let Some(arr) = v.as_array() {
        return arr.last().and_then(pick_set);
    }
    for key in ["latest", "prediction", "current"] {
        if let Some(inner) = v.get(key)
            && inner.is_object()
        {
            return pick_set(inner).or(Some(inner));
        }
    }
    if v.get("services").is_some_and(Value::is_array) {
        return Some(v);
    }
    if let Some(p) = v.get("predictions") {
        if let Some(arr) = p.as_array() {
            if arr.first().is_some_and(|x| x.get("service").is_some()) {
                return Some(v);
            }
            return arr.last().and_then(pick_set);
        }
        return pick_set(p);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_prediction_set() {
        let v = serde_json::json!({
            "latest": {"tick": 7, "mode": "learning", "model_version": 0, "global_risk": 0.4,
              "services": [{"service": "text", "risk": 0.9, "culprit": true, "resource": "cpu"},
                           {"service": "user", "risk": 0.1}]}
        });
        let p = parse_predictions(&v).unwrap();
        assert_eq!(p.tick, 7);
        assert_eq!(p.services.len(), 2);
        assert!(p.services[0].culprit);
        assert_eq!(p.services[0].resource.as_deref(), Some("cpu"));
    }
}
