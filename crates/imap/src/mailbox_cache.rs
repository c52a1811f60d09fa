//! The message lists of recently selected mailboxes, shared by the sessions of this process,
//! so that SELECT of an unchanged mailbox does not read every entry from the store again.
//!
//! A list is used only when the mailbox's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, read from
//! the store at every SELECT, are those it was loaded at. Every change to a mailbox's messages
//! (new message, flags, expunge) raises its HIGHESTMODSEQ (RFC 7162 §3.1.1, which CONDSTORE
//! clients already rely on), so a cached list is never stale, also when another process on the
//! same store made the change. A list read after its version was read may be newer than that
//! version; it is then never used, since the version seen by a later SELECT is newer still.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use trimaran_core::store::{MailboxId, MailboxRecord, MessageEntry};

/// Most message entries kept in all (about 100 bytes each).
const MAX_ENTRIES: usize = 500_000;

type Version = (u32, u32, u64);

fn version(record: &MailboxRecord) -> Version {
    (record.uidvalidity, record.uidnext, record.highestmodseq)
}

#[derive(Default)]
pub struct MailboxCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    lists: HashMap<MailboxId, (Version, Arc<Vec<MessageEntry>>)>,
    /// Oldest first, for eviction.
    order: VecDeque<MailboxId>,
    entries: usize,
}

impl MailboxCache {
    /// The mailbox's messages, if they are cached at the record's version.
    pub fn get(&self, record: &MailboxRecord) -> Option<Arc<Vec<MessageEntry>>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.lists.get(&record.id) {
            Some((v, list)) if *v == version(record) => Some(list.clone()),
            _ => None,
        }
    }

    /// Keeps the mailbox's messages, as read after `record` was.
    pub fn put(&self, record: &MailboxRecord, messages: Arc<Vec<MessageEntry>>) {
        if messages.len() > MAX_ENTRIES / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *inner;
        if let Some((_, old)) = inner.lists.remove(&record.id) {
            inner.entries -= old.len();
            inner.order.retain(|id| *id != record.id);
        }
        inner.entries += messages.len();
        inner.lists.insert(record.id, (version(record), messages));
        inner.order.push_back(record.id);
        while inner.entries > MAX_ENTRIES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, old)) = inner.lists.remove(&oldest) {
                inner.entries -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trimaran_core::store::BlobHash;

    fn record(id: MailboxId, modseq: u64) -> MailboxRecord {
        MailboxRecord {
            id,
            account_id: 1,
            name: "INBOX".into(),
            special_use: None,
            uidvalidity: 7,
            uidnext: 3,
            highestmodseq: modseq,
        }
    }

    fn list(n: usize) -> Arc<Vec<MessageEntry>> {
        Arc::new(
            (0..n)
                .map(|i| MessageEntry {
                    uid: i as u32 + 1,
                    hash: BlobHash([0; 32]),
                    size: 1,
                    internal_date: 0,
                    flags: 0,
                    keywords: Vec::new(),
                    modseq: 1,
                })
                .collect(),
        )
    }

    #[test]
    fn used_only_at_the_same_version_and_bounded() {
        let cache = MailboxCache::default();
        cache.put(&record(1, 5), list(2));
        assert_eq!(cache.get(&record(1, 5)).map(|l| l.len()), Some(2));
        assert!(cache.get(&record(1, 6)).is_none());
        assert!(cache.get(&record(2, 5)).is_none());
        let mut other = record(1, 5);
        other.uidvalidity = 8;
        assert!(cache.get(&other).is_none());
        // Filling past the bound drops the oldest lists first.
        for id in 10..20 {
            cache.put(&record(id, 1), list(MAX_ENTRIES / 8));
        }
        assert!(cache.get(&record(1, 5)).is_none());
        assert!(cache.get(&record(19, 1)).is_some());
        let inner = cache.inner.lock().unwrap();
        assert!(inner.entries <= MAX_ENTRIES);
        assert_eq!(
            inner.entries,
            inner.lists.values().map(|l| l.1.len()).sum::<usize>()
        );
    }
}
