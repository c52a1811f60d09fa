//! The metadata and header copy of recently fetched messages, shared by the sessions of this
//! process, so that FETCHes of the same messages' headers (what a client does at every sync)
//! read and decode them from the store once.
//!
//! Keyed by body hash. What the store holds for a hash describes exactly those bytes and is
//! written once, never changed (metadata of an older parser is parsed again per FETCH, see
//! [`crate::fetch::for_session`]), so an entry cannot go stale, also when another process wrote
//! it. Sessions look up only hashes of messages in the mailbox they selected, which their
//! rights already let them read (G4).

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use trimaran_core::store::{BlobHash, MessageMeta};

/// What FETCH needs of a message besides its entry: the part tree, and the top-level header
/// block when the store has a copy of it.
pub struct Head {
    pub meta: MessageMeta,
    pub header: Option<Vec<u8>>,
}

/// Bytes of memory the cache may hold (estimated), for all sessions of the process.
const CAPACITY: u64 = 64 << 20;

#[derive(Clone)]
struct Size;

impl Weighter<BlobHash, Arc<Head>> for Size {
    fn weight(&self, _: &BlobHash, head: &Arc<Head>) -> u64 {
        // Roughly what the parsed tree takes: its strings are short, a part a few hundred bytes.
        let parts = head.meta.parts.len() as u64 * 320;
        256 + parts + head.header.as_ref().map_or(0, |h| h.len() as u64)
    }
}

pub struct HeadCache {
    heads: Cache<BlobHash, Arc<Head>, Size>,
}

impl Default for HeadCache {
    fn default() -> Self {
        HeadCache {
            // A typical header block is a few KiB.
            heads: Cache::with_weighter((CAPACITY / 4096) as usize, CAPACITY, Size),
        }
    }
}

impl HeadCache {
    pub fn get(&self, hash: &BlobHash) -> Option<Arc<Head>> {
        self.heads.get(hash)
    }

    pub fn put(&self, hash: BlobHash, head: Arc<Head>) {
        self.heads.insert(hash, head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_memory_bound_and_serves_what_it_keeps() {
        let cache = HeadCache::default();
        let head = |n: u8| {
            Arc::new(Head {
                meta: MessageMeta::default(),
                header: Some(vec![n; 64 * 1024]),
            })
        };
        // Twice the capacity in header copies.
        for n in 0..2048u32 {
            let hash = BlobHash::of(&n.to_be_bytes());
            cache.put(hash, head(n as u8));
            assert_eq!(
                cache.get(&hash).unwrap().header.as_ref().unwrap()[0],
                n as u8
            );
        }
        assert!(cache.heads.weight() <= CAPACITY, "{}", cache.heads.weight());
        assert!(cache.heads.len() < 2048);
    }
}
