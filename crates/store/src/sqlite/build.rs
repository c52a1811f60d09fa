//! A new SQLite store built out of sight and put in place whole: the restore of a store that
//! does not exist any more (the disaster case, where a restore's speed matters most).
//!
//! The database is written beside its final name, `NAME.restoring`, with the journal in
//! memory and no fsync per commit ([`Journal::Unpublished`]): every page is written once
//! instead of to the WAL and again to the database. When it is complete it is made durable
//! and linked to its final name, which fails rather than replace anything a server may have
//! created there meanwhile. Until then no server can see it: a restore killed half-way leaves
//! only `NAME.restoring`, which the next run starts over.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{directory_of, Journal, SqliteStore};
use crate::error::{Result, StoreError};
use crate::s3::S3Config;
use crate::Store;

/// A SQLite store being built at a temporary name; see the module's documentation.
pub struct SqliteBuild {
    target: PathBuf,
    building: PathBuf,
    /// An exclusive lock on `building`, held to the end: a second restore into the same new
    /// store is refused instead of writing into this one's file.
    lock: File,
    /// The database while it is open: closed (its writer finished) before the lock is let go.
    backend: Option<Arc<SqliteStore>>,
}

/// Files a SQLite database at `path` consists of besides itself.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    let text = format!("{what} {}: {e}", path.display());
    if e.kind() == ErrorKind::StorageFull {
        StoreError::Full(text)
    } else {
        StoreError::Unavailable(text)
    }
}

fn exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "looking at", e)),
    }
}

/// Whether anything of a database is at `path`: the file, or a WAL, shared-memory index or
/// journal a server left (putting a new file beside those would have SQLite apply them to it).
fn any_of_a_database(path: &Path) -> Result<bool> {
    if exists(path)? {
        return Ok(true);
    }
    for c in COMPANIONS {
        if exists(&with_suffix(path, c))? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, "removing", e)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "syncing directory", e))
}

/// Whether the open `file` is still the one at `path` (and not one removed or replaced since).
fn is_at(file: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file
        .metadata()
        .map_err(|e| io_error(path, "looking at", e))?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "looking at", e)),
    }
}

impl SqliteBuild {
    /// Starts building a new store for `target`, or returns None when anything of a store is
    /// already there: that one is restored into where it is, as a running server's is.
    pub fn begin(target: &Path) -> Result<Option<SqliteBuild>> {
        let building = with_suffix(target, ".restoring");
        // (When a build was interrupted and a store made since, the lock below lets its
        // leftover be removed.)
        if any_of_a_database(target)? && !exists(&building)? {
            return Ok(None);
        }
        let dir = directory_of(target);
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating", e))?;
        let lock = loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&building)
                .map_err(|e| io_error(&building, "creating", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Unavailable(format!(
                        "{}: another restore is building this store",
                        building.display()
                    )))
                }
                Err(TryLockError::Error(e)) => return Err(io_error(&building, "locking", e)),
            }
            // A build that finished between the open and the lock has removed the file this
            // one locked: lock what the name means now.
            if is_at(&file, &building)? {
                break file;
            }
        };
        // Under the lock, so that a build that finished meanwhile is seen to have put its
        // store in place.
        if any_of_a_database(target)? {
            remove_if_there(&building)?;
            return Ok(None);
        }
        // What an interrupted build left is not trusted (its commits were never made
        // durable): start over.
        lock.set_len(0)
            .map_err(|e| io_error(&building, "emptying", e))?;
        for c in COMPANIONS {
            remove_if_there(&with_suffix(&building, c))?;
        }
        // Publishing needs a hard link (a rename could replace a store made meanwhile): where
        // the file system has none, restore into the store in place instead, before any work
        // is done rather than after all of it.
        let probe = with_suffix(&building, ".link");
        remove_if_there(&probe)?;
        if let Err(e) = std::fs::hard_link(&building, &probe) {
            tracing::info!(error = %e, dir = %dir.display(), "no hard links: restoring in place");
            remove_if_there(&building)?;
            return Ok(None);
        }
        remove_if_there(&probe)?;
        Ok(Some(SqliteBuild {
            target: target.to_path_buf(),
            building,
            lock,
            backend: None,
        }))
    }

    /// Where the store is put once complete.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The store being built, with bodies in the object store `blobs` when given. It is a
    /// whole store: migrations, every read and write work as in service.
    pub async fn open(&mut self, blobs: Option<&S3Config>) -> Result<Arc<Store>> {
        let external = blobs.map(crate::s3::open).transpose()?;
        let backend = Arc::new(SqliteStore::open_with(&self.building, Journal::Unpublished).await?);
        self.backend = Some(backend.clone());
        Ok(Store::assemble(backend, external))
    }

    /// Makes the complete store durable and puts it at its final name. `store` is the one
    /// [`SqliteBuild::open`] gave. Fails, replacing nothing, when writing it met an I/O
    /// error or a store appeared at the final name meanwhile (a server started on it).
    pub async fn finish(mut self, store: Arc<Store>) -> Result<()> {
        drop(store);
        self.close().await?;
        tokio::task::spawn_blocking(move || self.publish())
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    /// Gives up (the restore failed): waits for the writes already sent to end, so that no
    /// other restore can start over on the file while this one still writes to it, and
    /// leaves the file for the next run to start over.
    pub async fn abandon(mut self, store: Arc<Store>) {
        drop(store);
        if let Err(e) = self.close().await {
            tracing::debug!(error = %e, "closing an abandoned build");
        }
    }

    /// Closes the database: every write finished, every connection closed.
    async fn close(&mut self) -> Result<()> {
        let Some(backend) = self.backend.take() else {
            return Ok(());
        };
        let backend = Arc::into_inner(backend)
            .ok_or_else(|| StoreError::Internal("the store being built is still in use".into()))?;
        tokio::task::spawn_blocking(move || backend.close())
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    fn publish(self) -> Result<()> {
        // The commits were not synced one by one: this is where they reach the disk.
        self.lock
            .sync_all()
            .map_err(|e| io_error(&self.building, "syncing", e))?;
        let dir = directory_of(&self.target);
        // A link, unlike a rename, never replaces what is at the target.
        match std::fs::hard_link(&self.building, &self.target) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&self.building);
                return Err(StoreError::AlreadyExists(format!(
                    "a store at {} appeared while the restore built a new one beside it (was a \
                     server started?); it was left as it is: run the restore again to restore \
                     into it",
                    self.target.display()
                )));
            }
            Err(e) => {
                return Err(io_error(
                    &self.target,
                    &format!(
                        "the restored store is complete at {} but could not be linked to",
                        self.building.display()
                    ),
                    e,
                ))
            }
        }
        sync_dir(dir)?;
        // The store is in place: a second name left for it is harmless (the next restore
        // into it removes it) and no reason to report a failure.
        if let Err(e) = remove_if_there(&self.building).and_then(|()| sync_dir(dir)) {
            tracing::warn!(error = %e, "the restored store is in place; its temporary name stays");
        }
        Ok(())
    }
}
