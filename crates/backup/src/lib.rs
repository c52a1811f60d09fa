//! Backups of a Trimaran store (DESIGN.md G5–G7): bodies in large content-addressed pack
//! files shared by every backup of a repository, metadata in one snapshot file per backup,
//! online restore of everything or one account, verification that names the messages any
//! damage affects, pruning by a retention rule, and the scrub that checks the live store
//! (repairing bodies from a backup).

pub mod create;
pub mod error;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod scrub;
pub mod snapshot;
pub mod verify;

pub use create::{create, CreateOptions, Created};
pub use error::{BackupError, Result};
pub use prune::{prune, Pruned, Retention};
pub use repo::Repository;
pub use restore::{restore, RestoreOptions, Restored};
pub use scrub::{scrub, ScrubOptions, ScrubReport};
pub use verify::{verify, Report};
