//! Store errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened (or repaired).
    #[error("cannot open the store")]
    Open(#[source] Box<redb::DatabaseError>),
    /// A database operation failed.
    #[error("store operation failed")]
    Db(#[source] Box<redb::Error>),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt")]
    Corrupt,
    /// The writer thread is gone.
    #[error("store writer is closed")]
    Closed,
    /// The database is being opened again after an I/O error.
    #[error("store is reopening after an I/O error")]
    Unavailable,
}

impl StoreError {
    /// Whether the database hit an I/O error (disk full, device gone): redb then refuses every
    /// operation until it is opened again ([`crate::store::Store::reopen`]).
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Db(e) if matches!(**e, redb::Error::Io(_) | redb::Error::PreviousIo))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
