//! Interned names with a cardinality cap: a lookup hashes and compares bytes, never allocates.
//!
//! Names are `"{method} {route}"` pairs (or a bare name with an empty method). Lookups are
//! lock-free: the table is fixed-size open addressing published with release/acquire. The first
//! sighting of a name takes a mutex and allocates once. Once `cap` names exist, every new name
//! maps to the overflow id, named `other`, without taking the mutex (a "full" flag is checked
//! first), so unbounded names past the cap stay lock-free.

use std::sync::{Arc, Mutex, OnceLock};

use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The name of the overflow entry.
pub const OVERFLOW_NAME: &str = "other";

#[derive(Debug)]
struct Slot {
    hash: AtomicU64,
    id: AtomicU32,
}

#[derive(Debug)]
pub(crate) struct Interner {
    slots: Box<[Slot]>,
    mask: usize,
    names: Box<[OnceLock<Arc<str>>]>,
    len: Mutex<usize>,
    /// Set (release) once `cap` names exist, after the last one's slot was published.
    full: AtomicBool,
    cap: usize,
}

/// Up to 8 bytes as a word, without a loop: two overlapping 4-byte reads from 4 bytes on, else
/// the first, middle and last byte. Together with the length it identifies the bytes.
#[inline(always)]
fn small_word(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 4 {
        let lo = b.first_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c));
        let hi = b.last_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c));
        (u64::from(hi) << 32) | u64::from(lo)
    } else if n > 0 {
        (u64::from(b[0]) << 16) | (u64::from(b[n / 2]) << 8) | u64::from(b[n - 1])
    } else {
        0
    }
}

/// The 8 bytes of `b` from `at` as a little-endian word (0 if out of range).
#[inline(always)]
fn word_at(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |c| u64::from_le_bytes(*c))
}

#[inline(always)]
fn step(h: u64, w: u64) -> u64 {
    (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Hashes `b` a word at a time (the tail as one overlapping word), its length included.
#[inline(always)]
fn mix(mut h: u64, b: &[u8]) -> u64 {
    let n = b.len();
    if n <= 8 {
        return step(step(h, small_word(b)), n as u64);
    }
    let mut at = 0;
    while at + 8 < n {
        h = step(h, word_at(b, at));
        at += 8;
    }
    step(step(h, word_at(b, n - 8)), n as u64)
}

#[inline]
fn hash(method: &str, name: &str) -> u64 {
    // FxHash-style words over both parts (lengths included, so the split is part of the key),
    // then the high bits folded down, since the table is indexed by the low bits. Forced odd so
    // that 0 marks an empty slot.
    let h = mix(mix(0, method.as_bytes()), name.as_bytes());
    (h ^ (h >> 29)) | 1
}

/// `a == b`, without a `memcmp` call for the short strings of endpoint names.
#[inline(always)]
fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n <= 8 {
        small_word(a) == small_word(b)
    } else if n <= 16 {
        word_at(a, 0) == word_at(b, 0) && word_at(a, n - 8) == word_at(b, n - 8)
    } else {
        a == b
    }
}

#[inline]
fn matches(stored: &str, method: &str, name: &str) -> bool {
    if method.is_empty() {
        return eq_bytes(stored.as_bytes(), name.as_bytes());
    }
    let s = stored.as_bytes();
    let m = method.len();
    s.len() == m + 1 + name.len()
        && s[m] == b' '
        && eq_bytes(&s[..m], method.as_bytes())
        && eq_bytes(&s[m + 1..], name.as_bytes())
}

impl Interner {
    /// A table for up to `cap` names plus the overflow entry (id `cap`).
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        let size = (cap * 2).next_power_of_two();
        let slots = (0..size)
            .map(|_| Slot {
                hash: AtomicU64::new(0),
                id: AtomicU32::new(0),
            })
            .collect();
        let names: Box<[OnceLock<Arc<str>>]> = (0..=cap).map(|_| OnceLock::new()).collect();
        let _ = names[cap].set(Arc::from(OVERFLOW_NAME));
        Self {
            slots,
            mask: size - 1,
            names,
            len: Mutex::new(0),
            full: AtomicBool::new(false),
            cap,
        }
    }

    /// The id of the overflow entry.
    pub(crate) fn overflow_id(&self) -> u32 {
        u32::try_from(self.cap).unwrap_or(u32::MAX)
    }

    /// Number of ids (including overflow): valid ids are `0..capacity()`.
    pub(crate) fn capacity(&self) -> usize {
        self.cap + 1
    }

    /// The id for `method` + `name`, interning it on first sight.
    #[inline]
    pub(crate) fn intern(&self, method: &str, name: &str) -> u32 {
        let h = hash(method, name);
        match self.probe(h, method, name) {
            Ok(id) => id,
            Err(_) => self.miss(h, method, name),
        }
    }

    /// Looks `method` + `name` up: `Ok(id)`, or `Err(index)` of the empty slot that ends its
    /// probe sequence. The table has at least twice as many slots as names, so one exists.
    #[inline]
    fn probe(&self, h: u64, method: &str, name: &str) -> Result<u32, usize> {
        let mut i = (h as usize) & self.mask;
        loop {
            let slot = &self.slots[i];
            let sh = slot.hash.load(Ordering::Acquire);
            if sh == 0 {
                return Err(i);
            }
            if sh == h {
                let id = slot.id.load(Ordering::Relaxed);
                if let Some(stored) = self.names.get(id as usize).and_then(OnceLock::get)
                    && matches(stored, method, name)
                {
                    return Ok(id);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// A name not found: the overflow id once the table is full (no lock), else insert it.
    #[cold]
    fn miss(&self, h: u64, method: &str, name: &str) -> u32 {
        // `full` is stored (release) after the last name's slot, and no name is inserted after
        // it: a probe made after seeing it (acquire) sees every name, so a name inserted while
        // the first probe ran is still found.
        if self.full.load(Ordering::Acquire) {
            return self
                .probe(h, method, name)
                .unwrap_or_else(|_| self.overflow_id());
        }
        self.insert_slow(h, method, name)
    }

    #[cold]
    fn insert_slow(&self, h: u64, method: &str, name: &str) -> u32 {
        let mut len = match self.len.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Re-probe under the lock: another thread may have inserted it.
        let i = match self.probe(h, method, name) {
            Ok(id) => return id,
            Err(i) => i,
        };
        if *len >= self.cap {
            return self.overflow_id();
        }
        let id = *len;
        *len += 1;
        let full: Arc<str> = if method.is_empty() {
            Arc::from(name)
        } else {
            let mut s = String::with_capacity(method.len() + 1 + name.len());
            s.push_str(method);
            s.push(' ');
            s.push_str(name);
            Arc::from(s)
        };
        let _ = self.names[id].set(full);
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        self.slots[i].id.store(id, Ordering::Relaxed);
        self.slots[i].hash.store(h, Ordering::Release);
        if *len >= self.cap {
            // After the slot: see `miss`.
            self.full.store(true, Ordering::Release);
        }
        id
    }

    /// The name of `id` (the overflow name for unknown ids).
    pub(crate) fn name(&self, id: u32) -> Arc<str> {
        self.names
            .get(id as usize)
            .and_then(OnceLock::get)
            .cloned()
            .unwrap_or_else(|| Arc::from(OVERFLOW_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_caps() {
        let t = Interner::new(3);
        let a = t.intern("GET", "/a");
        assert_eq!(t.intern("GET", "/a"), a);
        assert_eq!(&*t.name(a), "GET /a");
        let b = t.intern("POST", "/a");
        assert_ne!(a, b);
        let c = t.intern("", "work");
        assert_eq!(&*t.name(c), "work");
        assert_eq!(t.intern("GET", "/d"), t.overflow_id());
        assert_eq!(t.intern("GET", "/e"), t.overflow_id());
        assert_eq!(&*t.name(t.overflow_id()), OVERFLOW_NAME);
        // "GET /a" as a bare name is a different key from method GET + "/a" only by hash
        // input; it must not alias a different stored name.
        assert_eq!(t.intern("GET", "/a"), a);
    }

    #[test]
    fn past_the_cap_unseen_names_overflow_and_known_names_resolve() {
        let t = Interner::new(2);
        let a = t.intern("GET", "/a");
        assert!(!t.full.load(Ordering::Relaxed));
        let b = t.intern("GET", "/b");
        // The cap is reached: later misses take the lock-free path.
        assert!(t.full.load(Ordering::Relaxed));
        // With the insertion lock held, lookups still answer: they never take it (taking it on
        // this thread would deadlock).
        let held = t.len.lock().unwrap();
        for i in 0..100 {
            assert_eq!(t.intern("GET", &format!("/u{i}")), t.overflow_id());
        }
        assert_eq!(t.intern("GET", "/a"), a);
        assert_eq!(t.intern("GET", "/b"), b);
        assert_eq!(*held, 2);
        drop(held);
        assert_eq!(&*t.name(b), "GET /b");
    }

    #[test]
    fn short_compare_matches_slice_eq() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "/users/{id}",
            "/users/{ie}",
            "xbc",
            "abx",
        ];
        for a in words {
            for b in words {
                assert_eq!(eq_bytes(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
                let mut c = a.as_bytes().to_vec();
                for i in 0..c.len() {
                    c[i] ^= 1;
                    assert!(!eq_bytes(a.as_bytes(), &c));
                    c[i] ^= 1;
                }
            }
        }
    }

    #[test]
    fn split_is_part_of_the_key() {
        let t = Interner::new(8);
        let a = t.intern("GET", "/a");
        let b = t.intern("GE", "T /a");
        let c = t.intern("", "GET /a");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(&*t.name(a), "GET /a");
        assert_eq!(t.intern("GET", "/a"), a);
    }

    #[test]
    fn concurrent_interning_agrees() {
        let t = Arc::new(Interner::new(64));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    (0..32)
                        .map(|i| t.intern("GET", &format!("/p{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
    }
}
