//! Integration tests of the collector over real HTTP on loopback, with a real on-disk store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod api;
mod common;
mod durability;
mod ingest;
mod python;
mod sdk;
