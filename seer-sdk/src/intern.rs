//! Interned names with a cardinality cap: a lookup hashes and compares bytes, never allocates.
//!
//! Names are `"{method} {route}"` pairs (or a bare name with an empty method). Lookups are
//! lock-free: the table is fixed-size open addressing published with release/acquire. The first
//! sighting of a name takes a mutex and allocates once. Once `cap` names exist, every new name
//! maps to the overflow id, named `other`.

use std::sync::{Arc, Mutex, OnceLock};

use crate::sync::{AtomicU32, AtomicU64, Ordering};

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
    cap: usize,
}

#[inline]
fn hash(method: &str, name: &str) -> u64 {
    // FxHash over both parts with a separator; the result is forced odd so 0 marks an empty slot.
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0;
    let mut mix = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    };
    mix(method.as_bytes());
    mix(&[0xff]);
    mix(name.as_bytes());
    h | 1
}

#[inline]
fn matches(stored: &str, method: &str, name: &str) -> bool {
    if method.is_empty() {
        return stored == name;
    }
    let s = stored.as_bytes();
    s.len() == method.len() + 1 + name.len()
        && &s[..method.len()] == method.as_bytes()
        && s[method.len()] == b' '
        && &s[method.len() + 1..] == name.as_bytes()
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
        let mut i = (h as usize) & self.mask;
        loop {
            let slot = &self.slots[i];
            let sh = slot.hash.load(Ordering::Acquire);
            if sh == 0 {
                return self.insert_slow(h, method, name);
            }
            if sh == h {
                let id = slot.id.load(Ordering::Relaxed);
                if let Some(stored) = self.names.get(id as usize).and_then(OnceLock::get)
                    && matches(stored, method, name)
                {
                    return id;
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    #[cold]
    fn insert_slow(&self, h: u64, method: &str, name: &str) -> u32 {
        let mut len = match self.len.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Re-probe under the lock: another thread may have inserted it.
        let mut i = (h as usize) & self.mask;
        loop {
            let slot = &self.slots[i];
            let sh = slot.hash.load(Ordering::Acquire);
            if sh == 0 {
                break;
            }
            if sh == h {
                let id = slot.id.load(Ordering::Relaxed);
                if let Some(stored) = self.names.get(id as usize).and_then(OnceLock::get)
                    && matches(stored, method, name)
                {
                    return id;
                }
            }
            i = (i + 1) & self.mask;
        }
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
