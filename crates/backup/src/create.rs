//! `backup create`: a consistent copy of the store while it keeps serving.
//!
//! Each account is read in one transaction (its mailboxes, UIDs and flags agree with each
//! other); bodies are immutable and named by their hash, so they can be copied afterwards.
//! Only bodies no pack of the repository holds yet are copied: a later backup costs what
//! changed since.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use trimaran_store::{BlobHash, MessageMeta, Store, StoreError, StoredBlob};

use crate::error::{BackupError, Result};
use crate::pack::{PackId, PackWriter};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{self, Header, Line, SavedDkimKey, ServerSettings, SnapshotWriter, Trailer};

pub struct CreateOptions {
    /// A pack is closed once it holds this many bytes.
    pub pack_size: u64,
    pub quiet: bool,
    /// The store's URL as shown to people (no password).
    pub store_name: String,
}

pub struct Created {
    pub id: String,
    pub trailer: Trailer,
    pub summary: String,
}

/// Bodies fetched from the store at once: enough to keep a network store busy.
const FETCH_AHEAD: usize = 16;
/// Bodies whose metadata is read in one query.
const HEADS_BATCH: usize = 500;
/// Version of [`encode_extra`]'s layout.
const EXTRA_VERSION: u8 = 1;

/// A pack record's extra part: the store's parsed metadata of the message and its copied
/// header block: `length (4, LE)` then, zstd-compressed, `version (1) | has header (1) | JSON
/// length (4, LE) | JSON | header`.
pub fn encode_extra(meta: &MessageMeta, header: Option<&[u8]>) -> Vec<u8> {
    let Ok(json) = serde_json::to_vec(meta) else {
        return Vec::new();
    };
    let mut raw = Vec::with_capacity(6 + json.len() + header.map_or(0, <[u8]>::len));
    raw.push(EXTRA_VERSION);
    raw.push(header.is_some() as u8);
    raw.extend_from_slice(&(json.len() as u32).to_le_bytes());
    raw.extend_from_slice(&json);
    raw.extend_from_slice(header.unwrap_or_default());
    // Its length first, so that decompressing allocates exactly that much.
    let mut out = (raw.len() as u32).to_le_bytes().to_vec();
    match trimaran_store::blob::zstd_compress(&raw, 1) {
        Ok(packed) => out.extend_from_slice(&packed),
        Err(_) => return Vec::new(),
    }
    out
}

/// The metadata and header of [`encode_extra`]; None when there is none or it does not
/// decode (the restore then parses the body instead).
pub fn decode_extra(extra: &[u8]) -> Option<(MessageMeta, Option<Vec<u8>>)> {
    if extra.is_empty() {
        return None;
    }
    let len = u32::from_le_bytes(extra.get(..4)?.try_into().ok()?) as usize;
    if len as u64 > crate::pack::MAX_RECORD {
        return None;
    }
    let raw = trimaran_store::blob::zstd_decompress(&extra[4..], len).ok()?;
    if raw.len() < 6 || raw[0] != EXTRA_VERSION {
        return None;
    }
    let len = u32::from_le_bytes(raw[2..6].try_into().ok()?) as usize;
    let json = raw.get(6..6 + len)?;
    let meta = serde_json::from_slice(json).ok()?;
    let header = (raw[1] == 1).then(|| raw[6 + len..].to_vec());
    Some((meta, header))
}

pub async fn create(
    store: &Arc<Store>,
    repo: &Repository,
    opts: &CreateOptions,
) -> Result<Created> {
    let _lock = repo.lock_exclusive()?;
    let index = repo.load_index(true)?;
    let now = time::OffsetDateTime::now_utc();
    let id = snapshot::new_id(now, snapshot::list(repo)?.last().map(String::as_str));
    let mut out = SnapshotWriter::create(repo, &id)?;
    out.write(&Line::Header(Header {
        id: id.clone(),
        created: now.unix_timestamp(),
        store: opts.store_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }))?;
    let meta = store.meta();
    out.write(&Line::Server(ServerSettings {
        domains: meta.list_domains().await?,
        aliases: meta.list_aliases().await?,
        dkim_keys: meta
            .dkim_keys()
            .await?
            .iter()
            .map(SavedDkimKey::from)
            .collect(),
    }))?;

    let accounts = meta.list_accounts().await?;
    let mut total = 0;
    for a in &accounts {
        if let Some(rec) = meta.account_by_address(a).await? {
            total += meta.quota(rec.id).await?.messages_used;
        }
    }
    let mut progress = Progress::new("backup", total, opts.quiet);
    let mut packer = Packer::new(repo, opts.pack_size);
    let mut trailer = Trailer::default();
    let mut used: BTreeSet<PackId> = BTreeSet::new();
    let mut damaged: BTreeMap<BlobHash, String> = BTreeMap::new();
    // Bodies copied by this backup, in packs that get their names when they are full.
    let mut copied: HashSet<BlobHash> = HashSet::new();

    for address in &accounts {
        // Removed since the list was read: nothing to keep.
        let Some(account) = meta.account_snapshot(address).await? else {
            continue;
        };
        let mut wanted = Vec::new();
        let mut seen = BTreeSet::new();
        let (mut messages, mut bytes) = (0u64, 0u64);
        for m in account.mailboxes.iter().flat_map(|mb| &mb.messages) {
            messages += 1;
            bytes += m.size;
            if let Some(loc) = index.get(&m.hash) {
                used.insert(loc.pack);
            } else if !copied.contains(&m.hash)
                && !damaged.contains_key(&m.hash)
                && seen.insert(m.hash)
            {
                wanted.push(m.hash);
            }
        }
        for chunk in wanted.chunks(HEADS_BATCH) {
            // The parsed metadata goes with each body, so a restore need not parse it again.
            let heads: HashMap<BlobHash, Vec<u8>> = meta
                .message_heads(chunk)
                .await?
                .into_iter()
                .map(|(hash, m, header)| (hash, encode_extra(&m, header.as_deref())))
                .collect();
            let fetched = futures::stream::iter(chunk.iter().map(|&hash| fetch(store, hash)))
                .buffered(FETCH_AHEAD);
            let mut fetched = std::pin::pin!(fetched);
            while let Some((hash, got)) = fetched.try_next().await? {
                match got {
                    Ok(blob) => {
                        trailer.new_bodies += 1;
                        trailer.new_bytes += blob.size;
                        let extra = heads.get(&hash).map(Vec::as_slice).unwrap_or_default();
                        packer.add(&blob, extra)?;
                        copied.insert(hash);
                    }
                    Err(detail) => {
                        tracing::error!(%hash, %detail, "a body in the store is damaged; its messages are not in this backup");
                        damaged.insert(hash, detail);
                    }
                }
            }
        }
        trailer.accounts += 1;
        trailer.messages += messages;
        trailer.bytes += bytes;
        out.write(&Line::Account(account))?;
        progress.add(messages, bytes);
    }
    used.extend(packer.finish()?);
    trailer.packs = used.iter().map(PackId::to_hex).collect();
    trailer.damaged = damaged;
    out.finish(trailer.clone())?;
    Ok(Created {
        id,
        trailer,
        summary: progress.finish(),
    })
}

/// A body as stored, checked against its hash (a damaged one must not be backed up as if it
/// were the message). The outer error is the store failing; the inner one, damage.
async fn fetch(
    store: &Arc<Store>,
    hash: BlobHash,
) -> Result<(BlobHash, std::result::Result<StoredBlob, String>)> {
    let blob = match store.blobs().get_blob(&hash).await {
        Ok(Some(blob)) => blob,
        Ok(None) => return Ok((hash, Err("the body is missing from the store".into()))),
        Err(StoreError::Corrupt { detail, .. }) => return Ok((hash, Err(detail))),
        Err(e) => return Err(e.into()),
    };
    let checked = tokio::task::spawn_blocking(move || {
        blob.decode_verified()
            .map(|_| blob)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| BackupError::Store(StoreError::Internal(e.to_string())))?;
    if let Err(detail) = &checked {
        // Recorded in the store too, for the operator and the scrub.
        let _ = store.meta().record_corruption(&hash, detail).await;
    }
    Ok((hash, checked))
}

/// Fills packs one after another, each closed and named once it reaches the pack size.
struct Packer<'a> {
    repo: &'a Repository,
    pack_size: u64,
    current: Option<PackWriter>,
    finished: Vec<PackId>,
}

impl<'a> Packer<'a> {
    fn new(repo: &'a Repository, pack_size: u64) -> Packer<'a> {
        Packer {
            repo,
            pack_size,
            current: None,
            finished: Vec::new(),
        }
    }

    fn add(&mut self, blob: &StoredBlob, extra: &[u8]) -> Result<()> {
        if self.current.is_none() {
            self.current = Some(PackWriter::create(self.repo.tmp_file("pack"))?);
        }
        let w = self.current.as_mut().expect("just made");
        w.add(blob, extra)?;
        if w.len() >= self.pack_size {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let (id, _) = w.finish(&self.repo.packs())?;
            self.finished.push(id);
        }
        Ok(())
    }

    /// Finishes the open pack; returns the packs written.
    fn finish(mut self) -> Result<Vec<PackId>> {
        self.close()?;
        Ok(self.finished)
    }
}
