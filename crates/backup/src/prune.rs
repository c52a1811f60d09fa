//! `backup prune`: forgets snapshots a retention rule no longer keeps, then removes the packs
//! no remaining snapshot needs. A pack partly needed is kept whole (no repacking): the space
//! of its unneeded bodies comes back once no snapshot needs any of it.

use std::collections::HashSet;

use crate::error::{BackupError, Result};
use crate::pack::{self, PackId};
use crate::repo::Repository;
use crate::snapshot;

#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// Keep the newest N snapshots.
    pub keep_last: Option<usize>,
    /// Keep every snapshot younger than this many seconds.
    pub keep_within: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Pruned {
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    pub packs_removed: u64,
    pub bytes_freed: u64,
}

pub fn prune(repo: &Repository, rule: &Retention, now: i64, dry_run: bool) -> Result<Pruned> {
    if rule.keep_last.is_none() && rule.keep_within.is_none() {
        return Err(BackupError::Format(
            "a retention rule is needed: --keep-last N and/or --keep-within DURATION".into(),
        ));
    }
    let _lock = repo.lock_exclusive()?;
    let ids = snapshot::list(repo)?;
    let mut out = Pruned::default();
    let mut needed: HashSet<PackId> = HashSet::new();
    let n = ids.len();
    for (i, id) in ids.iter().enumerate() {
        let newest = rule.keep_last.is_some_and(|k| n - i <= k);
        let summary = snapshot::summary(repo, id);
        let recent = match (&summary, rule.keep_within) {
            (Ok((h, _)), Some(within)) => now - h.created <= within,
            _ => false,
        };
        match summary {
            // A snapshot that cannot be read is kept: prune is not the place to lose evidence,
            // and its packs are kept with it (verify reports it).
            Err(e) => {
                tracing::warn!(snapshot = %id, error = %e, "unreadable snapshot kept, with every pack");
                return Err(BackupError::Damaged(format!(
                    "snapshot {id} cannot be read ({e}); prune removes nothing until it is dealt with (see backup verify)"
                )));
            }
            Ok((_, trailer)) if newest || recent => {
                needed.extend(trailer.packs.iter().filter_map(|p| PackId::parse(p)));
                out.kept.push(id.clone());
            }
            Ok(_) => out.removed.push(id.clone()),
        }
    }
    if !dry_run {
        for id in &out.removed {
            let path = snapshot::snapshot_path(repo, id);
            std::fs::remove_file(&path).map_err(|e| BackupError::io(&path, e))?;
        }
    }
    let dir = repo.packs();
    for id in repo.pack_ids()? {
        if needed.contains(&id) {
            continue;
        }
        let path = pack::pack_path(&dir, &id);
        out.bytes_freed += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        out.packs_removed += 1;
        if !dry_run {
            std::fs::remove_file(&path).map_err(|e| BackupError::io(&path, e))?;
            let idx = pack::index_path(&dir, &id);
            let _ = std::fs::remove_file(&idx);
        }
    }
    // What interrupted runs left half-written (we hold the lock: nobody is writing).
    if !dry_run {
        let tmp = repo.tmp();
        for f in std::fs::read_dir(&tmp).map_err(|e| BackupError::io(&tmp, e))? {
            let path = f.map_err(|e| BackupError::io(&tmp, e))?.path();
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(out)
}
