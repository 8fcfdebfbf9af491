//! Header names, pre-parsed once (a `&str` key is parsed and validated on every lookup).

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `grpc-status`.
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Maps with at most this many values are scanned once for both trace headers; larger ones
/// are looked up by hash.
const SCAN_MAX: usize = 16;

/// The first `traceparent` and the first `tracestate` value of `headers`, as `get` would return
/// them. A small map is scanned once (cheaper than hashing both names); a large one is looked up.
#[inline]
pub(crate) fn trace_headers(headers: &HeaderMap) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
    if headers.len() > SCAN_MAX {
        return (headers.get(&TRACEPARENT), headers.get(&TRACESTATE));
    }
    let (mut parent, mut state) = (None, None);
    for (name, value) in headers {
        // Both are custom (non-standard) names: compare their bytes as two words each instead
        // of calling memcmp through `HeaderName`'s `==`.
        let n = name.as_str().as_bytes();
        if parent.is_none() && eq_10_to_16(n, b"traceparent") {
            parent = Some(value);
        } else if state.is_none() && eq_10_to_16(n, b"tracestate") {
            state = Some(value);
        }
    }
    (parent, state)
}

/// `a == b` for a `b` of 8 to 16 bytes: the first and the last 8 bytes, as words.
#[inline(always)]
fn eq_10_to_16(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8], at: usize| {
        s.get(at..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map(|w| u64::from_ne_bytes(*w))
    };
    a.len() == b.len()
        && b.len() >= 8
        && word(a, 0) == word(b, 0)
        && word(a, a.len() - 8) == word(b, b.len() - 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_compare_matches_slice_eq() {
        for a in [
            "traceparent",
            "tracestate",
            "traceparenx",
            "xraceparent",
            "tracestat",
            "",
            "a",
        ] {
            for b in ["traceparent", "tracestate"] {
                assert_eq!(eq_10_to_16(a.as_bytes(), b.as_bytes()), a == b, "{a} {b}");
            }
        }
    }

    #[test]
    fn scan_matches_get() {
        for extra in [0usize, 3, SCAN_MAX + 2] {
            let mut h = HeaderMap::new();
            for i in 0..extra {
                h.insert(
                    HeaderName::try_from(format!("x-h{i}")).unwrap(),
                    HeaderValue::from_static("v"),
                );
            }
            assert_eq!(trace_headers(&h), (None, None));
            h.append(&TRACESTATE, HeaderValue::from_static("a=1"));
            h.append(&TRACEPARENT, HeaderValue::from_static("p1"));
            h.append(&TRACEPARENT, HeaderValue::from_static("p2"));
            h.append(&TRACESTATE, HeaderValue::from_static("b=2"));
            let (p, s) = trace_headers(&h);
            assert_eq!(p, h.get(&TRACEPARENT));
            assert_eq!(s, h.get(&TRACESTATE));
            assert_eq!(p.unwrap(), "p1");
            assert_eq!(s.unwrap(), "a=1");
        }
    }
}
