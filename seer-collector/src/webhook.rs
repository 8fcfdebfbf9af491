//! Webhooks: alert start/change/end POSTed as JSON to every configured URL, with retry and
//! exponential backoff, on a task fed by a bounded queue (a full queue drops and counts; ingest
//! never waits on a webhook).
//!
//! Body: `{"event": "start"|"change"|"end", "service", "risk", "resource", "action",
//! "evidence": [...], "alert": {...}}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::sync::mpsc;

use crate::internal_events::{DropStage, Dropped, Metrics, WebhookAttempt};
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

/// Events queued per URL; past it an event for that URL is dropped and counted.
pub const QUEUE_PER_URL: usize = 256;

/// Runs the webhook task until `rx` closes. Each URL has its own task and queue, so a URL's
/// events arrive in order (an `end` never overtakes the `start` it ends, even while that is
/// retried) and a slow receiver delays only itself.
pub async fn run(urls: Vec<String>, mut rx: mpsc::Receiver<Alert>, metrics: Arc<Metrics>) {
    let client = crate::agent::client();
    let mut queues = Vec::with_capacity(urls.len());
    let mut tasks = Vec::with_capacity(urls.len());
    for url in urls {
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE_PER_URL);
        tasks.push(tokio::spawn(deliver(
            client.clone(),
            url.clone(),
            rx,
            Arc::clone(&metrics),
        )));
        queues.push((url, tx));
    }
    let mut warned = false;
    while let Some(alert) = rx.recv().await {
        let body = Bytes::from(serde_json::to_vec(&payload(&alert)).unwrap_or_default());
        for (url, tx) in &queues {
            if tx.try_send(body.clone()).is_err() {
                Dropped {
                    stage: DropStage::Webhook,
                    count: 1,
                }
                .emit(&metrics);
                if !warned {
                    warned = true;
                    tracing::warn!(%url, "webhook queue full: alerts for it are dropped (counted in seer_dropped_total)");
                }
            }
        }
    }
    // The sender closed: let every URL deliver what it has queued.
    drop(queues);
    for t in tasks {
        let _ = t.await;
    }
}

/// Delivers one URL's events in order, each with up to [`ATTEMPTS`] tries and backoff.
async fn deliver(
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
    mut rx: mpsc::Receiver<Bytes>,
    metrics: Arc<Metrics>,
) {
    while let Some(body) = rx.recv().await {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::Mode;
    use crate::predict::diagnosis::Resource;
    use std::sync::Mutex;

    fn alert(phase: AlertPhase) -> Alert {
        Alert {
            id: "cart-7".into(),
            service: "cart".into(),
            phase,
            open: phase != AlertPhase::End,
            culprit: true,
            start_tick: 7,
            started_at_unix_ns: 1,
            updated_at_unix_ns: 2,
            ended_at_unix_ns: None,
            risk: 0.9,
            peak_risk: 0.9,
            resource: Resource::Cpu,
            action: "raise cpu".into(),
            evidence: Vec::new(),
            mode: Mode::Predicting,
            model_version: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_start_is_not_overtaken_by_its_end() {
        // A receiver that refuses its first request (503) and records what it accepts.
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, r) = (Arc::clone(&seen), Arc::clone(&refused));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: Bytes| {
                let (seen, refused) = (Arc::clone(&s), Arc::clone(&r));
                async move {
                    if !refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        return http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(v["event"].as_str().unwrap_or("?").to_owned());
                    }
                    http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(
            vec![format!("http://{addr}/hook")],
            rx,
            Arc::clone(&metrics),
        ));
        for phase in [AlertPhase::Start, AlertPhase::Change, AlertPhase::End] {
            tx.send(alert(phase)).await.unwrap();
        }
        drop(tx);
        // `run` returns once every queued event is delivered.
        task.await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["start", "change", "end"]);
        assert!(
            metrics
                .render()
                .contains("seer_webhook_deliveries_total{result=\"retry\"} 1")
        );
    }
}
