//! The HTTP exporter: OTLP/HTTP protobuf spans to `POST /v1/traces` and native window batches to
//! `POST /v1/seer/windows`, whose reply carries the advice. Blocking I/O (`ureq`), meant for the
//! worker thread.
//!
//! Delivery: payloads wait in a bounded outbox (windows before spans). `429`, `502`, `503`,
//! `504` and transport errors are retried with exponential backoff and full jitter, or after the
//! server's `Retry-After`; other statuses drop the payload (counted). When the outbox is over its
//! byte limit the oldest spans go first. Nothing here ever blocks a request.

pub mod otlp;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use prost::Message;
use seer_proto::{AdviceReply, PROTOBUF_CONTENT_TYPE, TRACES_PATH, WINDOWS_PATH};

use crate::config::Builder;
use crate::counters::{Counters, DropReason};
use crate::recorder::Recorder;
use crate::worker::{ExportBatch, ExportHandle, ExportWorker, Exporter};

/// Largest advice reply read, bytes.
const MAX_REPLY: u64 = 64 << 10;
/// Longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Most payloads sent in one worker step.
const MAX_SENDS_PER_POLL: usize = 16;

#[derive(Debug)]
struct Item {
    body: Vec<u8>,
    spans: u64,
    attempts: u32,
}

/// Outcome of one HTTP attempt.
#[derive(Debug)]
enum Sent {
    Ok(Vec<u8>),
    Retry(Option<Duration>),
    Reject,
}

/// Exports to a Seer collector (or any OTLP/HTTP endpoint, for spans) over HTTP/1.1.
#[derive(Debug)]
pub struct HttpExporter {
    agent: ureq::Agent,
    traces_url: String,
    windows_url: String,
    auth: Option<String>,
    windows: VecDeque<Item>,
    spans: VecDeque<Item>,
    bytes: usize,
    max_bytes: usize,
    max_windows: usize,
    max_attempts: u32,
    next_try: Option<Instant>,
    failures: u32,
    /// The timeout of one request (the agent's), capped at the time left at shutdown.
    timeout: Duration,
}

impl HttpExporter {
    /// An exporter to the collector at `base` (e.g. `http://127.0.0.1:4318`).
    pub fn new(base: &str, token: Option<&str>, timeout: Duration) -> Self {
        let base = base.trim_end_matches('/');
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_idle_connections_per_host(2)
            .build();
        Self {
            agent: config.into(),
            traces_url: format!("{base}{TRACES_PATH}"),
            windows_url: format!("{base}{WINDOWS_PATH}"),
            auth: token.map(|t| format!("Bearer {t}")),
            windows: VecDeque::new(),
            spans: VecDeque::new(),
            bytes: 0,
            max_bytes: 16 << 20,
            max_windows: 600,
            max_attempts: 5,
            next_try: None,
            failures: 0,
            timeout,
        }
    }

    /// Bounds the outbox to `max_bytes` of encoded payloads.
    pub fn with_max_outbox_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Attempts per payload before it is dropped.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Bytes waiting in the outbox.
    pub fn outbox_bytes(&self) -> usize {
        self.bytes
    }

    /// Payloads waiting in the outbox (windows, spans).
    pub fn outbox_len(&self) -> (usize, usize) {
        (self.windows.len(), self.spans.len())
    }

    /// One attempt; `timeout`, when shorter than the configured one, bounds it instead.
    fn send(&self, url: &str, body: &[u8], timeout: Duration) -> Sent {
        let mut req = self
            .agent
            .post(url)
            .header("content-type", PROTOBUF_CONTENT_TYPE);
        if timeout < self.timeout {
            req = req.config().timeout_global(Some(timeout)).build();
        }
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        match req.send(body) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                match status {
                    200..=299 => {
                        let body = resp
                            .body_mut()
                            .with_config()
                            .limit(MAX_REPLY)
                            .read_to_vec()
                            .unwrap_or_default();
                        Sent::Ok(body)
                    }
                    429 | 502 | 503 | 504 => {
                        let after = resp
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                        Sent::Retry(after)
                    }
                    _ => Sent::Reject,
                }
            }
            Err(_) => Sent::Retry(None),
        }
    }

    fn backoff(&self) -> Duration {
        let exp = 100u64.saturating_mul(1 << self.failures.min(10));
        let cap = Duration::from_millis(exp).min(MAX_BACKOFF);
        // Full jitter in [cap/2, cap].
        let half = cap / 2;
        let jitter = crate::id::next_u64() % (u64::try_from(half.as_nanos()).unwrap_or(1).max(1));
        half + Duration::from_nanos(jitter)
    }

    fn enforce_bound(&mut self, counters: &Counters) {
        while self.bytes > self.max_bytes {
            if let Some(old) = self.spans.pop_front() {
                self.bytes -= old.body.len();
                counters.add_dropped(DropReason::QueueFull, old.spans);
            } else if let Some(old) = self.windows.pop_front() {
                self.bytes -= old.body.len();
                counters.add_windows(0, 1);
            } else {
                break;
            }
        }
        while self.windows.len() > self.max_windows {
            if let Some(old) = self.windows.pop_front() {
                self.bytes -= old.body.len();
                counters.add_windows(0, 1);
            }
        }
    }

    /// Sends what is due; returns the newest advice received. With a `deadline` (at shutdown)
    /// it stops once the deadline has passed and no attempt runs past it.
    fn pump(&mut self, counters: &Counters, deadline: Option<Instant>) -> Option<AdviceReply> {
        let mut advice = None;
        for _ in 0..MAX_SENDS_PER_POLL {
            let now = Instant::now();
            if self.next_try.is_some_and(|t| now < t) {
                break;
            }
            let timeout = match deadline {
                Some(d) if now >= d => break,
                Some(d) => self.timeout.min(d - now),
                None => self.timeout,
            };
            let is_windows = !self.windows.is_empty();
            let (url, item) = if is_windows {
                (&self.windows_url, self.windows.front())
            } else {
                (&self.traces_url, self.spans.front())
            };
            let Some(item) = item else {
                break;
            };
            let outcome = self.send(url, &item.body, timeout);
            let queue = if is_windows {
                &mut self.windows
            } else {
                &mut self.spans
            };
            match outcome {
                Sent::Ok(reply) => {
                    self.failures = 0;
                    self.next_try = None;
                    if let Some(item) = queue.pop_front() {
                        self.bytes -= item.body.len();
                        if is_windows {
                            counters.add_windows(1, 0);
                            if !reply.is_empty()
                                && let Ok(a) = AdviceReply::decode(reply.as_slice())
                            {
                                advice = Some(a);
                            }
                        } else {
                            let rejected = rejected_spans(&reply).min(item.spans);
                            counters.add_exported(item.spans - rejected);
                            counters.add_dropped(DropReason::Rejected, rejected);
                        }
                    }
                }
                Sent::Reject => {
                    if let Some(item) = queue.pop_front() {
                        self.bytes -= item.body.len();
                        counters.add_failed_request();
                        if is_windows {
                            counters.add_windows(0, 1);
                        } else {
                            counters.add_dropped(DropReason::Rejected, item.spans);
                        }
                    }
                }
                Sent::Retry(after) => {
                    self.failures += 1;
                    let mut give_up = false;
                    if let Some(item) = queue.front_mut() {
                        item.attempts += 1;
                        give_up = item.attempts >= self.max_attempts;
                    }
                    if give_up {
                        if let Some(item) = queue.pop_front() {
                            self.bytes -= item.body.len();
                            counters.add_failed_request();
                            if is_windows {
                                counters.add_windows(0, 1);
                            } else {
                                counters.add_dropped(DropReason::ExportFailed, item.spans);
                            }
                        }
                    } else {
                        counters.add_retry();
                    }
                    let delay = after.unwrap_or_else(|| self.backoff());
                    self.next_try = Some(Instant::now() + delay);
                    break;
                }
            }
        }
        advice
    }
}

fn rejected_spans(reply: &[u8]) -> u64 {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    if reply.is_empty() {
        return 0;
    }
    ExportTraceServiceResponse::decode(reply)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

impl Exporter for HttpExporter {
    fn export(&mut self, batch: ExportBatch<'_>, counters: &Counters) -> Option<AdviceReply> {
        for w in &batch.windows {
            let body = w.encode_to_vec();
            self.bytes += body.len();
            self.windows.push_back(Item {
                body,
                spans: 0,
                attempts: 0,
            });
        }
        if !batch.spans.is_empty() {
            let body = otlp::encode_request(batch.resource, &batch.spans).encode_to_vec();
            self.bytes += body.len();
            self.spans.push_back(Item {
                body,
                spans: batch.spans.len() as u64,
                attempts: 0,
            });
        }
        self.enforce_bound(counters);
        self.pump(counters, None)
    }

    fn poll(&mut self, counters: &Counters) -> Option<AdviceReply> {
        if self.windows.is_empty() && self.spans.is_empty() {
            return None;
        }
        self.pump(counters, None)
    }

    fn flush(&mut self, deadline: Instant, counters: &Counters) -> Option<AdviceReply> {
        let mut advice = None;
        while !(self.windows.is_empty() && self.spans.is_empty()) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Some(t) = self.next_try
                && t > now
            {
                if t >= deadline {
                    break;
                }
                std::thread::sleep(t - now);
            }
            if let Some(a) = self.pump(counters, Some(deadline)) {
                advice = Some(a);
            }
        }
        for item in self.spans.drain(..) {
            counters.add_dropped(DropReason::ExportFailed, item.spans);
        }
        let lost = self.windows.len() as u64;
        self.windows.clear();
        counters.add_windows(0, lost);
        self.bytes = 0;
        advice
    }
}

impl Builder {
    /// The recorder and a worker exporting over HTTP to the configured collector.
    pub fn build(self) -> (Recorder, ExportWorker<HttpExporter>) {
        let exporter =
            HttpExporter::new(&self.endpoint, self.token.as_deref(), self.export_timeout)
                .with_max_outbox_bytes(self.max_outbox_bytes)
                .with_max_attempts(self.max_attempts);
        self.build_with(exporter)
    }

    /// [`Builder::build`], then spawns the worker on its own thread.
    ///
    /// # Errors
    ///
    /// The OS error if the thread cannot be spawned.
    pub fn install(self) -> std::io::Result<(Recorder, ExportHandle)> {
        let (recorder, worker) = self.build();
        Ok((recorder, worker.spawn()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        Item {
            body: vec![1, 2, 3],
            spans: 2,
            attempts: 0,
        }
    }

    #[test]
    fn nothing_is_sent_once_the_flush_deadline_has_passed() {
        // A collector that accepts connections and never answers: any attempt would connect.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut exp = HttpExporter::new(&base, None, Duration::from_millis(200));
        exp.spans.push_back(item());
        exp.bytes = 3;
        let counters = Counters::default();
        let past = Instant::now();
        assert!(exp.pump(&counters, Some(past)).is_none());
        assert_eq!(exp.outbox_len(), (0, 1), "nothing was attempted");
        assert_eq!(counters.snapshot().retries, 0);
        assert!(listener.accept().is_err(), "no connection was made");
        // The flush then counts what is left as dropped.
        exp.flush(past, &counters);
        assert_eq!(exp.outbox_len(), (0, 0));
        assert_eq!(counters.snapshot().dropped_export_failed, 2);
        assert!(listener.accept().is_err());
    }
}
