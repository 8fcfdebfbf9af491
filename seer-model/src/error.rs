//! Errors of the model crate.

use std::path::PathBuf;

/// An error from the model: libtorch failures, bad input, checkpoints, the model thread.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// libtorch reported an error; the cause is boxed so that no `tch` type leaks.
    #[error("libtorch operation failed")]
    Torch(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The configuration is not usable.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// The input of a call does not fit together (e.g. feature count vs service count).
    #[error("invalid input: {0}")]
    Input(String),
    /// A checkpoint file could not be read or written.
    #[error("checkpoint i/o failed for {path}")]
    CheckpointIo {
        /// The checkpoint file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file is damaged (truncated, bad checksum, unreadable header).
    #[error("checkpoint {path} is corrupt: {reason}")]
    CheckpointCorrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint is intact but was written for another feature schema or network shape.
    #[error("checkpoint {path} does not fit this model: {reason}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// The model thread could not be started.
    #[error("could not start the model thread")]
    Spawn(#[source] std::io::Error),
    /// The model thread has stopped (it panicked or was shut down).
    #[error("the model thread has stopped")]
    Stopped,
}

impl From<tch::TchError> for ModelError {
    fn from(err: tch::TchError) -> Self {
        ModelError::Torch(Box::new(err))
    }
}
