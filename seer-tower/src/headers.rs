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

/// Most list members a `tracestate` may carry (W3C Trace Context).
const TRACESTATE_MAX_MEMBERS: usize = 32;
/// Longest combined `tracestate` propagated, bytes; beyond it whole members are dropped from the
/// end (W3C Trace Context: vendors propagate at least 512 characters).
const TRACESTATE_MAX_LEN: usize = 512;

/// The request's `tracestate`: every `tracestate` field combined into one list, as W3C Trace
/// Context requires (fields are joined with `,`, like any list header). A single field within the
/// limits is returned as is (no allocation); otherwise the list is rebuilt with empty members
/// dropped, at most [`TRACESTATE_MAX_MEMBERS`] members, and whole members dropped from the end
/// so that it fits in [`TRACESTATE_MAX_LEN`] bytes. `None` when nothing is left.
pub(crate) fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(&TRACESTATE).iter();
    let first = values.next()?;
    let more = values.next().is_some();
    if !more && within_limits(first.as_bytes()) {
        return Some(first.clone());
    }
    let mut out: Vec<u8> = Vec::with_capacity(TRACESTATE_MAX_LEN);
    let mut members = 0;
    let all = headers.get_all(&TRACESTATE).iter();
    'fields: for v in all {
        for m in v.as_bytes().split(|&b| b == b',') {
            let m = m.trim_ascii();
            if m.is_empty() {
                continue;
            }
            let sep = usize::from(!out.is_empty());
            if members == TRACESTATE_MAX_MEMBERS || out.len() + sep + m.len() > TRACESTATE_MAX_LEN {
                break 'fields;
            }
            if sep == 1 {
                out.push(b',');
            }
            out.extend_from_slice(m);
            members += 1;
        }
    }
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&out).ok()
}

/// Whether one `tracestate` field needs no rebuilding: within the length limit, at most the
/// member limit of members, and no empty member.
fn within_limits(v: &[u8]) -> bool {
    v.len() <= TRACESTATE_MAX_LEN
        && v.split(|&b| b == b',').count() <= TRACESTATE_MAX_MEMBERS
        && v.split(|&b| b == b',').all(|m| !m.trim_ascii().is_empty())
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

    fn ts(h: &HeaderMap) -> Option<String> {
        tracestate(h).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn tracestate_fields_are_combined_within_the_limits() {
        let mut h = HeaderMap::new();
        assert_eq!(ts(&h), None);
        h.append(&TRACESTATE, HeaderValue::from_static("a=1"));
        assert_eq!(ts(&h).as_deref(), Some("a=1"));
        h.append(&TRACESTATE, HeaderValue::from_static("b=2 , ,c=3"));
        h.append(&TRACEPARENT, HeaderValue::from_static("p"));
        h.append(&TRACESTATE, HeaderValue::from_static(""));
        h.append(&TRACESTATE, HeaderValue::from_static("d=4"));
        assert_eq!(ts(&h).as_deref(), Some("a=1,b=2,c=3,d=4"));

        // Only empty members: nothing to propagate.
        let mut h = HeaderMap::new();
        h.append(&TRACESTATE, HeaderValue::from_static(" , "));
        assert_eq!(ts(&h), None);

        // More than 32 members over two fields: the first 32 are kept.
        let mut h = HeaderMap::new();
        let list =
            |r: std::ops::Range<usize>| r.map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        h.append(&TRACESTATE, HeaderValue::try_from(list(0..20)).unwrap());
        h.append(&TRACESTATE, HeaderValue::try_from(list(20..40)).unwrap());
        assert_eq!(ts(&h), Some(list(0..32)));
        // In one field too.
        let mut h = HeaderMap::new();
        h.append(&TRACESTATE, HeaderValue::try_from(list(0..40)).unwrap());
        assert_eq!(ts(&h), Some(list(0..32)));

        // Over 512 bytes: whole members dropped from the end.
        let big = |c: char| format!("{c}={}", "x".repeat(198)); // 200 bytes
        let mut h = HeaderMap::new();
        h.append(&TRACESTATE, HeaderValue::try_from(big('a')).unwrap());
        h.append(&TRACESTATE, HeaderValue::try_from(big('b')).unwrap());
        h.append(&TRACESTATE, HeaderValue::try_from(big('c')).unwrap());
        let got = ts(&h).unwrap();
        assert_eq!(got, format!("{},{}", big('a'), big('b')));
        assert!(got.len() <= TRACESTATE_MAX_LEN);
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
