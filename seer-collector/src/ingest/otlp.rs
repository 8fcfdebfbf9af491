//! A zero-copy, schema-checking reader of OTLP `ExportTraceServiceRequest` protobuf.
//!
//! The reader walks the wire format once. It checks every field the way `prost` would (wire
//! types of known fields, lengths, UTF-8 of strings, nesting depth), so whatever it accepts
//! decodes with `opentelemetry-proto` later, and it extracts only what the pipeline needs: ids,
//! service, name, kind, times and status of each span, plus the byte range of the encoded
//! `Span` message, which is what the store keeps. Nothing is allocated per span except one
//! [`SpanRec`] in a `Vec`.
//!
//! Spans with invalid ids (trace id not 16 bytes or all zero, span id not 8 bytes or all zero,
//! parent id neither empty nor 8 bytes) are rejected one by one and reported in
//! `partial_success`; a malformed message rejects the whole request, and so does a request
//! with more than [`MAX_SERVICES`] distinct services or a `service.name` longer than
//! [`MAX_SERVICE_NAME`] bytes (the store's span blobs index services with 16 bits).

use std::collections::HashMap;

use bytes::Bytes;

/// Largest nesting of messages accepted (AnyValue arrays/maps nest).
pub const MAX_DEPTH: usize = 32;

/// Service name used when a resource has no `service.name` (the OTel SDK default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Most distinct services (resources' `service.name`) in one request.
pub const MAX_SERVICES: usize = 4096;

/// Longest service name accepted, bytes (the same limit as for native window batches).
pub const MAX_SERVICE_NAME: usize = 256;

/// Why a body is not a valid OTLP trace export.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The protobuf is truncated or a length runs past its message.
    #[error("truncated protobuf")]
    Truncated,
    /// A varint is longer than 10 bytes.
    #[error("malformed varint")]
    Varint,
    /// A field number of 0, a group, or an unknown wire type.
    #[error("invalid wire type {0}")]
    WireType(u8),
    /// A known field has the wrong wire type.
    #[error("field {field} has the wrong wire type")]
    FieldType {
        /// Field number.
        field: u32,
    },
    /// A string field is not UTF-8.
    #[error("string field is not utf-8")]
    Utf8,
    /// Messages nest deeper than [`MAX_DEPTH`].
    #[error("messages nest too deeply")]
    TooDeep,
    /// The JSON body is not OTLP/JSON.
    #[error("invalid OTLP/JSON: {0}")]
    Json(String),
    /// More spans than one request may carry.
    #[error("too many spans in one request")]
    TooManySpans,
    /// More distinct services than one request may carry.
    #[error("more than {MAX_SERVICES} distinct services in one request")]
    TooManyServices,
    /// A `service.name` is longer than [`MAX_SERVICE_NAME`].
    #[error("service.name is {0} bytes long (at most {MAX_SERVICE_NAME})")]
    ServiceName(usize),
}

/// OTLP span kinds.
pub mod kind {
    /// Unspecified.
    pub const UNSPECIFIED: u8 = 0;
    /// Internal.
    pub const INTERNAL: u8 = 1;
    /// Server.
    pub const SERVER: u8 = 2;
    /// Client.
    pub const CLIENT: u8 = 3;
    /// Producer.
    pub const PRODUCER: u8 = 4;
    /// Consumer.
    pub const CONSUMER: u8 = 5;
}

/// What the pipeline needs of one span. Byte ranges point into [`DecodedBatch::body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRec {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Span id.
    pub span_id: [u8; 8],
    /// Parent span id; all zero for a root.
    pub parent_id: [u8; 8],
    /// Index into [`DecodedBatch::services`].
    pub service: u32,
    /// Span name range (the endpoint, e.g. `GET /users/{id}`).
    pub name: (u32, u32),
    /// Encoded `Span` message range.
    pub raw: (u32, u32),
    /// OTLP span kind (see [`kind`]).
    pub kind: u8,
    /// Status code 2 (error).
    pub error: bool,
    /// Start, unix ns.
    pub start_ns: u64,
    /// End, unix ns.
    pub end_ns: u64,
}

impl SpanRec {
    /// Duration in nanoseconds (0 when the end precedes the start).
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Whether the span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_id == [0; 8]
    }
}

/// A decoded request: the body it borrows from and the spans found in it.
#[derive(Debug, Clone, Default)]
pub struct DecodedBatch {
    /// The (decompressed) protobuf body.
    pub body: Bytes,
    /// Distinct service names of the batch.
    pub services: Vec<String>,
    /// Accepted spans.
    pub spans: Vec<SpanRec>,
    /// Spans rejected for invalid ids.
    pub rejected: u64,
    /// Why the first span was rejected (for `partial_success.error_message`).
    pub reject_reason: Option<&'static str>,
}

impl DecodedBatch {
    /// The bytes of `range` in the body.
    pub fn slice(&self, range: (u32, u32)) -> &[u8] {
        self.body
            .get(range.0 as usize..range.1 as usize)
            .unwrap_or(&[])
    }

    /// The span's name.
    pub fn name(&self, span: &SpanRec) -> &str {
        std::str::from_utf8(self.slice(span.name)).unwrap_or("")
    }

    /// The span's service.
    pub fn service(&self, span: &SpanRec) -> &str {
        self.services
            .get(span.service as usize)
            .map_or(UNKNOWN_SERVICE, String::as_str)
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.body.len() + self.spans.len() * std::mem::size_of::<SpanRec>()
    }
}

#[derive(Clone, Copy)]
enum Wire {
    Varint,
    I64,
    Len,
    I32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        Self {
            buf,
            pos: start,
            end,
        }
    }

    fn done(&self) -> bool {
        self.pos >= self.end
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf[..self.end]
                .get(self.pos)
                .ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint)
    }

    #[inline]
    fn key(&mut self) -> Result<(u32, Wire), DecodeError> {
        let k = self.varint()?;
        let field = u32::try_from(k >> 3).map_err(|_| DecodeError::WireType(0))?;
        let wire = match k & 7 {
            0 => Wire::Varint,
            1 => Wire::I64,
            2 => Wire::Len,
            5 => Wire::I32,
            w => return Err(DecodeError::WireType(w as u8)),
        };
        if field == 0 {
            return Err(DecodeError::WireType(0));
        }
        Ok((field, wire))
    }

    #[inline]
    fn len(&mut self) -> Result<(usize, usize), DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
        let start = self.pos;
        let end = start.checked_add(n).ok_or(DecodeError::Truncated)?;
        if end > self.end {
            return Err(DecodeError::Truncated);
        }
        self.pos = end;
        Ok((start, end))
    }

    #[inline]
    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let end = self.pos + 8;
        if end > self.end {
            return Err(DecodeError::Truncated);
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(u64::from_le_bytes(b))
    }

    #[inline]
    fn skip(&mut self, wire: Wire) -> Result<(), DecodeError> {
        match wire {
            Wire::Varint => self.varint().map(|_| ()),
            Wire::I64 => self.fixed64().map(|_| ()),
            Wire::I32 => {
                if self.pos + 4 > self.end {
                    return Err(DecodeError::Truncated);
                }
                self.pos += 4;
                Ok(())
            }
            Wire::Len => self.len().map(|_| ()),
        }
    }
}

/// Field kinds of the schema checker.
#[derive(Clone, Copy)]
enum F {
    Varint,
    I64,
    I32,
    Bytes,
    Str,
    Msg(&'static [(u32, F)]),
    /// `AnyValue` (recursive through arrays and maps).
    Any,
    /// `KeyValue` (recursive through `AnyValue`).
    Kv,
}

const KV: &[(u32, F)] = &[(1, F::Str), (2, F::Any), (3, F::Varint)];
const ANY: &[(u32, F)] = &[
    (1, F::Str),
    (2, F::Varint),
    (3, F::Varint),
    (4, F::I64),
    (5, F::Msg(ARRAY)),
    (6, F::Msg(KVLIST)),
    (7, F::Bytes),
    (8, F::Varint),
];
const ARRAY: &[(u32, F)] = &[(1, F::Any)];
const KVLIST: &[(u32, F)] = &[(1, F::Kv)];
const EVENT: &[(u32, F)] = &[(1, F::I64), (2, F::Str), (3, F::Kv), (4, F::Varint)];
const LINK: &[(u32, F)] = &[
    (1, F::Bytes),
    (2, F::Bytes),
    (3, F::Str),
    (4, F::Kv),
    (5, F::Varint),
    (6, F::I32),
];
const STATUS: &[(u32, F)] = &[(2, F::Str), (3, F::Varint)];
const SCOPE: &[(u32, F)] = &[(1, F::Str), (2, F::Str), (3, F::Kv), (4, F::Varint)];
const RESOURCE: &[(u32, F)] = &[(1, F::Kv), (2, F::Varint), (3, F::Msg(ENTITY_REF))];
const ENTITY_REF: &[(u32, F)] = &[(1, F::Str), (2, F::Str), (3, F::Str), (4, F::Str)];

fn check_field(
    buf: &[u8],
    r: &mut Reader<'_>,
    wire: Wire,
    f: F,
    field: u32,
    depth: usize,
) -> Result<(), DecodeError> {
    let bad = || DecodeError::FieldType { field };
    match (f, wire) {
        (F::Varint, Wire::Varint) => r.varint().map(|_| ()),
        (F::I64, Wire::I64) => r.fixed64().map(|_| ()),
        (F::I32, Wire::I32) => r.skip(Wire::I32),
        (F::Bytes, Wire::Len) => r.len().map(|_| ()),
        (F::Str, Wire::Len) => {
            let (s, e) = r.len()?;
            std::str::from_utf8(&buf[s..e]).map_err(|_| DecodeError::Utf8)?;
            Ok(())
        }
        (F::Msg(schema), Wire::Len) => {
            let (s, e) = r.len()?;
            check_msg(buf, s, e, schema, depth + 1)
        }
        (F::Any, Wire::Len) => {
            let (s, e) = r.len()?;
            check_msg(buf, s, e, ANY, depth + 1)
        }
        (F::Kv, Wire::Len) => {
            let (s, e) = r.len()?;
            check_msg(buf, s, e, KV, depth + 1)
        }
        _ => Err(bad()),
    }
}

/// Checks a message against `schema` the way prost would decode it.
fn check_msg(
    buf: &[u8],
    start: usize,
    end: usize,
    schema: &[(u32, F)],
    depth: usize,
) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let mut r = Reader::new(buf, start, end);
    while !r.done() {
        let (field, wire) = r.key()?;
        match schema.iter().find(|(n, _)| *n == field) {
            Some((_, f)) => check_field(buf, &mut r, wire, *f, field, depth)?,
            None => r.skip(wire)?,
        }
    }
    Ok(())
}

fn id<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    let a: [u8; N] = b.try_into().ok()?;
    (a != [0; N]).then_some(a)
}

/// Most spans accepted in one request.
pub const MAX_SPANS: usize = 1 << 22;

/// Decodes and checks an OTLP/protobuf `ExportTraceServiceRequest`.
///
/// # Errors
///
/// A [`DecodeError`] when the body is not a valid request; invalid ids only reject their span.
pub fn decode(body: Bytes) -> Result<DecodedBatch, DecodeError> {
    let mut out = DecodedBatch {
        body: body.clone(),
        ..Default::default()
    };
    let buf: &[u8] = &body;
    if u32::try_from(buf.len()).is_err() {
        return Err(DecodeError::TooManySpans);
    }
    // Service name -> index into `out.services`.
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut top = Reader::new(buf, 0, buf.len());
    while !top.done() {
        let (field, wire) = top.key()?;
        if field != 1 {
            top.skip(wire)?;
            continue;
        }
        let Wire::Len = wire else {
            return Err(DecodeError::FieldType { field });
        };
        let (rs, re) = top.len()?;
        decode_resource_spans(buf, rs, re, &mut index, &mut out)?;
    }
    Ok(out)
}

fn decode_resource_spans<'a>(
    buf: &'a [u8],
    start: usize,
    end: usize,
    index: &mut HashMap<&'a str, u32>,
    out: &mut DecodedBatch,
) -> Result<(), DecodeError> {
    // First pass: the resource (it may come after the scope spans on the wire).
    let mut service: Option<&str> = None;
    let mut r = Reader::new(buf, start, end);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, Wire::Len) => {
                let (s, e) = r.len()?;
                check_msg(buf, s, e, RESOURCE, 2)?;
                if let Some(name) = find_service_name(buf, s, e)? {
                    service = Some(name);
                }
            }
            (2, Wire::Len) => {
                r.len()?;
            }
            (3, Wire::Len) => {
                let (s, e) = r.len()?;
                std::str::from_utf8(&buf[s..e]).map_err(|_| DecodeError::Utf8)?;
            }
            (1..=3, _) => return Err(DecodeError::FieldType { field }),
            _ => r.skip(wire)?,
        }
    }
    let name = service.unwrap_or(UNKNOWN_SERVICE);
    if name.len() > MAX_SERVICE_NAME {
        return Err(DecodeError::ServiceName(name.len()));
    }
    let svc = match index.get(name) {
        Some(&i) => i,
        None => {
            if out.services.len() >= MAX_SERVICES {
                return Err(DecodeError::TooManyServices);
            }
            let i = u32::try_from(out.services.len()).map_err(|_| DecodeError::TooManyServices)?;
            out.services.push(name.to_owned());
            index.insert(name, i);
            i
        }
    };
    let mut r = Reader::new(buf, start, end);
    while !r.done() {
        let (field, wire) = r.key()?;
        if let (2, Wire::Len) = (field, wire) {
            let (s, e) = r.len()?;
            decode_scope_spans(buf, s, e, svc, out)?;
        } else {
            r.skip(wire)?;
        }
    }
    Ok(())
}

fn find_service_name(buf: &[u8], start: usize, end: usize) -> Result<Option<&str>, DecodeError> {
    let mut r = Reader::new(buf, start, end);
    while !r.done() {
        let (field, wire) = r.key()?;
        if let (1, Wire::Len) = (field, wire) {
            let (s, e) = r.len()?;
            let mut kv = Reader::new(buf, s, e);
            let mut key: &[u8] = &[];
            let mut value: Option<(usize, usize)> = None;
            while !kv.done() {
                let (f, w) = kv.key()?;
                match (f, w) {
                    (1, Wire::Len) => {
                        let (a, b) = kv.len()?;
                        key = &buf[a..b];
                    }
                    (2, Wire::Len) => value = Some(kv.len()?),
                    _ => kv.skip(w)?,
                }
            }
            if key == b"service.name"
                && let Some((a, b)) = value
            {
                let mut any = Reader::new(buf, a, b);
                while !any.done() {
                    let (f, w) = any.key()?;
                    if let (1, Wire::Len) = (f, w) {
                        let (x, y) = any.len()?;
                        let s = std::str::from_utf8(&buf[x..y]).map_err(|_| DecodeError::Utf8)?;
                        if !s.is_empty() {
                            return Ok(Some(s));
                        }
                    } else {
                        any.skip(w)?;
                    }
                }
            }
        } else {
            r.skip(wire)?;
        }
    }
    Ok(None)
}

fn decode_scope_spans(
    buf: &[u8],
    start: usize,
    end: usize,
    svc: u32,
    out: &mut DecodedBatch,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf, start, end);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, Wire::Len) => {
                let (s, e) = r.len()?;
                check_msg(buf, s, e, SCOPE, 3)?;
            }
            (2, Wire::Len) => {
                let (s, e) = r.len()?;
                decode_span(buf, s, e, svc, out)?;
            }
            (3, Wire::Len) => {
                let (s, e) = r.len()?;
                std::str::from_utf8(&buf[s..e]).map_err(|_| DecodeError::Utf8)?;
            }
            (1..=3, _) => return Err(DecodeError::FieldType { field }),
            _ => r.skip(wire)?,
        }
    }
    Ok(())
}

fn decode_span(
    buf: &[u8],
    start: usize,
    end: usize,
    svc: u32,
    out: &mut DecodedBatch,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf, start, end);
    let mut trace: &[u8] = &[];
    let mut span: &[u8] = &[];
    let mut parent: &[u8] = &[];
    let mut name = (start as u32, start as u32);
    let mut kind_v = 0u8;
    let mut start_ns = 0u64;
    let mut end_ns = 0u64;
    let mut error = false;
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, Wire::Len) => {
                let (a, b) = r.len()?;
                trace = &buf[a..b];
            }
            (2, Wire::Len) => {
                let (a, b) = r.len()?;
                span = &buf[a..b];
            }
            (4, Wire::Len) => {
                let (a, b) = r.len()?;
                parent = &buf[a..b];
            }
            (3 | 5, Wire::Len) => {
                let (a, b) = r.len()?;
                std::str::from_utf8(&buf[a..b]).map_err(|_| DecodeError::Utf8)?;
                if field == 5 {
                    name = (a as u32, b as u32);
                }
            }
            (6, Wire::Varint) => kind_v = u8::try_from(r.varint()?).unwrap_or(u8::MAX),
            (7, Wire::I64) => start_ns = r.fixed64()?,
            (8, Wire::I64) => end_ns = r.fixed64()?,
            (9, Wire::Len) => {
                let (a, b) = r.len()?;
                check_msg(buf, a, b, KV, 5)?;
            }
            (10 | 12 | 14, Wire::Varint) => {
                r.varint()?;
            }
            (11, Wire::Len) => {
                let (a, b) = r.len()?;
                check_msg(buf, a, b, EVENT, 5)?;
            }
            (13, Wire::Len) => {
                let (a, b) = r.len()?;
                check_msg(buf, a, b, LINK, 5)?;
            }
            (15, Wire::Len) => {
                let (a, b) = r.len()?;
                check_msg(buf, a, b, STATUS, 5)?;
                let mut s = Reader::new(buf, a, b);
                while !s.done() {
                    let (f, w) = s.key()?;
                    if let (3, Wire::Varint) = (f, w) {
                        error = s.varint()? == 2;
                    } else {
                        s.skip(w)?;
                    }
                }
            }
            (16, Wire::I32) => r.skip(Wire::I32)?,
            (1..=16, _) => return Err(DecodeError::FieldType { field }),
            _ => r.skip(wire)?,
        }
    }
    let ids = (
        id::<16>(trace),
        id::<8>(span),
        if parent.is_empty() {
            Some([0u8; 8])
        } else {
            id::<8>(parent)
        },
    );
    match ids {
        (Some(trace_id), Some(span_id), Some(parent_id)) => {
            if out.spans.len() >= MAX_SPANS {
                return Err(DecodeError::TooManySpans);
            }
            out.spans.push(SpanRec {
                trace_id,
                span_id,
                parent_id,
                service: svc,
                name,
                raw: (start as u32, end as u32),
                kind: kind_v,
                error,
                start_ns,
                end_ns,
            });
        }
        (t, s, _) => {
            out.rejected += 1;
            out.reject_reason.get_or_insert(if t.is_none() {
                "invalid trace id (must be 16 bytes, not all zero)"
            } else if s.is_none() {
                "invalid span id (must be 8 bytes, not all zero)"
            } else {
                "invalid parent span id (must be empty or 8 bytes)"
            });
        }
    }
    Ok(())
}

/// Decodes an OTLP/JSON body into the same form as [`decode`] (re-encoding it as protobuf).
///
/// # Errors
///
/// [`DecodeError::Json`] for anything that is not OTLP/JSON (including hex ids that do not
/// parse and nesting beyond `serde_json`'s limit of 128).
pub fn decode_json(body: &[u8]) -> Result<DecodedBatch, DecodeError> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let req: ExportTraceServiceRequest =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    decode(Bytes::from(req.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    pub(crate) fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", service), kv("host", "h")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(t: u8, s: u8, p: Option<u8>) -> Span {
        Span {
            trace_id: vec![t; 16],
            span_id: vec![s; 8],
            parent_span_id: p.map(|p| vec![p; 8]).unwrap_or_default(),
            name: "GET /x".into(),
            kind: 2,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 5_000,
            attributes: vec![kv("http.route", "/x")],
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_prost_encodes() {
        let req = request("fe", vec![span(1, 2, None), span(1, 3, Some(2))]);
        let b = decode(Bytes::from(req.encode_to_vec())).unwrap();
        assert_eq!(b.services, vec!["fe".to_string()]);
        assert_eq!(b.spans.len(), 2);
        let s = &b.spans[1];
        assert_eq!(s.trace_id, [1; 16]);
        assert_eq!(s.parent_id, [2; 8]);
        assert_eq!(b.name(s), "GET /x");
        assert_eq!(s.kind, kind::SERVER);
        assert!(s.error);
        assert_eq!(s.duration_ns(), 4_000);
        // The raw range is the Span message itself.
        let back = Span::decode(b.slice(s.raw)).unwrap();
        assert_eq!(back, span(1, 3, Some(2)));
    }

    #[test]
    fn services_are_limited_in_number_and_length() {
        // Many resources of a few services share their entries; indices stay right.
        let mut req = ExportTraceServiceRequest::default();
        for i in 0..MAX_SERVICES {
            let mut r = request(&format!("svc-{i}"), vec![span(1, 2, None)]);
            req.resource_spans.append(&mut r.resource_spans);
        }
        let mut again = request("svc-7", vec![span(1, 3, None)]);
        req.resource_spans.append(&mut again.resource_spans);
        let b = decode(Bytes::from(req.encode_to_vec())).unwrap();
        assert_eq!(b.services.len(), MAX_SERVICES);
        assert_eq!(b.service(&b.spans[MAX_SERVICES - 1]), "svc-4095");
        assert_eq!(b.service(&b.spans[MAX_SERVICES]), "svc-7");
        // One more distinct service is refused.
        let mut one_more = request("svc-new", vec![span(1, 4, None)]);
        req.resource_spans.append(&mut one_more.resource_spans);
        assert_eq!(
            decode(Bytes::from(req.encode_to_vec())).unwrap_err(),
            DecodeError::TooManyServices
        );
        // Names: up to the limit, not beyond (JSON goes through the same check).
        let name = "é".repeat(MAX_SERVICE_NAME / 2);
        let req = request(&name, vec![span(1, 2, None)]);
        assert_eq!(
            decode(Bytes::from(req.encode_to_vec())).unwrap().services,
            vec![name]
        );
        let long = "x".repeat(MAX_SERVICE_NAME + 1);
        let req = request(&long, vec![span(1, 2, None)]);
        let err = decode(Bytes::from(req.encode_to_vec())).unwrap_err();
        assert_eq!(err, DecodeError::ServiceName(MAX_SERVICE_NAME + 1));
        assert!(err.to_string().contains("at most 256"), "{err}");
        let json = serde_json::to_vec(&req).unwrap();
        assert!(matches!(
            decode_json(&json),
            Err(DecodeError::ServiceName(_))
        ));
    }

    #[test]
    fn invalid_ids_reject_only_their_span() {
        let mut bad = span(1, 4, None);
        bad.trace_id = vec![0; 16];
        let mut short = span(1, 5, None);
        short.span_id = vec![1; 3];
        let req = request("fe", vec![span(1, 2, None), bad, short]);
        let b = decode(Bytes::from(req.encode_to_vec())).unwrap();
        assert_eq!(b.spans.len(), 1);
        assert_eq!(b.rejected, 2);
        assert!(b.reject_reason.unwrap().contains("trace id"));
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let bytes = request("fe", vec![span(1, 2, None)]).encode_to_vec();
        for cut in 1..bytes.len() {
            let r = decode(Bytes::copy_from_slice(&bytes[..cut]));
            // Any prefix either fails or decodes to fewer spans; never panics.
            if let Ok(b) = r {
                assert!(b.spans.is_empty());
            }
        }
        assert!(decode(Bytes::from_static(b"\x0a\xff\xff\xff\xff\x0f")).is_err());
        assert!(decode(Bytes::from_static(b"hello world, not protobuf")).is_err());
    }

    #[test]
    fn missing_service_name_is_unknown_service() {
        let mut req = request("fe", vec![span(1, 2, None)]);
        req.resource_spans[0].resource = None;
        let b = decode(Bytes::from(req.encode_to_vec())).unwrap();
        assert_eq!(b.services, vec![UNKNOWN_SERVICE.to_string()]);
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut v = AnyValue {
            value: Some(Value::StringValue("x".into())),
        };
        for _ in 0..40 {
            v = AnyValue {
                value: Some(Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![v] },
                )),
            };
        }
        let mut s = span(1, 2, None);
        s.attributes.push(KeyValue {
            key: "deep".into(),
            value: Some(v),
            ..Default::default()
        });
        let req = request("fe", vec![s]);
        assert_eq!(
            decode(Bytes::from(req.encode_to_vec())).unwrap_err(),
            DecodeError::TooDeep
        );
    }

    #[test]
    fn json_round_trip_and_bad_hex() {
        let req = request("fe", vec![span(0xab, 0xcd, None)]);
        let json = serde_json::to_string(&req).unwrap();
        assert!(
            json.contains("abababab"),
            "ids are hex in OTLP/JSON: {json}"
        );
        let b = decode_json(json.as_bytes()).unwrap();
        assert_eq!(b.spans[0].trace_id, [0xab; 16]);
        let bad = json.replace("abababab", "zzzzzzzz");
        assert!(matches!(
            decode_json(bad.as_bytes()),
            Err(DecodeError::Json(_))
        ));
        let deep = "[".repeat(10_000);
        assert!(decode_json(deep.as_bytes()).is_err());
    }
}
