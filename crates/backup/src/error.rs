use std::path::{Path, PathBuf};

use trimaran_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
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
    pub fn io(path: &Path, source: std::io::Error) -> BackupError {
        BackupError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, BackupError>;
