//! Pack files: many bodies in one file, so that a repository of millions of messages is a few
//! hundred files, and a restore reads them in large sequential runs instead of opening a file
//! per message.
//!
//! A pack is `MAGIC` followed by records, each `hash (32) | compression (1) | size (8, LE) |
//! length (4, LE) | extra length (4, LE) | data | extra`: the body exactly as the store keeps
//! it (compressed or not), so a backup copies bytes without recompressing them, and the
//! store's parsed metadata of the message (see `create::encode_extra`), so a restore need not
//! parse it again. Records describe themselves, so a pack can be read without its index. A pack is named by the BLAKE3 of its whole content: a pack that
//! still hashes to its name is intact, record by record.
//!
//! Each pack has an index beside it (`.idx`): `IDX_MAGIC`, then one fixed-size entry per record
//! (hash, offset, length, size, compression), then the BLAKE3 of everything before it. It only
//! saves reading the packs when a backup or restore starts; a damaged one is rebuilt from its
//! pack.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use trimaran_store::{BlobHash, Compression, StoredBlob};

use crate::error::{BackupError, Result};

pub const MAGIC: &[u8; 8] = b"TRMPACK\x01";
pub const IDX_MAGIC: &[u8; 8] = b"TRMIDX\x01\x00";
const RECORD_HEADER: usize = 32 + 1 + 8 + 4 + 4;
const IDX_ENTRY: usize = 32 + 8 + 4 + 8 + 1 + 4;
/// No body is larger than this (the store refuses messages far smaller); a length beyond it
/// in a damaged record is not believed, so it cannot make a reader allocate gigabytes.
pub const MAX_RECORD: u64 = 1 << 30;

/// Where one body is in a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub offset: u64,
    pub length: u32,
    /// Length of the original bytes.
    pub size: u64,
    pub compression: Compression,
    /// Length of the record's extra part (0: none).
    pub extra: u32,
}

/// The BLAKE3 of a pack's whole content, which is also its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn parse(s: &str) -> Option<PackId> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(PackId(out))
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One record as the index (or a scan) lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub hash: BlobHash,
    pub offset: u64,
    pub length: u32,
    pub size: u64,
    pub compression: Compression,
    pub extra: u32,
}

impl Entry {
    pub fn location(&self, pack: PackId) -> Location {
        Location {
            pack,
            offset: self.offset,
            length: self.length,
            size: self.size,
            compression: self.compression,
            extra: self.extra,
        }
    }
}

/// A pack being written, under a temporary name until [`PackWriter::finish`].
pub struct PackWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    written: u64,
    entries: Vec<Entry>,
}

impl PackWriter {
    pub fn create(tmp: PathBuf) -> Result<PackWriter> {
        let file = File::create(&tmp).map_err(|e| BackupError::io(&tmp, e))?;
        let mut w = PackWriter {
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
            written: 0,
            entries: Vec::new(),
        };
        w.put(MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| BackupError::io(&self.tmp, e))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn add(&mut self, blob: &StoredBlob, extra: &[u8]) -> Result<()> {
        let offset = self.written;
        let mut header = [0u8; RECORD_HEADER];
        header[..32].copy_from_slice(&blob.hash.0);
        header[32] = blob.compression as i64 as u8;
        header[33..41].copy_from_slice(&blob.size.to_le_bytes());
        header[41..45].copy_from_slice(&(blob.data.len() as u32).to_le_bytes());
        header[45..49].copy_from_slice(&(extra.len() as u32).to_le_bytes());
        self.put(&header)?;
        self.put(&blob.data)?;
        self.put(extra)?;
        self.entries.push(Entry {
            hash: blob.hash,
            offset,
            length: blob.data.len() as u32,
            size: blob.size,
            compression: blob.compression,
            extra: extra.len() as u32,
        });
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes the pack durable under its name in `dir` (and its index beside it); returns its
    /// name and records.
    pub fn finish(mut self, dir: &Path) -> Result<(PackId, Vec<Entry>)> {
        self.out
            .flush()
            .map_err(|e| BackupError::io(&self.tmp, e))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| BackupError::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| BackupError::io(&self.tmp, e))?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        let path = pack_path(dir, &id);
        let parent = path.parent().expect("pack paths have a parent");
        std::fs::create_dir_all(parent).map_err(|e| BackupError::io(parent, e))?;
        // The index first: a pack without one is found by nobody but prune and verify, while
        // an index without its pack would promise bodies that are not there.
        write_index(&index_path(dir, &id), &self.entries)?;
        std::fs::rename(&self.tmp, &path).map_err(|e| BackupError::io(&path, e))?;
        crate::repo::sync_dir(parent)?;
        Ok((id, self.entries))
    }
}

pub fn pack_path(dir: &Path, id: &PackId) -> PathBuf {
    let hex = id.to_hex();
    dir.join(&hex[..2]).join(format!("{hex}.pack"))
}

pub fn index_path(dir: &Path, id: &PackId) -> PathBuf {
    let hex = id.to_hex();
    dir.join(&hex[..2]).join(format!("{hex}.idx"))
}

/// Writes the index of a pack again (after it was found damaged).
pub fn rewrite_index(dir: &Path, id: &PackId, entries: &[Entry]) -> Result<()> {
    write_index(&index_path(dir, id), entries)
}

fn write_index(path: &Path, entries: &[Entry]) -> Result<()> {
    let mut bytes = Vec::with_capacity(8 + entries.len() * IDX_ENTRY + 32);
    bytes.extend_from_slice(IDX_MAGIC);
    for e in entries {
        bytes.extend_from_slice(&e.hash.0);
        bytes.extend_from_slice(&e.offset.to_le_bytes());
        bytes.extend_from_slice(&e.length.to_le_bytes());
        bytes.extend_from_slice(&e.size.to_le_bytes());
        bytes.push(e.compression as i64 as u8);
        bytes.extend_from_slice(&e.extra.to_le_bytes());
    }
    let sum = *blake3::hash(&bytes).as_bytes();
    bytes.extend_from_slice(&sum);
    crate::repo::write_durably(path, &bytes)
}

/// The records of a pack from its index; None when the index is missing or damaged.
pub fn read_index(path: &Path) -> Option<Vec<Entry>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 8 + 32 || &bytes[..8] != IDX_MAGIC {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum || (body.len() - 8) % IDX_ENTRY != 0 {
        return None;
    }
    body[8..]
        .chunks_exact(IDX_ENTRY)
        .map(|c| {
            Some(Entry {
                hash: BlobHash(c[..32].try_into().ok()?),
                offset: u64::from_le_bytes(c[32..40].try_into().ok()?),
                length: u32::from_le_bytes(c[40..44].try_into().ok()?),
                size: u64::from_le_bytes(c[44..52].try_into().ok()?),
                compression: Compression::from_code(c[52] as i64).ok()?,
                extra: u32::from_le_bytes(c[53..57].try_into().ok()?),
            })
        })
        .collect()
}

/// Reads a pack's records from the pack itself, as far as they make sense: the index of a
/// pack whose own index is lost, and what survives of a damaged one. Also returns the pack's
/// BLAKE3, to compare with its name.
pub fn scan(path: &Path) -> Result<(Vec<Entry>, PackId)> {
    let mut file = File::open(path).map_err(|e| BackupError::io(path, e))?;
    let total = file.metadata().map_err(|e| BackupError::io(path, e))?.len();
    let mut hasher = blake3::Hasher::new();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &mut file);
    let mut magic = [0u8; 8];
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let intact = reader.read_exact(&mut magic).is_ok() && &magic == MAGIC;
    hasher.update(&magic);
    offset += 8;
    let mut data = Vec::new();
    while intact && offset + RECORD_HEADER as u64 <= total {
        let mut header = [0u8; RECORD_HEADER];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        hasher.update(&header);
        let length = u32::from_le_bytes(header[41..45].try_into().unwrap());
        let extra = u32::from_le_bytes(header[45..49].try_into().unwrap());
        let size = u64::from_le_bytes(header[33..41].try_into().unwrap());
        let compression = Compression::from_code(header[32] as i64);
        let span = length as u64 + extra as u64;
        let fits = offset + RECORD_HEADER as u64 + span <= total;
        let (Ok(compression), true, true) = (compression, fits, size <= MAX_RECORD) else {
            // Past a damaged header nothing says where the next record starts.
            break;
        };
        data.resize(span as usize, 0);
        if reader.read_exact(&mut data).is_err() {
            break;
        }
        hasher.update(&data);
        entries.push(Entry {
            hash: BlobHash(header[..32].try_into().unwrap()),
            offset,
            length,
            size,
            compression,
            extra,
        });
        offset += RECORD_HEADER as u64 + span;
    }
    // Whatever was not read still counts towards the pack's hash.
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .map_err(|e| BackupError::io(path, e))?;
    hasher.update(&rest);
    Ok((entries, PackId(*hasher.finalize().as_bytes())))
}

/// The BLAKE3 of a whole file.
pub fn hash_file(path: &Path) -> Result<PackId> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).map_err(|e| BackupError::io(path, e))?;
    hasher
        .update_reader(file)
        .map_err(|e| BackupError::io(path, e))?;
    Ok(PackId(*hasher.finalize().as_bytes()))
}

/// Reads bodies out of packs, keeping the files open.
#[derive(Default)]
pub struct PackReader {
    dir: PathBuf,
    open: HashMap<PackId, File>,
}

impl PackReader {
    pub fn new(dir: PathBuf) -> PackReader {
        PackReader {
            dir,
            open: HashMap::new(),
        }
    }

    /// The body at `loc`, as stored (check it with [`StoredBlob::decode_verified`]), and the
    /// record's extra part.
    pub fn read(&mut self, hash: BlobHash, loc: &Location) -> Result<(StoredBlob, Vec<u8>)> {
        if loc.length as u64 + loc.extra as u64 > MAX_RECORD {
            return Err(BackupError::Damaged(format!(
                "record of {hash} claims {} bytes",
                loc.length
            )));
        }
        let path = pack_path(&self.dir, &loc.pack);
        let file = match self.open.entry(loc.pack) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(File::open(&path).map_err(|e| BackupError::io(&path, e))?)
            }
        };
        let mut buf = vec![0u8; RECORD_HEADER + loc.length as usize + loc.extra as usize];
        file.seek(SeekFrom::Start(loc.offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| BackupError::io(&path, e))?;
        if buf[..32] != hash.0 {
            return Err(BackupError::Damaged(format!(
                "pack {} has another record where {hash} should be",
                loc.pack
            )));
        }
        let extra = buf.split_off(RECORD_HEADER + loc.length as usize);
        Ok((
            StoredBlob {
                hash,
                size: loc.size,
                compression: loc.compression,
                data: buf.split_off(RECORD_HEADER),
            },
            extra,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_packs_read_back_by_index_and_by_scan() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path().join("x.tmp")).unwrap();
        let blobs: Vec<StoredBlob> = (0..50)
            .map(|i| {
                StoredBlob::encode(format!("Subject: {i}\r\n\r\n{}", "x".repeat(i * 40)).as_bytes())
            })
            .collect();
        for (i, b) in blobs.iter().enumerate() {
            w.add(b, &vec![i as u8; i]).unwrap();
        }
        let (id, entries) = w.finish(dir.path()).unwrap();
        assert_eq!(hash_file(&pack_path(dir.path(), &id)).unwrap(), id);
        assert_eq!(read_index(&index_path(dir.path(), &id)).unwrap(), entries);
        let (scanned, sum) = scan(&pack_path(dir.path(), &id)).unwrap();
        assert_eq!((scanned, sum), (entries.clone(), id));
        let mut r = PackReader::new(dir.path().to_path_buf());
        for (i, (b, e)) in blobs.iter().zip(&entries).enumerate() {
            let (got, extra) = r.read(b.hash, &e.location(id)).unwrap();
            assert_eq!(got.decode_verified().unwrap(), b.decode_verified().unwrap());
            assert_eq!(extra, vec![i as u8; i]);
        }
    }

    #[test]
    fn damaged_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path().join("x.tmp")).unwrap();
        w.add(&StoredBlob::encode(b"Subject: a\r\n\r\nb\r\n"), b"")
            .unwrap();
        let (id, _) = w.finish(dir.path()).unwrap();
        let idx = index_path(dir.path(), &id);
        let mut bytes = std::fs::read(&idx).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&idx, bytes).unwrap();
        assert!(read_index(&idx).is_none());
    }
}
