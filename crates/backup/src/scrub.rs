//! `trimaran scrub`: re-reads and re-hashes every body the store's messages and queue refer
//! to, checks the metadata invariants, repairs what it safely can (a damaged or missing body
//! from a backup repository, which is another copy of it; counters that fell behind the rows
//! they count), and collects bodies nothing refers to.

use std::sync::Arc;

use futures::StreamExt;
use trimaran_store::{BlobHash, Collected, Invariant, Store, StoreError};

use crate::error::Result;
use crate::progress::Progress;
use crate::repo::Repository;

pub struct ScrubOptions {
    /// A backup repository to take good copies of damaged bodies from.
    pub repair_from: Option<Repository>,
    /// Repair metadata invariants that have a safe repair.
    pub repair: bool,
    /// Collect unreferenced bodies first written at least this many seconds ago; None: no
    /// collection.
    pub collect_older_than: Option<i64>,
    pub quiet: bool,
}

#[derive(Debug, Default)]
pub struct ScrubReport {
    pub bodies_checked: u64,
    pub bytes_checked: u64,
    /// Bodies that are damaged or missing: (hash, what is wrong, repaired from the backup).
    pub damaged: Vec<(BlobHash, String, bool)>,
    pub invariants: Vec<Invariant>,
    pub collected: Collected,
    pub summary: String,
}

impl ScrubReport {
    /// Whether anything is still wrong.
    pub fn problems(&self) -> usize {
        self.damaged.iter().filter(|d| !d.2).count()
            + self
                .invariants
                .iter()
                .filter(|i| i.violations > 0 && !i.repaired)
                .count()
    }
}

const PAGE: usize = 1000;
const READ_AHEAD: usize = 16;

pub async fn scrub(store: &Arc<Store>, opts: &ScrubOptions) -> Result<ScrubReport> {
    let mut report = ScrubReport {
        invariants: store.meta().check_invariants(opts.repair).await?,
        ..ScrubReport::default()
    };
    let index = match &opts.repair_from {
        Some(repo) => Some((repo.lock_shared()?, repo.load_index(false)?)),
        None => None,
    };
    let mut progress = Progress::new("scrub", 0, opts.quiet);
    let mut after = None;
    loop {
        let page = store.meta().referenced_hashes(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(*last);
        let checked =
            futures::stream::iter(page.into_iter().map(|h| check(store, h))).buffered(READ_AHEAD);
        let mut checked = std::pin::pin!(checked);
        while let Some(result) = checked.next().await {
            let (hash, outcome) = result?;
            report.bodies_checked += 1;
            match outcome {
                Ok(size) => {
                    report.bytes_checked += size;
                    progress.add(1, size);
                }
                Err(detail) => {
                    progress.add(1, 0);
                    let _ = store.meta().record_corruption(&hash, &detail).await;
                    let repaired = match (&index, &opts.repair_from) {
                        (Some((_, index)), Some(repo)) => {
                            repair_body(store, repo, index, hash).await?
                        }
                        _ => false,
                    };
                    report.damaged.push((hash, detail, repaired));
                }
            }
        }
    }
    if let Some(age) = opts.collect_older_than {
        let before = trimaran_store::now_unix() - age;
        loop {
            let round = store.meta().collect_garbage(before, PAGE).await?;
            report.collected.bodies += round.bodies;
            report.collected.bytes += round.bytes;
            if round.bodies == 0 {
                break;
            }
        }
    }
    report.summary = progress.finish();
    Ok(report)
}

/// The body's size when it reads back intact, else what is wrong with it.
async fn check(
    store: &Arc<Store>,
    hash: BlobHash,
) -> Result<(BlobHash, std::result::Result<u64, String>)> {
    let blob = match store.blobs().get_blob(&hash).await {
        Ok(Some(blob)) => blob,
        Ok(None) => return Ok((hash, Err("the body is missing".into()))),
        Err(StoreError::Corrupt { detail, .. }) => return Ok((hash, Err(detail))),
        Err(e) => return Err(e.into()),
    };
    let outcome = tokio::task::spawn_blocking(move || {
        blob.decode_verified()
            .map(|raw| raw.len() as u64)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok((hash, outcome))
}

/// Puts the backup's copy of a body back, if the backup has an intact one.
async fn repair_body(
    store: &Arc<Store>,
    repo: &Repository,
    index: &std::collections::HashMap<BlobHash, crate::pack::Location>,
    hash: BlobHash,
) -> Result<bool> {
    let Some(loc) = index.get(&hash) else {
        return Ok(false);
    };
    let mut reader = crate::pack::PackReader::new(repo.packs());
    let good = match reader.read(hash, loc) {
        Ok((blob, _)) if blob.decode_verified().is_ok() => blob,
        _ => return Ok(false),
    };
    store.blobs().replace_blob(&good).await?;
    // Believed only once it reads back intact from the store.
    let back = store.blobs().get_blob(&hash).await?;
    Ok(back.is_some_and(|b| b.decode_verified().is_ok()))
}
