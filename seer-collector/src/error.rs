//! Errors of the collector as a whole (each area has its own: `config::ConfigError`,
//! `store::StoreError`, `ingest::error::IngestError`, `ingest::otlp::DecodeError`).

use std::net::SocketAddr;

use crate::{config, store};

/// Why the collector could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The settings are invalid.
    #[error("invalid settings")]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error("cannot open the store")]
    Store(#[from] store::StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be spawned, or the server failed.
    #[error("collector runtime error")]
    Io(#[from] std::io::Error),
    /// Agent mode needs `--upstream`.
    #[error("agent mode needs an upstream collector URL (--upstream)")]
    NoUpstream,
}
