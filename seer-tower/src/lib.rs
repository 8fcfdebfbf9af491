#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod callbacks;
pub mod classify;
pub mod client;
pub mod future;
mod headers;
mod layer;
mod service;

pub use callbacks::{DefaultOnShed, OnShed, Priority};
pub use classify::{Classify, MethodAndPath};
pub use client::{SeerClient, SeerClientLayer, TraceState};
pub use layer::SeerLayer;
pub use service::Seer;
