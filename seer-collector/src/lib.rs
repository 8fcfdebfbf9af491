//! Seer collector (work in progress).
#![forbid(unsafe_code)]

pub mod predict;
