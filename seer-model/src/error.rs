//! Errors of the model crate.

/// An error from the model: libtorch failures, bad shapes, checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// libtorch reported an error; the cause is boxed so that no `tch` type leaks.
    #[error("libtorch operation failed")]
    Torch(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<tch::TchError> for ModelError {
    fn from(err: tch::TchError) -> Self {
        ModelError::Torch(Box::new(err))
    }
}
