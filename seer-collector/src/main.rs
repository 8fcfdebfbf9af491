//! The `seer-collector` binary.
fn main() {}
