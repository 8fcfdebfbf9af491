//! Trace and span ids, generated from a per-thread wyrand generator (no locks, no syscalls).

use std::cell::Cell;
use std::fmt;

/// A W3C trace id (16 bytes). All-zero is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub u128);

/// A W3C span id (8 bytes). All-zero is invalid (and means "no parent").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub u64);

impl TraceId {
    /// The invalid all-zero id.
    pub const INVALID: TraceId = TraceId(0);

    /// A fresh random, valid id.
    #[inline]
    pub fn random() -> Self {
        loop {
            let v = (u128::from(next_u64()) << 64) | u128::from(next_u64());
            if v != 0 {
                return TraceId(v);
            }
        }
    }

    /// Big-endian bytes, as on the wire.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Whether this id is not all zeros.
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl SpanId {
    /// The invalid all-zero id.
    pub const INVALID: SpanId = SpanId(0);

    /// A fresh random, valid id.
    #[inline]
    pub fn random() -> Self {
        loop {
            let v = next_u64();
            if v != 0 {
                return SpanId(v);
            }
        }
    }

    /// Big-endian bytes, as on the wire.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Whether this id is not all zeros.
    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

thread_local! {
    // Const-initialised (no lazy-init check per access); 0 means "not seeded yet".
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A random non-zero seed for a thread's generator.
#[cold]
fn seed() -> u64 {
    rand::random::<u64>() | 1
}

/// Next value of the per-thread wyrand generator.
#[inline]
pub(crate) fn next_u64() -> u64 {
    RNG.with(|s| {
        let mut state = s.get();
        if state == 0 {
            state = seed();
        }
        let x = state.wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_distinct() {
        let a = TraceId::random();
        let b = TraceId::random();
        assert!(a.is_valid() && b.is_valid());
        assert_ne!(a, b);
        assert_ne!(SpanId::random(), SpanId::random());
    }
}
