//! Reading request bodies under a size limit and a memory budget, with gzip.
//!
//! The limit applies to the decompressed size, so a gzip bomb stops at `limit + 1` bytes of
//! output; every byte read or inflated is reserved against the shared [`Budget`](super::budget::Budget) first.
//!
//! A body is reserved as it arrives, not as it is declared: `Content-Length` reserves at most
//! [`INITIAL_RESERVATION`] up front, and the buffer (with its reservation) grows geometrically
//! up to the declared length as bytes come in. A client that declares a large body and stalls
//! therefore holds little of the budget, and only until the read deadline.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
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

/// Most of a declared `Content-Length` reserved before any byte of the body arrived.
pub const INITIAL_RESERVATION: usize = 1 << 20;

/// Reads the raw body: at most `limit` bytes, each reserved in `res` first, all of it within
/// `deadline`.
///
/// # Errors
///
/// [`IngestError::TooLarge`] past the limit (also when `Content-Length` says so up front),
/// [`IngestError::Overloaded`] when the budget is spent, [`IngestError::Timeout`] when the body
/// is not complete within `deadline` (its reservation is released), [`IngestError::Body`] on a
/// transport error.
pub async fn read_raw(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    deadline: Duration,
    res: &mut Reservation,
) -> Result<Bytes, IngestError> {
    let mut body = body;
    let read = tokio::time::timeout(deadline, read_limited(headers, &mut body, limit, res)).await;
    let Ok(read) = read else {
        // The client is too slow: answer (hyper closes the connection, the body unread) and
        // give the budget back now.
        res.shrink_to(0);
        return Err(IngestError::Timeout(deadline));
    };
    match read {
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
    // The buffer's capacity is what is reserved; it grows (doubling, at most to the declared
    // length or the limit) only as bytes arrive.
    let first = declared.map_or(8 << 10, |n| n.min(INITIAL_RESERVATION));
    if !res.grow(first.saturating_sub(res.bytes())) {
        return Err(IngestError::Overloaded);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(first);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| IngestError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let next = buf.len() + data.len();
            if next > limit {
                return Err(IngestError::TooLarge);
            }
            if next > buf.capacity() {
                let ceiling = declared.filter(|n| *n >= next).unwrap_or(limit);
                let cap = next.max(buf.capacity().saturating_mul(2)).min(ceiling);
                if cap > res.bytes() && !res.grow(cap - res.bytes()) {
                    return Err(IngestError::Overloaded);
                }
                buf.reserve_exact(cap - buf.len());
            }
            buf.extend_from_slice(&data);
        }
    }
    res.shrink_to(buf.len().max(1));
    Ok(Bytes::from(buf))
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
pub(crate) mod tests {
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

    /// A body that sends `first` and then nothing, never ending.
    pub(crate) struct Stall(pub(crate) Option<Bytes>);

    impl hyper::body::Body for Stall {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
                None => std::task::Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_stalled_body_reserves_what_arrived_and_times_out() {
        // A 2 MiB budget; the client declares 64 MiB, sends 10 bytes and stalls.
        let budget = Budget::new(2 << 20, Arc::new(Metrics::new()));
        let mut res = budget.reserve_empty();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, (64u64 << 20).into());
        let body = axum::body::Body::new(Stall(Some(Bytes::from_static(&[0u8; 10]))));
        let read = read_raw(
            &headers,
            body,
            64 << 20,
            std::time::Duration::from_millis(50),
            &mut res,
        );
        let err = read.await.unwrap_err();
        assert!(matches!(err, IngestError::Timeout(_)), "{err}");
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(res.bytes(), 0);
        assert_eq!(budget.used(), 0);
        // A complete body grows its reservation past the first MiB as it arrives.
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, (3u64 << 19).into());
        let data = Bytes::from(vec![7u8; 3 << 19]);
        let got = read_raw(
            &headers,
            axum::body::Body::from(data.clone()),
            64 << 20,
            std::time::Duration::from_secs(30),
            &mut res,
        )
        .await
        .unwrap();
        assert_eq!(got, data);
        assert_eq!(res.bytes(), 3 << 19);
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
