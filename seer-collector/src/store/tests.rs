use super::*;
use crate::ingest::otlp;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;
use std::collections::HashMap;

fn batch(spans: &[(u8, u8, &str)]) -> otlp::DecodedBatch {
    let mut by_service: HashMap<&str, Vec<Span>> = HashMap::new();
    for (t, s, svc) in spans {
        by_service.entry(svc).or_default().push(Span {
            trace_id: vec![*t; 16],
            span_id: vec![*s; 8],
            name: format!("op{s}"),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        });
    }
    let req = ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(svc.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    otlp::decode(Bytes::from(req.encode_to_vec())).unwrap()
}

fn blob_of(b: &otlp::DecodedBatch, at: u64) -> SpanBlob {
    let (bytes, traces) = blob::encode(b);
    SpanBlob {
        unix_ns: at,
        bytes,
        traces,
        services: b.services.clone(),
        spans: b.spans.len() as u64,
    }
}

#[test]
fn spans_round_trip_by_trace_and_service_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path(), 8 << 20).unwrap();
        let b = batch(&[(1, 1, "fe"), (1, 2, "c"), (2, 3, "fe")]);
        s.write(&WriteBatch {
            spans: vec![blob_of(&b, 100)],
            ..Default::default()
        })
        .unwrap();
        let t1 = s.trace([1; 16]).unwrap();
        assert_eq!(t1.len(), 2);
        let span = Span::decode(t1[0].raw.as_slice()).unwrap();
        assert_eq!(span.trace_id, vec![1; 16]);
        assert_eq!(s.traces_of("c", 0, 1000, 10).unwrap(), vec![[1; 16]]);
        assert_eq!(s.stats().unwrap().spans, 3);
    }
    let s = Store::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(s.trace([2; 16]).unwrap().len(), 1);
    assert!(s.trace([9; 16]).unwrap().is_empty());
    assert_eq!(s.stats().unwrap().spans, 3);
}

#[test]
fn retention_by_size_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), 8 << 20).unwrap();
    for i in 0..10u8 {
        let b = batch(&[(i + 1, 1, "fe")]);
        s.write(&WriteBatch {
            spans: vec![blob_of(&b, 1_000 + u64::from(i))],
            ..Default::default()
        })
        .unwrap();
    }
    let per_blob = s.stats().unwrap().span_bytes / 10;
    // Size: keep about 4 blobs.
    let r = s.retain(2_000, u64::MAX, per_blob * 4, 100, 1000).unwrap();
    assert_eq!(r.blobs, 6);
    assert!(s.trace([1; 16]).unwrap().is_empty());
    assert_eq!(s.trace([10; 16]).unwrap().len(), 1);
    assert!(s.traces_of("fe", 0, u64::MAX, 100).unwrap().len() == 4);
    // Age: everything before 1_008 goes.
    let r = s.retain(1_010, 2, u64::MAX, 100, 1000).unwrap();
    assert_eq!(r.blobs, 2);
    assert_eq!(s.stats().unwrap().spans, 2);
}

#[test]
fn retention_forgets_names_with_no_data_left() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), 8 << 20).unwrap();
    s.write(&WriteBatch {
        spans: vec![blob_of(&batch(&[(1, 1, "old")]), 1_000)],
        ..Default::default()
    })
    .unwrap();
    s.write(&WriteBatch {
        spans: vec![blob_of(&batch(&[(2, 1, "new")]), 5_000)],
        ..Default::default()
    })
    .unwrap();
    // A batch written late (older time) does not make "new" look older than it is.
    s.write(&WriteBatch {
        spans: vec![blob_of(&batch(&[(3, 1, "new")]), 900)],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.service_names().unwrap(), ["new", "old"]);
    s.retain(5_100, 1_000, u64::MAX, 100, 1000).unwrap();
    assert_eq!(s.service_names().unwrap(), ["new"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    // Model-based: whatever batches are written, each trace reads back exactly the spans
    // written for it (against an in-memory reference).
    #[test]
    fn model_check(batches in proptest::collection::vec(
        proptest::collection::vec((1u8..6, 1u8..50, 0usize..3), 1..8), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 4 << 20).unwrap();
        let names = ["a", "b", "c"];
        let mut model: HashMap<u8, usize> = HashMap::new();
        for (i, spans) in batches.iter().enumerate() {
            let spans: Vec<(u8, u8, &str)> = spans.iter().map(|(t, sp, n)| (*t, *sp, names[*n])).collect();
            for (t, _, _) in &spans {
                *model.entry(*t).or_default() += 1;
            }
            let b = batch(&spans);
            s.write(&WriteBatch { spans: vec![blob_of(&b, i as u64 + 1)], ..Default::default() }).unwrap();
        }
        for t in 1u8..6 {
            prop_assert_eq!(s.trace([t; 16]).unwrap().len(), model.get(&t).copied().unwrap_or(0));
        }
    }
}

/// redb's file backend with writes that fail (as on a full disk) while `fail` is set.
#[derive(Debug)]
struct FlakyBackend {
    inner: redb::backends::FileBackend,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyBackend {
    fn check(&self) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl redb::StorageBackend for FlakyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

fn flaky_store(dir: &std::path::Path) -> (Store, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = std::sync::Arc::clone(&fail);
    let opener: Opener = Box::new(move |path, _cache| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(redb::DatabaseError::from)?;
        let backend = FlakyBackend {
            inner: redb::backends::FileBackend::new(file)?,
            fail: std::sync::Arc::clone(&f),
        };
        redb::Database::builder().create_with_backend(backend)
    });
    (Store::open_with(dir, 4 << 20, opener).unwrap(), fail)
}

fn node_at(unix_ns: u64) -> NodeSample {
    NodeSample {
        node: "n1".into(),
        unix_ns,
        ..Default::default()
    }
}

#[test]
fn an_io_error_needs_a_reopen_and_keeps_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (s, fail) = flaky_store(dir.path());
    let write = |at| {
        s.write(&WriteBatch {
            nodes: vec![node_at(at)],
            ..Default::default()
        })
    };
    write(1).unwrap();
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = write(2).unwrap_err();
    assert!(e.is_io(), "{e:?}");
    // The disk has room again, but redb refuses until reopened.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let e = write(3).unwrap_err();
    assert!(e.is_io(), "{e:?}");
    s.reopen().unwrap();
    write(4).unwrap();
    let got: Vec<u64> = s
        .node_samples("n1", 0, 10, 10)
        .unwrap()
        .iter()
        .map(|n| n.unix_ns)
        .collect();
    assert_eq!(got, [1, 4]);
}

#[test]
fn the_writer_reopens_a_failed_store_and_counts_the_records_it_lost() {
    use super::writer::{Record, RetentionPolicy, spawn};
    let dir = tempfile::tempdir().unwrap();
    let (s, fail) = flaky_store(dir.path());
    let store = std::sync::Arc::new(s);
    let metrics = std::sync::Arc::new(crate::internal_events::Metrics::new());
    let (w, join) = spawn(
        std::sync::Arc::clone(&store),
        64,
        RetentionPolicy {
            max_age_ns: u64::MAX,
            max_bytes: u64::MAX,
            tick_ns: 100,
            every: std::time::Duration::from_secs(3600),
        },
        std::sync::Arc::clone(&metrics),
    )
    .unwrap();
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    w.record(Record::Node(node_at(1)));
    w.flush();
    assert!(!store.is_healthy());
    assert_eq!(
        metrics.dropped(crate::internal_events::DropStage::StoreWrite),
        1
    );
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    // The writer reopens within a second or so; until then writes fail and count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut at = 2;
    while !store.is_healthy()
        || store
            .node_samples("n1", 0, u64::MAX, 10)
            .unwrap()
            .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never reopened the store"
        );
        w.record(Record::Node(node_at(at)));
        w.flush();
        at += 1;
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(w);
    join.join().unwrap();
    let written = store.node_samples("n1", 0, u64::MAX, 1000).unwrap().len() as u64;
    // Every record was either written or counted as lost.
    assert_eq!(
        written + metrics.dropped(crate::internal_events::DropStage::StoreWrite),
        at - 1
    );
}
