//! A snapshot file: one backup's metadata, as zstd-compressed JSON lines (with zstd's content
//! checksum, so damage to it is noticed): a header, the server-wide settings, one line per
//! account, and a trailer. Only a file that ends with its trailer is a finished backup; the
//! trailer lists the packs the snapshot needs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trimaran_store::{AccountSnapshot, BlobHash, DkimKey};

use crate::error::{BackupError, Result};
use crate::repo::{sync_dir, Repository};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Header(Header),
    Server(ServerSettings),
    Account(AccountSnapshot),
    Trailer(Trailer),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub id: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// The store it was taken from (without any password).
    pub store: String,
    pub version: String,
}

/// What is not any one account's.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerSettings {
    pub domains: Vec<String>,
    pub aliases: Vec<(String, String)>,
    pub dkim_keys: Vec<SavedDkimKey>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedDkimKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    /// Hex of the PKCS#8 DER.
    pub private_key: String,
    pub public_key: String,
    pub created: i64,
}

impl From<&DkimKey> for SavedDkimKey {
    fn from(k: &DkimKey) -> Self {
        SavedDkimKey {
            domain: k.domain.clone(),
            selector: k.selector.clone(),
            algorithm: k.algorithm.clone(),
            private_key: hex::encode(&k.private_key),
            public_key: hex::encode(&k.public_key),
            created: k.created,
        }
    }
}

impl SavedDkimKey {
    pub fn to_key(&self) -> Result<DkimKey> {
        let bad = |_| {
            BackupError::Damaged(format!(
                "DKIM key {} of {} is not hex",
                self.selector, self.domain
            ))
        };
        Ok(DkimKey {
            domain: self.domain.clone(),
            selector: self.selector.clone(),
            algorithm: self.algorithm.clone(),
            private_key: hex::decode(&self.private_key).map_err(bad)?,
            public_key: hex::decode(&self.public_key).map_err(bad)?,
            created: self.created,
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Trailer {
    pub accounts: u64,
    pub messages: u64,
    /// Sum of the messages' sizes (a body in several mailboxes counts each time).
    pub bytes: u64,
    /// Bodies written by this backup, and their original size.
    pub new_bodies: u64,
    pub new_bytes: u64,
    /// Every pack the snapshot needs, by name (the BLAKE3 of its content).
    pub packs: Vec<String>,
    /// Bodies the store could not give intact: their messages are in the metadata but cannot
    /// be restored from this backup.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub damaged: BTreeMap<BlobHash, String>,
}

/// A new snapshot ID: its time to the microsecond, so that IDs sort by age; always after
/// `newest` (the repository's newest ID), even if the clock went back.
pub fn new_id(now: time::OffsetDateTime, newest: Option<&str>) -> String {
    let format = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:6]Z"
    );
    let mut id = now.format(&format).unwrap_or_else(|_| "unknown".into());
    if let Some(newest) = newest.filter(|n| *n >= id.as_str()) {
        id = format!("{newest}+");
    }
    id
}

pub fn snapshot_path(repo: &Repository, id: &str) -> PathBuf {
    repo.snapshots().join(format!("{id}.snap"))
}

pub struct SnapshotWriter {
    tmp: PathBuf,
    path: PathBuf,
    out: zstd::Encoder<'static, BufWriter<File>>,
}

impl SnapshotWriter {
    pub fn create(repo: &Repository, id: &str) -> Result<SnapshotWriter> {
        let tmp = repo.tmp_file("snap");
        let file = File::create(&tmp).map_err(|e| BackupError::io(&tmp, e))?;
        let mut out =
            zstd::Encoder::new(BufWriter::new(file), 3).map_err(|e| BackupError::io(&tmp, e))?;
        out.include_checksum(true)
            .map_err(|e| BackupError::io(&tmp, e))?;
        Ok(SnapshotWriter {
            tmp,
            path: snapshot_path(repo, id),
            out,
        })
    }

    pub fn write(&mut self, line: &Line) -> Result<()> {
        serde_json::to_writer(&mut self.out, line)
            .map_err(|e| BackupError::io(&self.tmp, e.into()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| BackupError::io(&self.tmp, e))
    }

    /// Writes the trailer and puts the snapshot in place, durably.
    pub fn finish(mut self, trailer: Trailer) -> Result<()> {
        self.write(&Line::Trailer(trailer))?;
        let buffered = self
            .out
            .finish()
            .map_err(|e| BackupError::io(&self.tmp, e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| BackupError::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| BackupError::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| BackupError::io(&self.path, e))?;
        sync_dir(self.path.parent().expect("snapshots have a directory"))
    }
}

/// Reads a snapshot line by line; an error for a line that does not decode (damage) and for a
/// file that ends before its trailer.
pub struct SnapshotReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<zstd::Decoder<'static, BufReader<File>>>>,
    done: bool,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<SnapshotReader> {
        let file = File::open(path).map_err(|e| BackupError::io(path, e))?;
        let decoder = zstd::Decoder::new(file).map_err(|e| BackupError::io(path, e))?;
        Ok(SnapshotReader {
            path: path.to_path_buf(),
            lines: BufReader::new(decoder).lines(),
            done: false,
        })
    }
}

impl Iterator for SnapshotReader {
    type Item = Result<Line>;

    fn next(&mut self) -> Option<Result<Line>> {
        if self.done {
            return None;
        }
        let damaged = |what: String| {
            BackupError::Damaged(format!("snapshot {}: {what}", self.path.display()))
        };
        match self.lines.next() {
            None => {
                self.done = true;
                Some(Err(damaged("ends before its trailer".into())))
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(damaged(format!("does not decode: {e}"))))
            }
            Some(Ok(text)) => match serde_json::from_str::<Line>(&text) {
                Ok(line) => {
                    if matches!(line, Line::Trailer(_)) {
                        self.done = true;
                    }
                    Some(Ok(line))
                }
                Err(e) => {
                    self.done = true;
                    Some(Err(damaged(format!("a line does not parse: {e}"))))
                }
            },
        }
    }
}

/// The IDs of the repository's finished snapshots, oldest first.
pub fn list(repo: &Repository) -> Result<Vec<String>> {
    let dir = repo.snapshots();
    let mut ids = Vec::new();
    for f in std::fs::read_dir(&dir).map_err(|e| BackupError::io(&dir, e))? {
        let path = f.map_err(|e| BackupError::io(&dir, e))?.path();
        if path.extension().is_some_and(|e| e == "snap") {
            if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                ids.push(id.to_string());
            }
        }
    }
    ids.sort();
    Ok(ids)
}

/// A snapshot's header and trailer (reading it whole).
pub fn summary(repo: &Repository, id: &str) -> Result<(Header, Trailer)> {
    let mut header = None;
    for line in SnapshotReader::open(&snapshot_path(repo, id))? {
        match line? {
            Line::Header(h) => header = Some(h),
            Line::Trailer(t) => {
                let h = header
                    .ok_or_else(|| BackupError::Damaged(format!("snapshot {id} has no header")))?;
                return Ok((h, t));
            }
            _ => {}
        }
    }
    unreachable!("the reader ends with a trailer or an error")
}

/// The snapshot called `id`, or the newest one.
pub fn choose(repo: &Repository, id: Option<&str>) -> Result<String> {
    let ids = list(repo)?;
    match id {
        Some(id) if ids.iter().any(|i| i == id) => Ok(id.to_string()),
        Some(id) => Err(BackupError::NotFound(format!(
            "no snapshot {id} in the repository"
        ))),
        None => ids
            .last()
            .cloned()
            .ok_or_else(|| BackupError::NotFound("the repository has no snapshot yet".into())),
    }
}
