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

/// Value of each lower-case hex digit; 0xff for anything else (upper case is invalid here).
const UNHEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Parses up to 16 hex digits without branching per digit; `None` if any is not lower hex.
#[inline]
fn parse_hex_u64(s: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut bad: u8 = 0;
    for &c in s {
        let d = UNHEX[usize::from(c)];
        bad |= d;
        v = (v << 4) | u64::from(d & 0xf);
    }
    (bad & 0xf0 == 0).then_some(v)
}

/// Eight ASCII bytes (big-endian: first character most significant) as their hex value, with a
/// validity check: SWAR, no branches per digit.
#[inline]
fn hex8(w: u64) -> (u32, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let is_letter = (w & (0x40 * ONES)) >> 6; // 1 per byte whose bit 6 is set
    let lo = w & (0x0f * ONES);
    let val = lo + is_letter * 9; // per byte: 0..=24, valid ones 0..=15
    // Digits must be 0x30..=0x39, letters 0x61..=0x66.
    let bad_hi = (w & (0xf0 * ONES)) ^ (0x30 * ONES + is_letter * 0x30);
    let bad_range = (val + (ONES - is_letter) * 6) & (0x10 * ONES);
    let lo_zero = !(lo + 0x0f * ONES) & (0x10 * ONES);
    let bad_letter_zero = (lo_zero >> 4) & is_letter;
    let bad = bad_hi | bad_range | bad_letter_zero;
    let mut v = val;
    v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    (v as u32, bad)
}

/// Sixteen lower-case hex digits as a u64.
#[inline]
fn hex16(s: &[u8]) -> Option<u64> {
    let (a, b) = s.split_at_checked(8)?;
    let a = u64::from_be_bytes(a.try_into().ok()?);
    let b = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let (ha, bad_a) = hex8(a);
    let (hb, bad_b) = hex8(b);
    ((bad_a | bad_b) == 0).then_some((u64::from(ha) << 32) | u64::from(hb))
}

/// Parses a `traceparent` header value. Returns `None` for anything malformed: wrong length or
/// separators, non-lower-hex digits, version `ff`, all-zero ids, or a version-00 value with
/// trailing data. Higher versions are parsed by their version-00 prefix, as the spec asks.
pub fn parse_traceparent(value: &[u8]) -> Option<SpanContext> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = parse_hex_u64(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != TRACEPARENT_LEN) {
        return None;
    }
    if version > 0 && value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let hi = hex16(&value[3..19])?;
    let lo = hex16(&value[19..35])?;
    let span = hex16(&value[36..52])?;
    let flags = u8::try_from(parse_hex_u64(&value[53..55])?).ok()?;
    let ctx = SpanContext {
        trace_id: TraceId((u128::from(hi) << 64) | u128::from(lo)),
        span_id: SpanId(span),
        flags,
        is_remote: true,
    };
    ctx.is_valid().then_some(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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

    #[test]
    fn future_versions_parse_by_prefix() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        assert!(parse_traceparent(v.as_bytes()).is_some());
    }

    proptest! {
        #[test]
        fn swar_hex_matches_the_table(bytes in proptest::collection::vec(
            prop_oneof![Just(b'0'), Just(b'9'), Just(b'a'), Just(b'f'), Just(b'g'), Just(b'A'),
                        Just(b'`'), Just(b'/'), Just(b':'), Just(b'F'), any::<u8>()], 16)) {
            prop_assert_eq!(hex16(&bytes), parse_hex_u64(&bytes));
        }

        #[test]
        fn swar_hex_decodes_valid_digits(v in any::<u64>()) {
            let s = format!("{v:016x}");
            prop_assert_eq!(hex16(s.as_bytes()), Some(v));
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
