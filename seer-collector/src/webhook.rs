//! Webhooks: alert start/change/end POSTed as JSON to every configured URL, with retry and
//! exponential backoff, on a task fed by a bounded queue (a full queue drops and counts; ingest
//! never waits on a webhook).
//!
//! Body: `{"event": "start"|"change"|"end", "service", "risk", "resource", "action",
//! "evidence": [...], "alert": {...}}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::internal_events::{Metrics, WebhookAttempt};
use crate::predict::alerts::{Alert, AlertPhase};

/// Delivery attempts per (alert, URL).
pub const ATTEMPTS: u32 = 5;

/// The JSON body posted for an alert.
pub fn payload(a: &Alert) -> serde_json::Value {
    json!({
        "event": match a.phase { AlertPhase::Start => "start", AlertPhase::Change => "change", AlertPhase::End => "end" },
        "service": a.service,
        "risk": a.risk,
        "culprit": a.culprit,
        "resource": a.resource,
        "action": a.action,
        "evidence": a.evidence,
        "alert": a,
    })
}

/// Runs the webhook task until `rx` closes. At most 16 deliveries are in flight.
pub async fn run(urls: Vec<String>, mut rx: mpsc::Receiver<Alert>, metrics: Arc<Metrics>) {
    let client = crate::agent::client();
    let permits = Arc::new(Semaphore::new(16));
    while let Some(alert) = rx.recv().await {
        let body = Bytes::from(serde_json::to_vec(&payload(&alert)).unwrap_or_default());
        for url in &urls {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let (client, url, body, metrics) = (
                client.clone(),
                url.clone(),
                body.clone(),
                Arc::clone(&metrics),
            );
            tokio::spawn(async move {
                let mut backoff = Duration::from_millis(200);
                for attempt in 1..=ATTEMPTS {
                    let r = crate::agent::post(
                        &client,
                        &url,
                        seer_proto::JSON_CONTENT_TYPE,
                        None,
                        body.clone(),
                        Duration::from_secs(5),
                    )
                    .await;
                    match r {
                        Ok((s, _)) if s.is_success() => {
                            WebhookAttempt { result: 0 }.emit(&metrics);
                            break;
                        }
                        _ if attempt == ATTEMPTS => {
                            WebhookAttempt { result: 2 }.emit(&metrics);
                            tracing::warn!(%url, "webhook delivery failed after {ATTEMPTS} attempts");
                        }
                        _ => {
                            WebhookAttempt { result: 1 }.emit(&metrics);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 4).min(Duration::from_secs(10));
                        }
                    }
                }
                drop(permit);
            });
        }
    }
}
