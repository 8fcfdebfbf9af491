//! The store writer thread: drains its queue, writes everything drained in one durable
//! transaction (group commit), then acknowledges the span batches it wrote. Retention runs on
//! the same thread between drains.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use super::{SpanBlob, Store, WriteBatch, blob};
use crate::hw::NodeSample;
use crate::ingest::Pending;
use crate::internal_events::{
    DropStage, Dropped, Metrics, QueueFill, RetentionDeleted, StoreCommitted, StoreFailed,
};
use crate::predict::alerts::Alert;
use crate::predict::thread::PredictionRecord;
use crate::window::{Episode, Label, ServiceWindow};

/// A record written in the background (not acknowledged).
#[derive(Debug, Clone)]
pub enum Record {
    /// Windows of one closed tick.
    Windows(Vec<ServiceWindow>),
    /// A node sample.
    Node(NodeSample),
    /// One tick's predictions.
    Prediction(Box<PredictionRecord>),
    /// An alert (start, change or end).
    Alert(Box<Alert>),
    /// A violation episode (opened or closed).
    Episode(Episode),
    /// A ground-truth label.
    Label(Label),
}

/// The acknowledgement of a span batch: `true` once committed.
pub type Ack = tokio::sync::oneshot::Receiver<bool>;

enum Msg {
    Spans(Arc<Pending>, tokio::sync::oneshot::Sender<bool>),
    Record(Record),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Retention settings of the writer.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// Age limit, ns.
    pub max_age_ns: u64,
    /// Span byte limit.
    pub max_bytes: u64,
    /// Tick length, ns (to map ages to ticks).
    pub tick_ns: u64,
    /// How often retention runs.
    pub every: Duration,
}

/// The sending side of the writer queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: Sender<Msg>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Spans(..) => "Spans",
            Msg::Record(_) => "Record",
            Msg::Flush(_) => "Flush",
        })
    }
}

impl StoreHandle {
    /// Queues a span batch; the returned [`Ack`] resolves once it is committed. `None` when
    /// the queue is full (the caller answers 503).
    pub fn try_spans(&self, batch: Arc<Pending>) -> Option<Ack> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.tx.try_send(Msg::Spans(batch, tx)) {
            Ok(()) => Some(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }

    /// Queues a background record; counts a drop when the queue is full.
    pub fn record(&self, r: Record) {
        if self.tx.try_send(Msg::Record(r)).is_err() {
            Dropped {
                stage: DropStage::StoreBackground,
                count: 1,
            }
            .emit(&self.metrics);
        }
    }

    /// Blocks until everything queued before this call is committed.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Messages queued now.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// Starts the writer thread (`seer-store`) with a queue of `capacity` messages. The thread
/// ends once every [`StoreHandle`] is dropped and the queue is drained.
///
/// # Errors
///
/// The OS error if the thread cannot be spawned.
pub fn spawn(
    store: Arc<Store>,
    capacity: usize,
    retention: RetentionPolicy,
    metrics: Arc<Metrics>,
) -> std::io::Result<(StoreHandle, JoinHandle<()>)> {
    let (tx, rx) = bounded(capacity.max(1));
    let handle = StoreHandle {
        tx,
        metrics: Arc::clone(&metrics),
    };
    let join = std::thread::Builder::new()
        .name("seer-store".into())
        .spawn(move || run(&store, &rx, retention, &metrics, capacity))?;
    Ok((handle, join))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

const MAX_DRAIN: usize = 8192;
/// Pause between attempts to reopen a store that failed with an I/O error.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
const MAX_DRAIN_BYTES: usize = 8 << 20;

fn run(
    store: &Store,
    rx: &Receiver<Msg>,
    retention: RetentionPolicy,
    metrics: &Metrics,
    capacity: usize,
) {
    let mut last_retention = Instant::now();
    let mut last_reopen: Option<Instant> = None;
    loop {
        // After an I/O error redb refuses everything until reopened: try once a second, so a
        // disk that was full for a moment costs seconds of 503s, not a restart.
        if !store.is_healthy() && last_reopen.is_none_or(|t| t.elapsed() >= REOPEN_EVERY) {
            last_reopen = Some(Instant::now());
            match store.reopen() {
                Ok(()) => tracing::warn!("store reopened after an I/O error"),
                Err(e) => tracing::error!(error = %e, "store still failing; retrying in 1 s"),
            }
        }
        let first = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(first) = first {
            let mut msgs = vec![first];
            let mut bytes = 0usize;
            while msgs.len() < MAX_DRAIN && bytes < MAX_DRAIN_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        if let Msg::Spans(p, _) = &m {
                            bytes += p.batch.body.len();
                        }
                        msgs.push(m);
                    }
                    Err(_) => break,
                }
            }
            QueueFill {
                queue: 0,
                len: rx.len(),
                capacity,
            }
            .emit(metrics);
            commit(store, msgs, metrics);
        }
        if store.is_healthy() && last_retention.elapsed() >= retention.every {
            last_retention = Instant::now();
            loop {
                match store.retain(
                    now_ns(),
                    retention.max_age_ns,
                    retention.max_bytes,
                    retention.tick_ns,
                    256,
                ) {
                    Ok(s) => {
                        RetentionDeleted { blobs: s.blobs }.emit(metrics);
                        if s.blobs < 256 {
                            break;
                        }
                    }
                    Err(e) => {
                        StoreFailed { error: &e }.emit(metrics);
                        break;
                    }
                }
            }
        }
    }
}

fn commit(store: &Store, msgs: Vec<Msg>, metrics: &Metrics) {
    let mut wb = WriteBatch::default();
    let mut acks = Vec::new();
    let mut flushes = Vec::new();
    let mut records = 0u64;
    let now = now_ns();
    for m in msgs {
        match m {
            Msg::Spans(p, ack) => {
                let (bytes, traces) = blob::encode(&p.batch);
                wb.spans.push(SpanBlob {
                    unix_ns: p.received_unix_ns.max(1).min(now.max(1)),
                    bytes,
                    traces,
                    services: p.batch.services.clone(),
                    spans: p.batch.spans.len() as u64,
                });
                acks.push((ack, p));
            }
            Msg::Record(r) => {
                records += 1;
                match r {
                    Record::Windows(w) => wb.windows.extend(w),
                    Record::Node(n) => wb.nodes.push(n),
                    Record::Prediction(p) => wb.predictions.push(*p),
                    Record::Alert(a) => wb.alerts.push(*a),
                    Record::Episode(e) => wb.episodes.push(e),
                    Record::Label(l) => wb.labels.push(l),
                }
            }
            Msg::Flush(tx) => flushes.push(tx),
        }
    }
    let started = Instant::now();
    let ok = match store.write(&wb) {
        Ok(()) => {
            StoreCommitted {
                micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            }
            .emit(metrics);
            true
        }
        Err(e) => {
            StoreFailed { error: &e }.emit(metrics);
            if e.is_io() && store.is_healthy() {
                tracing::error!(error = %e, "store write failed with an I/O error; reopening");
                store.mark_failed();
            }
            if records > 0 {
                Dropped {
                    stage: DropStage::StoreWrite,
                    count: records,
                }
                .emit(metrics);
            }
            false
        }
    };
    for (ack, pending) in acks {
        let _ = ack.send(ok);
        drop(pending);
    }
    for f in flushes {
        let _ = f.send(());
    }
}
