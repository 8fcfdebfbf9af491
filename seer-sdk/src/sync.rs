//! The atomics used by seer-sdk, in one place so that they can be swapped for a model checker's.

pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
