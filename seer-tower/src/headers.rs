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
        if parent.is_none() && *name == TRACEPARENT {
            parent = Some(value);
        } else if state.is_none() && *name == TRACESTATE {
            state = Some(value);
        }
    }
    (parent, state)
}

#[cfg(test)]
mod tests {
    use super::*;

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
