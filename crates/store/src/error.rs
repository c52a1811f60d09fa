//! Store errors. The split between temporary and permanent errors is what lets every protocol
//! front end choose a 4xx over a 5xx for our own faults (DESIGN.md G2).

use thiserror::Error;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The store cannot be reached or is busy: connection lost, failover, lock timeout, I/O error,
    /// read-only file system. Worth retrying.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store has no room left (disk full). Worth retrying once space is freed.
    #[error("store full: {0}")]
    Full(String),
    /// A stored body does not match its hash. Never served.
    #[error("corrupt blob {hash}: {detail}")]
    Corrupt { hash: String, detail: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    /// The change would take the account past its quota: the user's to fix, not ours.
    #[error("over quota: {0}")]
    OverQuota(String),
    #[error("the store's schema is version {found}, newer than this binary knows ({known}); upgrade trimaran")]
    SchemaTooNew { found: i64, known: i64 },
    /// A bug or an unexpected answer from the back end. Still our fault, so still temporary for
    /// the peer, but not worth waiting for.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether waiting and trying again may succeed (G2: the reply to end-of-data waits for these).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }

    /// Errors that are our fault, whatever the request: the peer must get a temporary failure.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Full(_)
                | StoreError::Internal(_)
                | StoreError::Corrupt { .. }
                | StoreError::SchemaTooNew { .. }
        )
    }
}
