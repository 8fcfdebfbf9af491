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

/// Most services a blob can name (span entries index them with 16 bits).
pub const MAX_SERVICES: usize = u16::MAX as usize;

/// Longest service name a blob keeps, bytes (the length is 16 bits).
pub const MAX_NAME: usize = u16::MAX as usize;

/// `name` cut to at most `max` bytes at a character boundary.
fn clip(name: &str, max: usize) -> &str {
    if name.len() <= max {
        return name;
    }
    let mut end = max;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Encodes the accepted spans of a batch. Returns the blob and its distinct trace ids.
///
/// Ingest refuses batches beyond [`crate::ingest::otlp::MAX_SERVICES`] services or
/// [`crate::ingest::otlp::MAX_SERVICE_NAME`]-byte names, well inside what the format holds.
/// Should a batch still exceed the format, the blob stays readable: names are cut at a
/// character boundary, and spans of services past [`MAX_SERVICES`] are left out rather than
/// filed under another service.
pub fn encode(batch: &DecodedBatch) -> (Vec<u8>, Vec<u128>) {
    let names: Vec<&str> = batch
        .services
        .iter()
        .take(MAX_SERVICES)
        .map(|s| clip(s, MAX_NAME))
        .collect();
    let mut size = 4;
    for s in &names {
        size += 2 + s.len();
    }
    for s in &batch.spans {
        size += 2 + 16 + 4 + (s.raw.1 - s.raw.0) as usize;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
    for s in &names {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut traces: Vec<u128> = Vec::with_capacity(batch.spans.len());
    for s in &batch.spans {
        let Some(svc) = u16::try_from(s.service)
            .ok()
            .filter(|i| usize::from(*i) < names.len())
        else {
            continue;
        };
        let raw = batch.slice(s.raw);
        out.extend_from_slice(&svc.to_le_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::otlp::SpanRec;

    fn rec(service: u32, trace: u8) -> SpanRec {
        SpanRec {
            trace_id: [trace; 16],
            span_id: [1; 8],
            parent_id: [0; 8],
            service,
            name: (0, 0),
            raw: (0, 2),
            kind: 2,
            error: false,
            start_ns: 1,
            end_ns: 2,
        }
    }

    #[test]
    fn oversized_batches_stay_readable() {
        // A name past the 16-bit length, with a multi-byte character across the cut.
        let long = format!("{}é{}", "a".repeat(MAX_NAME - 1), "b".repeat(10));
        let mut names = vec![long];
        names.extend((1..=MAX_SERVICES).map(|i| format!("s{i}")));
        let batch = DecodedBatch {
            body: bytes::Bytes::from_static(b"\x08\x01"),
            services: names,
            spans: vec![
                rec(0, 1),
                rec(7, 2),
                // Index 65535 does not fit the blob: left out, not wrapped onto service 0.
                rec(MAX_SERVICES as u32, 3),
            ],
            ..DecodedBatch::default()
        };
        let (blob, traces) = encode(&batch);
        assert_eq!(traces.len(), 2);
        let names = services(&blob).unwrap();
        assert_eq!(names.len(), MAX_SERVICES);
        assert_eq!(
            names[0],
            "a".repeat(MAX_NAME - 1),
            "cut before the 2-byte char"
        );
        let spans = decode(&blob, |_, _| true).unwrap();
        let got: Vec<(&str, u8)> = spans
            .iter()
            .map(|s| (s.service.as_str(), s.trace_id[0]))
            .collect();
        assert_eq!(got, vec![(names[0].as_str(), 1), ("s7", 2)]);
        assert_eq!(count(&blob), Some(2));
    }

    #[test]
    fn names_are_cut_at_a_character_boundary() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("héllo", 100), "héllo");
    }
}
