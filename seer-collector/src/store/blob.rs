//! The on-disk form of one ingest batch's spans.
//!
//! ```text
//! u32 service count, then per service: u16 length + UTF-8 name
//! then per span: u16 service index, 16 B trace id, u32 length + the encoded OTLP `Span`
//! ```
//!
//! Spans are kept exactly as the client encoded them (the bytes `ingest::otlp` checked), so a
//! stored span decodes with `opentelemetry-proto` and nothing is re-encoded on the hot path.

use crate::ingest::otlp::DecodedBatch;

/// One span read back from a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpan {
    /// Service name.
    pub service: String,
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The encoded OTLP `Span` message.
    pub raw: Vec<u8>,
}

/// Encodes the accepted spans of a batch. Returns the blob and its distinct trace ids.
pub fn encode(batch: &DecodedBatch) -> (Vec<u8>, Vec<u128>) {
    let mut size = 4;
    for s in &batch.services {
        size += 2 + s.len().min(u16::MAX as usize);
    }
    for s in &batch.spans {
        size += 2 + 16 + 4 + (s.raw.1 - s.raw.0) as usize;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(batch.services.len() as u32).to_le_bytes());
    for s in &batch.services {
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(b.len() as u16).to_le_bytes());
        out.extend_from_slice(b);
    }
    let mut traces: Vec<u128> = Vec::with_capacity(batch.spans.len());
    for s in &batch.spans {
        let raw = batch.slice(s.raw);
        out.extend_from_slice(&(s.service as u16).to_le_bytes());
        out.extend_from_slice(&s.trace_id);
        out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        out.extend_from_slice(raw);
        traces.push(u128::from_be_bytes(s.trace_id));
    }
    traces.sort_unstable();
    traces.dedup();
    (out, traces)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

/// The service names in a blob's header.
pub fn services(blob: &[u8]) -> Option<Vec<String>> {
    let mut b = blob;
    let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
        out.push(String::from_utf8_lossy(take(&mut b, len)?).into_owned());
    }
    Some(out)
}

/// Decodes a blob, keeping spans for which `keep(trace_id, service)` is true. `None` when the
/// blob is corrupt.
pub fn decode(
    blob: &[u8],
    mut keep: impl FnMut(&[u8; 16], &str) -> bool,
) -> Option<Vec<StoredSpan>> {
    let names = services(blob)?;
    let mut b = blob;
    take(&mut b, 4)?;
    for n in &names {
        take(&mut b, 2 + n.len())?;
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let svc = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
        let trace: [u8; 16] = take(&mut b, 16)?.try_into().ok()?;
        let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        let raw = take(&mut b, len)?;
        let service = names.get(svc)?;
        if keep(&trace, service) {
            out.push(StoredSpan {
                service: service.clone(),
                trace_id: trace,
                raw: raw.to_vec(),
            });
        }
    }
    Some(out)
}

/// Number of spans in a blob (`None` when corrupt).
pub fn count(blob: &[u8]) -> Option<usize> {
    decode(blob, |_, _| false)?;
    let names = services(blob)?;
    let mut b = blob;
    take(&mut b, 4)?;
    for n in &names {
        take(&mut b, 2 + n.len())?;
    }
    let mut n = 0;
    while !b.is_empty() {
        take(&mut b, 18)?;
        let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        take(&mut b, len)?;
        n += 1;
    }
    Some(n)
}
