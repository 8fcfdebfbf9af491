//! W3C Trace Context: `traceparent` parsing and formatting without allocation.
//!
//! A malformed header never fails a request: [`parse_traceparent`] returns `None` and the
//! caller starts a new trace. `tracestate` is opaque to Seer; the server and client layers carry
//! it through unchanged.

use crate::id::{SpanId, TraceId};

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";
/// Length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

/// The W3C `sampled` trace flag.
pub const FLAG_SAMPLED: u8 = 0x01;

/// The identity of one span as it travels between processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SpanContext {
    /// Trace id shared by every span of the trace.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    /// Whether this context came from another process.
    pub is_remote: bool,
}

impl SpanContext {
    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// Whether both ids are valid.
    pub fn is_valid(&self) -> bool {
        self.trace_id.is_valid() && self.span_id.is_valid()
    }

    /// Formats this context as a version-00 `traceparent` value into a fixed buffer.
    pub fn to_traceparent(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        hex_into(&self.trace_id.0.to_be_bytes(), &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id.0.to_be_bytes(), &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// Eight ASCII bytes (big-endian: the first character most significant) as their hex value
/// (in the low 32 bits) and a validity mask (0 iff all eight are lower-case hex digits): SWAR,
/// no branch or table lookup per digit.
///
/// Each byte's nibble is its low four bits, plus 9 if bit 6 is set (a letter). A byte is a valid
/// digit iff that nibble is at most 15 and encodes back to the byte (`'0' + n`, or `'a' + n - 10`
/// above 9): the encoding maps 0..=15 onto exactly the 16 valid characters. Every per-byte sum
/// below stays under 0x100, so no carry crosses into the next byte; a nibble is at most 24, so
/// it is above 15 iff its bit 4 is set.
#[inline(always)]
fn hex8(w: u64) -> (u64, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let letter = (w >> 6) & ONES;
    let n = (w & (0x0f * ONES)) + letter * 9; // each byte <= 24
    let above9 = ((n + 0x76 * ONES) >> 7) & ONES;
    let encoded = n + 0x30 * ONES + above9 * 39; // 39 = 'a' - '0' - 10
    let bad = (encoded ^ w) | (n & (0x10 * ONES));
    let mut v = n;
    v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    (v, bad)
}

/// Sixteen ASCII bytes, `lo` the first eight and `hi` the next eight (each little-endian, as
/// loaded), as their hex value and whether all sixteen are lower-case hex digits: two
/// [`hex8`] words. (SSE2 would do all sixteen at once, but its intrinsics need `unsafe` here.)
#[inline(always)]
fn hex16(lo: u64, hi: u64) -> (u64, bool) {
    let (a, bad_a) = hex8(lo.swap_bytes());
    let (b, bad_b) = hex8(hi.swap_bytes());
    ((a << 32) | b, bad_a | bad_b == 0)
}

/// The eight bytes of `h` at `at..at + 8` as a little-endian word (`at` is a constant at every
/// call, so the bounds are checked at compile time).
#[inline(always)]
fn word_le(h: &[u8; TRACEPARENT_LEN], at: usize) -> u64 {
    h.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Parses a `traceparent` header value. Returns `None` for anything malformed: wrong length or
/// separators, non-lower-hex digits, version `ff`, all-zero ids, or a version-00 value with
/// trailing data. Higher versions are parsed by their version-00 prefix, as the spec asks.
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    let h: &[u8; TRACEPARENT_LEN] = value.get(..TRACEPARENT_LEN)?.try_into().ok()?;
    if h[2] != b'-' || h[35] != b'-' || h[52] != b'-' {
        return None;
    }
    let (trace_hi, ok_a) = hex16(word_le(h, 3), word_le(h, 11));
    let (trace_lo, ok_b) = hex16(word_le(h, 19), word_le(h, 27));
    let (span, ok_c) = hex16(word_le(h, 36), word_le(h, 44));
    // Version and flags in one word: "0000vvff".
    let (vf, bad) = hex8(u64::from_be_bytes([
        b'0', b'0', b'0', b'0', h[0], h[1], h[53], h[54],
    ]));
    if !(ok_a & ok_b & ok_c) || bad != 0 {
        return None;
    }
    let version = vf >> 8;
    let rest = &value[TRACEPARENT_LEN..];
    if version == 0xff
        || (version == 0 && !rest.is_empty())
        || rest.first().is_some_and(|&c| c != b'-')
    {
        return None;
    }
    let trace = (u128::from(trace_hi) << 64) | u128::from(trace_lo);
    if trace == 0 || span == 0 {
        return None;
    }
    Some(SpanContext {
        trace_id: TraceId(trace),
        span_id: SpanId(span),
        flags: vf as u8,
        is_remote: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Reference decoder: one digit at a time; `None` unless all are lower-case hex.
    fn hex_ref(s: &[u8]) -> Option<u64> {
        s.iter().try_fold(0u64, |v, &c| {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return None,
            };
            Some((v << 4) | u64::from(d))
        })
    }

    fn hex8_checked(s: &[u8]) -> Option<u64> {
        let (v, bad) = hex8(u64::from_be_bytes(s.try_into().unwrap()));
        (bad == 0).then_some(v)
    }

    #[test]
    fn parses_the_spec_example() {
        let c = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert_eq!(c.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id.to_string(), "00f067aa0ba902b7");
        assert!(c.is_sampled());
        assert!(c.is_remote);
        assert_eq!(&c.to_traceparent()[..], GOOD.as_bytes());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    fn hex16_checked(s: &[u8]) -> Option<u64> {
        let lo = u64::from_le_bytes(s[..8].try_into().unwrap());
        let hi = u64::from_le_bytes(s[8..].try_into().unwrap());
        let (v, ok) = hex16(lo, hi);
        ok.then_some(v)
    }

    #[test]
    fn hex16_agrees_on_every_byte() {
        for c in 0..=255u8 {
            for pos in 0..16 {
                let mut s = *b"0a1b2c3d4e5f6789";
                s[pos] = c;
                assert_eq!(hex16_checked(&s), hex_ref(&s), "byte {c:#x} at {pos}");
            }
        }
    }

    #[test]
    fn swar_hex_agrees_on_every_byte() {
        for c in 0..=255u8 {
            for pos in 0..8 {
                let mut s = *b"0a1b2c3d";
                s[pos] = c;
                assert_eq!(hex8_checked(&s), hex_ref(&s), "byte {c:#x} at {pos}");
            }
        }
    }

    #[test]
    fn future_versions_parse_by_prefix() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(parse_traceparent(v.as_bytes()).is_some());
    }

    proptest! {
        #[test]
        fn swar_hex_matches_the_reference(bytes in proptest::collection::vec(
            prop_oneof![Just(b'0'), Just(b'9'), Just(b'a'), Just(b'f'), Just(b'g'), Just(b'A'),
                        Just(b'`'), Just(b'/'), Just(b':'), Just(b'F'), any::<u8>()], 8)) {
            prop_assert_eq!(hex8_checked(&bytes), hex_ref(&bytes));
        }

        #[test]
        fn hex16_matches_the_reference(bytes in proptest::collection::vec(
            prop_oneof![Just(b'0'), Just(b'9'), Just(b'a'), Just(b'f'), Just(b'g'), Just(b'A'),
                        Just(b'`'), Just(b'/'), Just(b':'), Just(b'F'), any::<u8>()], 16)) {
            prop_assert_eq!(hex16_checked(&bytes), hex_ref(&bytes));
        }

        #[test]
        fn hex16_decodes_valid_digits(v in any::<u64>()) {
            let s = format!("{v:016x}");
            prop_assert_eq!(hex16_checked(s.as_bytes()), Some(v));
        }

        #[test]
        fn swar_hex_decodes_valid_digits(v in any::<u32>()) {
            let s = format!("{v:08x}");
            prop_assert_eq!(hex8_checked(s.as_bytes()), Some(u64::from(v)));
        }

        #[test]
        fn round_trips(t in 1u128.., s in 1u64.., f in any::<u8>()) {
            let c = SpanContext { trace_id: TraceId(t), span_id: SpanId(s), flags: f, is_remote: true };
            prop_assert_eq!(parse_traceparent(&c.to_traceparent()), Some(c));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_traceparent(&bytes);
        }
    }
}
