//! Content-addressed message bodies: BLAKE3 names them, zstd shrinks them, and every read
//! re-hashes them so that corruption is reported instead of served (DESIGN.md G5).

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::error::{Result, StoreError};

/// The BLAKE3 hash of the exact bytes of a body.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    pub fn of(bytes: &[u8]) -> Self {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

impl FromStr for BlobHash {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| StoreError::Invalid(format!("not a BLAKE3 hex hash: {s:?}")))?;
        Ok(BlobHash(out))
    }
}

/// As its hex form, the way people and other tools see it.
impl serde::Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How the bytes of a blob are encoded at rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_code(code: i64) -> Result<Self> {
        match code {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            other => Err(StoreError::Internal(format!(
                "unknown blob compression code {other}"
            ))),
        }
    }
}

/// A blob as it sits in a back end.
#[derive(Clone, Debug)]
pub struct StoredBlob {
    pub hash: BlobHash,
    /// Length of the original bytes.
    pub size: u64,
    pub compression: Compression,
    pub data: Vec<u8>,
}

/// zstd level 3: most of the gain of higher levels on mail text at a fraction of the CPU.
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    // zstd contexts kept per thread: making one for every body cost more than compressing a
    // typical message (its tables are allocated, zeroed and unmapped each time).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// zstd-compresses `raw` at `level` with this thread's context.
pub fn zstd_compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let c = match &mut *c {
            Some(c) => c,
            none => none.insert(zstd::bulk::Compressor::new(level)?),
        };
        c.set_compression_level(level)?;
        c.compress(raw)
    })
}

/// Decompresses one zstd frame of at most `capacity` bytes with this thread's context.
pub fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let d = match &mut *d {
            Some(d) => d,
            none => none.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(data, capacity)
    })
}

impl StoredBlob {
    /// Hash and compress `raw`. Compression is kept only when it saves at least an eighth, so that
    /// already-compressed attachments are not paid for twice on every read.
    pub fn encode(raw: &[u8]) -> Self {
        let hash = BlobHash::of(raw);
        let size = raw.len() as u64;
        match zstd_compress(raw, ZSTD_LEVEL) {
            Ok(packed) if packed.len() + raw.len() / 8 < raw.len() => StoredBlob {
                hash,
                size,
                compression: Compression::Zstd,
                data: packed,
            },
            _ => StoredBlob {
                hash,
                size,
                compression: Compression::None,
                data: raw.to_vec(),
            },
        }
    }

    /// The original bytes, only if they hash to the blob's name.
    pub fn decode_verified(&self) -> Result<Vec<u8>> {
        let corrupt = |detail: String| StoreError::Corrupt {
            hash: self.hash.to_hex(),
            detail,
        };
        let raw = match self.compression {
            Compression::None => self.data.clone(),
            Compression::Zstd => {
                // The capacity bound is the recorded size, so a damaged frame cannot make us
                // allocate more than the message itself.
                let raw = zstd_decompress(&self.data, self.size as usize)
                    .map_err(|e| corrupt(format!("zstd frame does not decode: {e}")))?;
                raw
            }
        };
        if raw.len() as u64 != self.size {
            return Err(corrupt(format!(
                "length {} differs from recorded {}",
                raw.len(),
                self.size
            )));
        }
        let actual = BlobHash::of(&raw);
        if actual != self.hash {
            return Err(corrupt(format!("content hashes to {actual}")));
        }
        Ok(raw)
    }
}

/// Where message bodies live. The SQL back ends implement it inside their own database; an
/// object-store back end (S3) can implement it outside. Writes are idempotent: a body is named
/// by its hash, so writing it twice stores it once.
#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put_blob(&self, blob: &StoredBlob) -> Result<()>;
    async fn get_blob(&self, hash: &BlobHash) -> Result<Option<StoredBlob>>;
    /// Writes a body over whatever is stored under its hash (repairing a damaged copy from a
    /// good one). The caller has checked `blob` against its hash.
    async fn replace_blob(&self, blob: &StoredBlob) -> Result<()>;
    /// True when a body can be written inside the same transaction as the metadata that refers
    /// to it (one commit, one fsync). False for external stores, which are written first.
    fn shares_metadata_transaction(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_compressible_and_not() {
        let text = b"Subject: hi\r\n\r\n".repeat(200);
        let blob = StoredBlob::encode(&text);
        assert_eq!(blob.compression, Compression::Zstd);
        assert_eq!(blob.decode_verified().unwrap(), text);

        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let blob = StoredBlob::encode(&noise);
        assert_eq!(blob.decode_verified().unwrap(), noise);
    }

    #[test]
    fn flipped_byte_is_detected() {
        let text = b"hello world, hello world, hello world".repeat(50);
        for compression in [true, false] {
            let mut blob = StoredBlob::encode(&text);
            if !compression {
                blob.compression = Compression::None;
                blob.data = text.clone();
            }
            let mid = blob.data.len() / 2;
            blob.data[mid] ^= 0x01;
            let err = blob.decode_verified().unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn valid_frame_of_other_content_is_detected() {
        let original = StoredBlob::encode(&b"original body ".repeat(100));
        let other = StoredBlob::encode(&b"original bodY ".repeat(100));
        let forged = StoredBlob {
            data: other.data,
            ..original
        };
        assert!(matches!(
            forged.decode_verified(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
