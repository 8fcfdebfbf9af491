//! Reading request bodies under a size limit and a memory budget, with gzip.
//!
//! The limit applies to the decompressed size, so a gzip bomb stops at `limit + 1` bytes of
//! output; every byte read or inflated is reserved against the shared [`Budget`](super::budget::Budget) first.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;

use super::budget::Reservation;
use super::error::IngestError;

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No content coding.
    Identity,
    /// gzip.
    Gzip,
}

/// Reads `Content-Encoding`.
///
/// # Errors
///
/// [`IngestError::UnsupportedEncoding`] for anything but gzip and identity.
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    match headers
        .get(http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => Ok(Encoding::Identity),
        Some("gzip" | "x-gzip") => Ok(Encoding::Gzip),
        Some(_) => Err(IngestError::UnsupportedEncoding),
    }
}

/// Reads the raw body: at most `limit` bytes, each reserved in `res` first.
///
/// # Errors
///
/// [`IngestError::TooLarge`] past the limit (also when `Content-Length` says so up front),
/// [`IngestError::Overloaded`] when the budget is spent, [`IngestError::Body`] on a transport
/// error.
pub async fn read_raw(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    res: &mut Reservation,
) -> Result<Bytes, IngestError> {
    let mut body = body;
    match read_limited(headers, &mut body, limit, res).await {
        Ok(b) => Ok(b),
        Err(e @ (IngestError::TooLarge | IngestError::Overloaded)) => {
            // Read (and discard) the rest, so the client gets to read our status instead of a
            // reset connection; bounded in bytes and time.
            drain(&mut body).await;
            res.shrink_to(0);
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Most bytes (and time) spent discarding a refused body.
const DRAIN_MAX: usize = 64 << 20;

async fn drain(body: &mut axum::body::Body) {
    let fut = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                seen += d.len();
                if seen > DRAIN_MAX {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), fut).await;
}

async fn read_limited(
    headers: &HeaderMap,
    body: &mut axum::body::Body,
    limit: usize,
    res: &mut Reservation,
) -> Result<Bytes, IngestError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge);
    }
    if let Some(n) = declared
        && !res.grow(n)
    {
        return Err(IngestError::Overloaded);
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8 << 10).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| IngestError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let next = buf.len() + data.len();
            if next > limit {
                return Err(IngestError::TooLarge);
            }
            if next > res.bytes() && !res.grow(next - res.bytes()) {
                return Err(IngestError::Overloaded);
            }
            buf.extend_from_slice(&data);
        }
    }
    res.shrink_to(buf.len().max(1));
    Ok(buf.freeze())
}

/// Inflates a gzip body: at most `limit` bytes of output, each reserved in `res` first. The
/// compressed input stays reserved until the caller drops it.
///
/// # Errors
///
/// [`IngestError::TooLarge`] when the output passes the limit, [`IngestError::Overloaded`]
/// when the budget is spent, [`IngestError::BadGzip`] for a corrupt stream.
pub fn gunzip(input: &[u8], limit: usize, res: &mut Reservation) -> Result<Bytes, IngestError> {
    let mut dec = flate2::read::MultiGzDecoder::new(input);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match dec.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(IngestError::BadGzip),
        };
        if out.len() + n > limit {
            return Err(IngestError::TooLarge);
        }
        if !res.grow(n) {
            return Err(IngestError::Overloaded);
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::budget::Budget;
    use crate::internal_events::Metrics;
    use std::io::Write;
    use std::sync::Arc;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let bomb = gz(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 << 10);
        let budget = Budget::new(1 << 30, Arc::new(Metrics::new()));
        let mut res = budget.reserve_empty();
        assert!(matches!(
            gunzip(&bomb, 1 << 20, &mut res),
            Err(IngestError::TooLarge)
        ));
        assert!(res.bytes() <= (1 << 20) + (64 << 10));
    }

    #[test]
    fn gzip_round_trip_and_corrupt_input() {
        let budget = Budget::new(1 << 30, Arc::new(Metrics::new()));
        let mut res = budget.reserve_empty();
        let out = gunzip(&gz(b"hello"), 100, &mut res).unwrap();
        assert_eq!(&out[..], b"hello");
        assert!(matches!(
            gunzip(b"\x1f\x8bnot gzip at all", 100, &mut res),
            Err(IngestError::BadGzip)
        ));
    }

    #[test]
    fn budget_exhaustion_is_overload() {
        let budget = Budget::new(10, Arc::new(Metrics::new()));
        let mut res = budget.reserve_empty();
        assert!(matches!(
            gunzip(&gz(&[1u8; 1000]), 10_000, &mut res),
            Err(IngestError::Overloaded)
        ));
    }
}
