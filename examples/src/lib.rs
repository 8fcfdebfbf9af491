//! The social-network demo app and the evaluation harness.
//!
//! - [`topology`]: twelve services modelled on DeathStarBench's Social Network.
//! - [`service`]: one service process (hyper 1 over loopback, its own worker pool and cgroup).
//! - [`loadgen`]: the open-loop Poisson load generator, client latency in HDR histograms.
//! - [`faults`] and [`cgroup`]: the fault injector's kinds and per-service CPU control.
//! - [`scenario`]: scenario files (TOML).
//! - [`harness`]: one run of a scenario; [`metrics`]: its summary; [`report`]: its HTML report.
//!
//! The `social-network` binary wraps all of it: `social-network eval SCENARIO --mode seer-both`.

pub mod cgroup;
pub mod collector;
pub mod cpu;
pub mod eval;
pub mod faults;
pub mod harness;
pub mod loadgen;
pub mod metrics;
pub mod report;
pub mod scenario;
pub mod service;
pub mod topology;
