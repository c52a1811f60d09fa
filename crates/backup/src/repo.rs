//! A backup repository on a file system:
//!
//! ```text
//! DIR/trimaran-backup.json   what this is, and its format version
//! DIR/lock                   locked while a backup or prune changes the repository
//! DIR/packs/HH/ID.pack       bodies (see `pack`), ID the BLAKE3 of the file
//! DIR/packs/HH/ID.idx        the pack's index
//! DIR/snapshots/ID.snap      one backup: every account's metadata and the packs it needs
//! DIR/tmp/                   files being written; anything here is unfinished
//! ```
//!
//! Files are written under `tmp/`, flushed to disk and renamed into place, so a backup killed
//! at any moment leaves the repository as it was plus, at most, packs no snapshot names yet
//! (which the next backup reuses and `prune` removes).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use trimaran_store::BlobHash;

use crate::error::{BackupError, Result};
use crate::pack::{self, Location, PackId};

const MARKER: &str = "trimaran-backup.json";
const FORMAT: u32 = 1;

pub struct Repository {
    root: PathBuf,
}

/// Held while the repository is locked; unlocked when dropped (or when the process dies).
pub struct Lock {
    _file: Option<File>,
}

impl Repository {
    /// Opens the repository at `root`, making one there when `create` and it is empty or
    /// missing.
    pub fn open(root: &Path, create: bool) -> Result<Repository> {
        let marker = root.join(MARKER);
        match std::fs::read(&marker) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    BackupError::Format(format!(
                        "{}: not a backup repository: {e}",
                        marker.display()
                    ))
                })?;
                let format = v.get("format").and_then(|f| f.as_u64());
                if format != Some(FORMAT as u64) {
                    return Err(BackupError::Format(format!(
                        "{}: repository format {format:?}, this binary reads {FORMAT}",
                        root.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                if root.exists()
                    && std::fs::read_dir(root)
                        .map_err(|e| BackupError::io(root, e))?
                        .next()
                        .is_some()
                {
                    return Err(BackupError::Format(format!(
                        "{} is neither empty nor a backup repository",
                        root.display()
                    )));
                }
                create_private_dir(root)?;
                let text = serde_json::json!({"kind": "trimaran-backup", "format": FORMAT});
                write_durably(&marker, text.to_string().as_bytes())?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NotFound(format!(
                    "{}: no backup repository there",
                    root.display()
                )))
            }
            Err(e) => return Err(BackupError::io(&marker, e)),
        }
        let repo = Repository {
            root: root.to_path_buf(),
        };
        for dir in [repo.packs(), repo.snapshots(), repo.tmp()] {
            if !dir.is_dir() {
                create_private_dir(&dir)?;
            }
        }
        Ok(repo)
    }

    pub fn packs(&self) -> PathBuf {
        self.root.join("packs")
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The lock for changing the repository (backup, prune): one at a time.
    pub fn lock_exclusive(&self) -> Result<Lock> {
        let path = self.root.join("lock");
        let file = File::create(&path).map_err(|e| BackupError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(BackupError::Busy(format!(
                "{}: another backup, prune or restore is using the repository",
                self.root.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(BackupError::io(&path, e)),
        }
    }

    /// The lock for reading it (restore, verify): several at once, never during a prune. On
    /// read-only media (a backup disk mounted read-only) there is nobody to lock out: the
    /// existing lock file is taken if there is one, else none.
    pub fn lock_shared(&self) -> Result<Lock> {
        let path = self.root.join("lock");
        let file = match File::create(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                match File::open(&path) {
                    Ok(file) => file,
                    Err(_) => return Ok(Lock { _file: None }),
                }
            }
            Err(e) => return Err(BackupError::io(&path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(Lock { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => Err(BackupError::Busy(format!(
                "{}: a backup or prune is changing the repository",
                self.root.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(BackupError::io(&path, e)),
        }
    }

    /// A fresh temporary path.
    pub fn tmp_file(&self, suffix: &str) -> PathBuf {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.tmp()
            .join(format!("{}-{n:x}.{suffix}", std::process::id()))
    }

    /// Every pack in the repository, by name.
    pub fn pack_ids(&self) -> Result<Vec<PackId>> {
        let mut ids = Vec::new();
        let packs = self.packs();
        for sub in std::fs::read_dir(&packs).map_err(|e| BackupError::io(&packs, e))? {
            let sub = sub.map_err(|e| BackupError::io(&packs, e))?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&sub).map_err(|e| BackupError::io(&sub, e))? {
                let f = f.map_err(|e| BackupError::io(&sub, e))?.path();
                if f.extension().is_some_and(|e| e == "pack") {
                    if let Some(id) = f
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(PackId::parse)
                    {
                        ids.push(id);
                    }
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Where every body of the repository is. An index that is missing or damaged is
    /// rebuilt from its pack (and written again, when `repair`).
    pub fn load_index(&self, repair: bool) -> Result<HashMap<BlobHash, Location>> {
        let mut index = HashMap::new();
        let dir = self.packs();
        for id in self.pack_ids()? {
            let entries = match pack::read_index(&pack::index_path(&dir, &id)) {
                Some(entries) => entries,
                None => {
                    tracing::warn!(pack = %id, "pack index missing or damaged; reading the pack");
                    let (entries, sum) = pack::scan(&pack::pack_path(&dir, &id))?;
                    // Only an intact pack's records are worth writing down again.
                    if repair && sum == id {
                        pack::rewrite_index(&dir, &id, &entries)?;
                    }
                    entries
                }
            };
            for e in entries {
                index.entry(e.hash).or_insert(e.location(id));
            }
        }
        Ok(index)
    }

    pub fn pack_path(&self, id: &PackId) -> PathBuf {
        pack::pack_path(&self.packs(), id)
    }
}

/// Backups hold password hashes and DKIM private keys: only their owner may read them.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| BackupError::io(dir, e))
}

/// Writes a whole file so that after a crash it is either absent or complete: a temporary
/// name, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    let mut f = File::create(&tmp).map_err(|e| BackupError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| BackupError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BackupError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BackupError::io(dir, e))
}
