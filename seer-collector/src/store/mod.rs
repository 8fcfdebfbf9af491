//! The embedded on-disk store.
//!
//! # Why redb
//!
//! [redb](https://docs.rs/redb) is a pure-Rust, well-maintained embedded key-value store with
//! ACID transactions, copy-on-write B-trees and checksummed commits: a crash (even `kill -9`
//! mid-commit) leaves the last committed transaction intact, and the next open repairs the
//! file automatically. It needs no C toolchain (unlike RocksDB), no background compaction
//! threads, and has a bounded page cache we size from the memory budget. Sled was the other
//! pure-Rust candidate; it is unmaintained. An append-only log of our own would be faster to
//! write but would need its own index, recovery and retention code; redb's group commits (one
//! transaction per drain of the writer queue) reach the ingest targets without that.
//!
//! # Layout
//!
//! | table | key | value |
//! |---|---|---|
//! | `span_blobs` | seq | one ingest batch's spans ([`blob`] format) |
//! | `blob_meta` | seq | (ingest unix ns, bytes, spans) |
//! | `trace_idx` | (trace id, seq) | () |
//! | `service_idx` | (service, ingest unix ns, seq) | () |
//! | `windows` | (service, tick) | `ServiceWindow` JSON |
//! | `nodes` | (node, unix ns) | `NodeSample` JSON |
//! | `predictions` | tick | `PredictionRecord` JSON |
//! | `alerts` | (start unix ns, id) | `Alert` JSON (upserted on change/end) |
//! | `episodes` | (start tick, id) | `Episode` JSON |
//! | `labels` | (start unix ns, seq) | `Label` JSON |
//! | `names` | (kind, name) | last seen (for retention scans) |
//! | `meta` | name | u64 counters |
//!
//! Retention deletes span blobs older than the age limit or beyond the size limit (oldest
//! first), and windows, node samples, predictions and alerts older than the age limit. Freed
//! pages are reused by later writes; the file does not shrink.

pub mod blob;
mod error;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

pub use blob::StoredSpan;
pub use error::StoreError;

use crate::hw::NodeSample;
use crate::predict::alerts::Alert;
use crate::predict::thread::PredictionRecord;
use crate::window::{Episode, Label, ServiceWindow};

const SPAN_BLOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("span_blobs");
const BLOB_META: TableDefinition<'_, u64, (u64, u64, u64)> = TableDefinition::new("blob_meta");
const TRACE_IDX: TableDefinition<'_, (u128, u64), ()> = TableDefinition::new("trace_idx");
const SERVICE_IDX: TableDefinition<'_, (&str, u64, u64), ()> = TableDefinition::new("service_idx");
const WINDOWS: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("windows");
const NODES: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("nodes");
const PREDICTIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("predictions");
const ALERTS: TableDefinition<'_, (u64, &str), &[u8]> = TableDefinition::new("alerts");
const EPISODES: TableDefinition<'_, (u64, &str), &[u8]> = TableDefinition::new("episodes");
const LABELS: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("labels");
const NAMES: TableDefinition<'_, (&str, &str), u64> = TableDefinition::new("names");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

const NEXT_SEQ: &str = "next_seq";
const SPAN_BYTES: &str = "span_bytes";
const SPAN_COUNT: &str = "span_count";

/// One batch's spans, ready to write.
#[derive(Debug, Clone, Default)]
pub struct SpanBlob {
    /// Ingest time, unix ns.
    pub unix_ns: u64,
    /// The blob ([`blob`] format).
    pub bytes: Vec<u8>,
    /// Distinct trace ids in the blob.
    pub traces: Vec<u128>,
    /// Distinct services in the blob.
    pub services: Vec<String>,
    /// Spans in the blob.
    pub spans: u64,
}

/// Everything written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Span blobs.
    pub spans: Vec<SpanBlob>,
    /// Service windows.
    pub windows: Vec<ServiceWindow>,
    /// Node samples.
    pub nodes: Vec<NodeSample>,
    /// Predictions.
    pub predictions: Vec<PredictionRecord>,
    /// Alerts (inserted or updated).
    pub alerts: Vec<Alert>,
    /// Episodes (inserted or updated).
    pub episodes: Vec<Episode>,
    /// Ground-truth labels.
    pub labels: Vec<Label>,
}

impl WriteBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
            && self.windows.is_empty()
            && self.nodes.is_empty()
            && self.predictions.is_empty()
            && self.alerts.is_empty()
            && self.episodes.is_empty()
            && self.labels.is_empty()
    }
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Span blobs deleted.
    pub blobs: u64,
    /// Spans deleted.
    pub spans: u64,
    /// Other records deleted.
    pub records: u64,
}

/// Totals kept by the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Spans held.
    pub spans: u64,
    /// Span bytes held.
    pub span_bytes: u64,
    /// Span blobs held.
    pub blobs: u64,
}

/// Opens the database file at a path with a page cache size. The default is redb's file
/// backend; tests inject a backend that fails on demand.
pub(crate) type Opener =
    Box<dyn Fn(&Path, usize) -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The store. `Sync`: readers run concurrently with the single writer.
///
/// After an I/O error redb refuses every later operation until the database is opened again;
/// [`Store::reopen`] does that in place (the writer calls it), and [`Store::is_healthy`] says
/// whether the last write failed with such an error.
pub struct Store {
    db: RwLock<Option<Database>>,
    path: PathBuf,
    cache_bytes: usize,
    opener: Opener,
    healthy: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Option<T> {
    serde_json::from_slice(b).ok()
}

impl Store {
    /// File name of the database inside the data directory.
    pub const FILE: &'static str = "seer.redb";

    /// Opens (or creates) the store in `dir`, with a page cache of `cache_bytes`. A store left
    /// by a crash is repaired on open.
    ///
    /// # Errors
    ///
    /// [`StoreError::Dir`] or [`StoreError::Open`].
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        Self::open_with(
            dir,
            cache_bytes,
            Box::new(|path, cache| {
                Database::builder()
                    .set_cache_size(cache.max(4 << 20))
                    .create(path)
            }),
        )
    }

    /// [`Store::open`] with the database opened by `opener` (also on [`Store::reopen`]).
    pub(crate) fn open_with(
        dir: &Path,
        cache_bytes: usize,
        opener: Opener,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(Self::FILE);
        let db = opener(&path, cache_bytes).map_err(|e| StoreError::Open(Box::new(e)))?;
        let store = Self {
            db: RwLock::new(Some(db)),
            path,
            cache_bytes,
            opener,
            healthy: AtomicBool::new(true),
        };
        // Create every table so readers never meet a missing one.
        let tx = store.write_tx()?;
        {
            tx.open_table(SPAN_BLOBS)?;
            tx.open_table(BLOB_META)?;
            tx.open_table(TRACE_IDX)?;
            tx.open_table(SERVICE_IDX)?;
            tx.open_table(WINDOWS)?;
            tx.open_table(NODES)?;
            tx.open_table(PREDICTIONS)?;
            tx.open_table(ALERTS)?;
            tx.open_table(EPISODES)?;
            tx.open_table(LABELS)?;
            tx.open_table(NAMES)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        Ok(store)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// False after a write failed with an I/O error, until [`Store::reopen`] succeeds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records that a write failed with an I/O error: the database must be reopened.
    pub(crate) fn mark_failed(&self) {
        self.healthy.store(false, Ordering::Release);
    }

    /// Closes the database and opens it again (redb repairs it from its last commit), after an
    /// I/O error left it refusing every operation. Reads and writes meanwhile get
    /// [`StoreError::Unavailable`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file cannot be opened yet (for example while a reader
    /// still holds the old handle, or the disk still fails); call again later.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().map_err(|_| StoreError::Closed)?;
        // The old handle must go first: it holds the file's lock.
        drop(db.take());
        let fresh = (self.opener)(&self.path, self.cache_bytes)
            .map_err(|e| StoreError::Open(Box::new(e)))?;
        *db = Some(fresh);
        self.healthy.store(true, Ordering::Release);
        Ok(())
    }

    fn read_tx(&self) -> Result<redb::ReadTransaction, StoreError> {
        let db = self.db.read().map_err(|_| StoreError::Closed)?;
        Ok(db.as_ref().ok_or(StoreError::Unavailable)?.begin_read()?)
    }

    fn write_tx(&self) -> Result<redb::WriteTransaction, StoreError> {
        let db = self.db.read().map_err(|_| StoreError::Closed)?;
        Ok(db.as_ref().ok_or(StoreError::Unavailable)?.begin_write()?)
    }

    /// Writes a batch in one durable transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`]; nothing of the batch is visible then.
    pub fn write(&self, w: &WriteBatch) -> Result<(), StoreError> {
        if w.is_empty() {
            return Ok(());
        }
        let tx = self.write_tx()?;
        {
            let mut meta = tx.open_table(META)?;
            let get = |m: &redb::Table<'_, &str, u64>, k: &str| -> Result<u64, StoreError> {
                Ok(m.get(k)?.map_or(0, |v| v.value()))
            };
            let mut seq = get(&meta, NEXT_SEQ)?;
            let mut bytes = get(&meta, SPAN_BYTES)?;
            let mut count = get(&meta, SPAN_COUNT)?;
            if !w.spans.is_empty() {
                let mut blobs = tx.open_table(SPAN_BLOBS)?;
                let mut bmeta = tx.open_table(BLOB_META)?;
                let mut tidx = tx.open_table(TRACE_IDX)?;
                let mut sidx = tx.open_table(SERVICE_IDX)?;
                let mut names = tx.open_table(NAMES)?;
                for b in &w.spans {
                    blobs.insert(seq, b.bytes.as_slice())?;
                    bmeta.insert(seq, (b.unix_ns, b.bytes.len() as u64, b.spans))?;
                    for t in &b.traces {
                        tidx.insert((*t, seq), ())?;
                    }
                    for s in &b.services {
                        sidx.insert((s.as_str(), b.unix_ns, seq), ())?;
                        insert_newest(&mut names, ("span_service", s.as_str()), b.unix_ns)?;
                    }
                    bytes += b.bytes.len() as u64;
                    count += b.spans;
                    seq += 1;
                }
            }
            meta.insert(NEXT_SEQ, seq)?;
            meta.insert(SPAN_BYTES, bytes)?;
            meta.insert(SPAN_COUNT, count)?;
            if !w.windows.is_empty() {
                let mut t = tx.open_table(WINDOWS)?;
                let mut names = tx.open_table(NAMES)?;
                for win in &w.windows {
                    t.insert((win.service.as_str(), win.tick), json(win).as_slice())?;
                    insert_newest(&mut names, ("service", win.service.as_str()), win.tick)?;
                }
            }
            if !w.nodes.is_empty() {
                let mut t = tx.open_table(NODES)?;
                let mut names = tx.open_table(NAMES)?;
                for n in &w.nodes {
                    t.insert((n.node.as_str(), n.unix_ns), json(n).as_slice())?;
                    insert_newest(&mut names, ("node", n.node.as_str()), n.unix_ns)?;
                }
            }
            if !w.predictions.is_empty() {
                let mut t = tx.open_table(PREDICTIONS)?;
                for p in &w.predictions {
                    t.insert(p.tick, json(p).as_slice())?;
                }
            }
            if !w.alerts.is_empty() {
                let mut t = tx.open_table(ALERTS)?;
                for a in &w.alerts {
                    t.insert((a.started_at_unix_ns, a.id.as_str()), json(a).as_slice())?;
                }
            }
            if !w.episodes.is_empty() {
                let mut t = tx.open_table(EPISODES)?;
                for e in &w.episodes {
                    t.insert((e.start_tick, e.id.as_str()), json(e).as_slice())?;
                }
            }
            if !w.labels.is_empty() {
                let mut t = tx.open_table(LABELS)?;
                let first = t.len()?;
                for (next, l) in (first..).zip(&w.labels) {
                    t.insert((l.start, next), json(l).as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Totals.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let tx = self.read_tx()?;
        let meta = tx.open_table(META)?;
        let get =
            |k: &str| -> Result<u64, StoreError> { Ok(meta.get(k)?.map_or(0, |v| v.value())) };
        Ok(StoreStats {
            spans: get(SPAN_COUNT)?,
            span_bytes: get(SPAN_BYTES)?,
            blobs: tx.open_table(SPAN_BLOBS)?.len()?,
        })
    }

    /// Every stored span of a trace.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`] or [`StoreError::Corrupt`].
    pub fn trace(&self, trace_id: [u8; 16]) -> Result<Vec<StoredSpan>, StoreError> {
        let tid = u128::from_be_bytes(trace_id);
        let tx = self.read_tx()?;
        let idx = tx.open_table(TRACE_IDX)?;
        let blobs = tx.open_table(SPAN_BLOBS)?;
        let mut out = Vec::new();
        for entry in idx.range((tid, 0)..=(tid, u64::MAX))? {
            let (k, _) = entry?;
            let (_, seq) = k.value();
            if let Some(b) = blobs.get(seq)? {
                let spans =
                    blob::decode(b.value(), |t, _| *t == trace_id).ok_or(StoreError::Corrupt)?;
                out.extend(spans);
            }
        }
        Ok(out)
    }

    /// Trace ids with spans of `service` ingested in `[from_ns, to_ns)`, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`] or [`StoreError::Corrupt`].
    pub fn traces_of(
        &self,
        service: &str,
        from_ns: u64,
        to_ns: u64,
        limit: usize,
    ) -> Result<Vec<[u8; 16]>, StoreError> {
        let tx = self.read_tx()?;
        let idx = tx.open_table(SERVICE_IDX)?;
        let blobs = tx.open_table(SPAN_BLOBS)?;
        let mut out: Vec<[u8; 16]> = Vec::new();
        for entry in idx.range((service, from_ns, 0)..(service, to_ns, 0))? {
            let (k, _) = entry?;
            let (_, _, seq) = k.value();
            if let Some(b) = blobs.get(seq)? {
                for s in blob::decode(b.value(), |_, s| s == service).ok_or(StoreError::Corrupt)? {
                    if !out.contains(&s.trace_id) {
                        out.push(s.trace_id);
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// A service's windows for ticks in `[from_tick, to_tick)`, at most `limit`, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn windows(
        &self,
        service: &str,
        from_tick: u64,
        to_tick: u64,
        limit: usize,
    ) -> Result<Vec<ServiceWindow>, StoreError> {
        self.keyed_range(WINDOWS, service, from_tick, to_tick, limit)
    }

    /// Node samples of `node` taken in `[from_ns, to_ns)`, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn node_samples(
        &self,
        node: &str,
        from_ns: u64,
        to_ns: u64,
        limit: usize,
    ) -> Result<Vec<NodeSample>, StoreError> {
        self.keyed_range(NODES, node, from_ns, to_ns, limit)
    }

    /// The rows of a `(name, time)`-keyed table for `name` in `[from, to)`, at most `limit`,
    /// oldest first; rows that no longer parse are skipped.
    fn keyed_range<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<'_, (&str, u64), &[u8]>,
        name: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(table)?;
        let mut out = Vec::new();
        for e in t.range((name, from)..(name, to))? {
            let (_, v) = e?;
            if let Some(row) = parse(v.value()) {
                out.push(row);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Predictions for ticks in `[from_tick, to_tick)`, the newest `limit` of them, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn predictions(
        &self,
        from_tick: u64,
        to_tick: u64,
        limit: usize,
    ) -> Result<Vec<PredictionRecord>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(PREDICTIONS)?;
        let mut out = Vec::new();
        for e in t.range(from_tick..to_tick)?.rev() {
            let (_, v) = e?;
            if let Some(p) = parse(v.value()) {
                out.push(p);
            }
            if out.len() >= limit {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The newest `limit` alerts (newest first), optionally only open ones.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn alerts(&self, open_only: bool, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(ALERTS)?;
        let mut out = Vec::new();
        for e in t.iter()?.rev() {
            let (_, v) = e?;
            if let Some(a) = parse::<Alert>(v.value())
                && (!open_only || a.open)
            {
                out.push(a);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The newest `limit` violation episodes, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn episodes(&self, limit: usize) -> Result<Vec<Episode>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(EPISODES)?;
        let mut out = Vec::new();
        for e in t.iter()?.rev().take(limit) {
            let (_, v) = e?;
            if let Some(a) = parse(v.value()) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Every stored label, oldest first (at most `limit`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn labels(&self, limit: usize) -> Result<Vec<Label>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(LABELS)?;
        let mut out = Vec::new();
        for e in t.iter()?.take(limit) {
            let (_, v) = e?;
            if let Some(a) = parse(v.value()) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Service names with stored windows or spans.
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn service_names(&self) -> Result<Vec<String>, StoreError> {
        let tx = self.read_tx()?;
        let t = tx.open_table(NAMES)?;
        let mut out = std::collections::BTreeSet::new();
        for e in t.iter()? {
            let (k, _) = e?;
            let (kind, name) = k.value();
            if kind == "service" || kind == "span_service" {
                out.insert(name.to_owned());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Deletes data older than `max_age_ns` before `now_ns`, and the oldest span blobs beyond
    /// `max_bytes`. Deletes at most `max_blobs` blobs per call (call again while it returns a
    /// full count).
    ///
    /// # Errors
    ///
    /// [`StoreError::Db`].
    pub fn retain(
        &self,
        now_ns: u64,
        max_age_ns: u64,
        max_bytes: u64,
        tick_ns: u64,
        max_blobs: usize,
    ) -> Result<RetentionStats, StoreError> {
        let cutoff_ns = now_ns.saturating_sub(max_age_ns);
        let cutoff_tick = cutoff_ns / tick_ns.max(1);
        let mut stats = RetentionStats::default();
        let tx = self.write_tx()?;
        {
            let mut meta = tx.open_table(META)?;
            let mut bytes = meta.get(SPAN_BYTES)?.map_or(0, |v| v.value());
            let mut count = meta.get(SPAN_COUNT)?.map_or(0, |v| v.value());
            let mut blobs = tx.open_table(SPAN_BLOBS)?;
            let mut bmeta = tx.open_table(BLOB_META)?;
            let mut tidx = tx.open_table(TRACE_IDX)?;
            let mut sidx = tx.open_table(SERVICE_IDX)?;
            let mut victims = Vec::new();
            let mut projected = bytes;
            for e in bmeta.iter()? {
                let (k, v) = e?;
                let (at, size, _) = v.value();
                if at < cutoff_ns || projected > max_bytes {
                    victims.push((k.value(), at, size));
                    projected = projected.saturating_sub(size);
                    if victims.len() >= max_blobs {
                        break;
                    }
                } else {
                    break;
                }
            }
            for (seq, at, size) in victims {
                if let Some(b) = blobs.remove(seq)? {
                    let data = b.value().to_vec();
                    drop(b);
                    let spans = blob::decode(&data, |_, _| true).unwrap_or_default();
                    let mut traces: Vec<u128> = spans
                        .iter()
                        .map(|s| u128::from_be_bytes(s.trace_id))
                        .collect();
                    traces.sort_unstable();
                    traces.dedup();
                    for t in traces {
                        tidx.remove((t, seq))?;
                    }
                    for s in blob::services(&data).unwrap_or_default() {
                        sidx.remove((s.as_str(), at, seq))?;
                    }
                    stats.spans += spans.len() as u64;
                    count = count.saturating_sub(spans.len() as u64);
                }
                bmeta.remove(seq)?;
                bytes = bytes.saturating_sub(size);
                stats.blobs += 1;
            }
            meta.insert(SPAN_BYTES, bytes)?;
            meta.insert(SPAN_COUNT, count)?;

            // (kind, name, last seen: a tick for windows, unix ns otherwise).
            let names: Vec<(String, String, u64)> = {
                let t = tx.open_table(NAMES)?;
                let mut v = Vec::new();
                for e in t.iter()? {
                    let (k, last) = e?;
                    let (kind, name) = k.value();
                    v.push((kind.to_owned(), name.to_owned(), last.value()));
                }
                v
            };
            let mut windows = tx.open_table(WINDOWS)?;
            let mut nodes = tx.open_table(NODES)?;
            for (kind, name, _) in &names {
                match kind.as_str() {
                    "service" => {
                        let before = windows.len()?;
                        windows.retain_in(
                            (name.as_str(), 0)..(name.as_str(), cutoff_tick),
                            |_, _| false,
                        )?;
                        stats.records += before - windows.len()?;
                    }
                    "node" => {
                        let before = nodes.len()?;
                        nodes
                            .retain_in((name.as_str(), 0)..(name.as_str(), cutoff_ns), |_, _| {
                                false
                            })?;
                        stats.records += before - nodes.len()?;
                    }
                    _ => {}
                }
            }
            let mut preds = tx.open_table(PREDICTIONS)?;
            let before = preds.len()?;
            preds.retain_in(0..cutoff_tick, |_, _| false)?;
            stats.records += before - preds.len()?;
            let mut alerts = tx.open_table(ALERTS)?;
            let before = alerts.len()?;
            alerts.retain_in((0, "")..(cutoff_ns, ""), |_, _| false)?;
            stats.records += before - alerts.len()?;
            let mut eps = tx.open_table(EPISODES)?;
            eps.retain_in((0, "")..(cutoff_tick, ""), |_, _| false)?;
            // A name last seen before the cutoff has no data left: forget it, so names that
            // come and go (pods, one-off services) do not pile up.
            let mut t = tx.open_table(NAMES)?;
            for (kind, name, last) in &names {
                let cutoff = if kind == "service" {
                    cutoff_tick
                } else {
                    cutoff_ns
                };
                if *last < cutoff {
                    t.remove((kind.as_str(), name.as_str()))?;
                }
            }
        }
        tx.commit()?;
        Ok(stats)
    }
}

/// Records `name` as seen at `at`, keeping the newest time when data arrives out of order.
fn insert_newest(
    names: &mut redb::Table<'_, (&str, &str), u64>,
    key: (&str, &str),
    at: u64,
) -> Result<(), StoreError> {
    let newest = names.get(key)?.map_or(at, |v| v.value().max(at));
    names.insert(key, newest)?;
    Ok(())
}

#[cfg(test)]
mod tests;
