use std::path::{Path, PathBuf};

use trimaran_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    // The message carries the cause, so it is not also a `source` (or error chains would
    // print it twice).
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The repository is not one, or is of a format this binary does not know.
    #[error("{0}")]
    Format(String),
    /// Part of the repository does not hold what it should.
    #[error("{0}")]
    Damaged(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Another backup or prune holds the repository.
    #[error("{0}")]
    Busy(String),
}

impl BackupError {
    pub fn io(path: &Path, error: std::io::Error) -> BackupError {
        BackupError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

pub type Result<T> = std::result::Result<T, BackupError>;
