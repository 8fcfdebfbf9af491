//! The SDK's own log lines (rare: drop notices). Goes to `tracing` when the feature is on, else
//! to standard error. Never called on the hot path.

pub(crate) fn warn(msg: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "seer_sdk", "{msg}");
    #[cfg(not(feature = "tracing"))]
    eprintln!("{msg}");
}
