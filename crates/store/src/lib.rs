//! The store: all of Trimaran's state. Metadata lives in SQL (SQLite embedded, PostgreSQL for
//! clusters) behind [`MetaStore`]; message bodies live behind [`BlobStore`], by default in the
//! same database. [`Store`] ties the two together and owns the rules both must follow:
//! bodies are written before (or with) the metadata that names them, and verified on every read.

pub mod blob;
pub mod error;
pub mod invariants;
mod migrate;
pub mod postgres;
pub mod s3;
pub mod search;
pub mod sqlite;
pub mod types;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

pub use blob::{BlobHash, BlobStore, Compression, StoredBlob};
pub use error::{Result, StoreError};
pub use search::{IndexedText, SearchText, TextParts, TextQuery};
pub use types::*;

/// The outbound queue, part of the metadata store (each back end's `queue.rs`).
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Every recipient in the outbound queue, oldest message first.
    async fn queue_list(&self) -> Result<Vec<QueueRecord>>;
    /// Leases up to `limit` pending recipients that are due at `now` and not leased by a live
    /// holder to `owner` until `until`, whole messages first: a process that dies leaves its
    /// work to whoever claims after the lease runs out.
    async fn queue_claim(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<QueueRecord>>;
    /// Extends `owner`'s leases on these recipients; returns how many it still held.
    async fn queue_renew(&self, owner: &str, recipients: &[i64], until: i64) -> Result<u64>;
    /// Records attempts. A success is recorded even if the lease was lost meanwhile (it
    /// happened; forgetting it would send again); a retry or failure only while `owner` holds
    /// the lease, so it never overrides the newer holder's result.
    async fn queue_settle(&self, owner: &str, now: i64, outcomes: &[QueueOutcome]) -> Result<()>;
    /// Recipients whose report is due: settled ones (any status but pending), and pending ones
    /// not yet reported as delayed whose clock started before `delayed_since`.
    async fn queue_reports_due(&self, delayed_since: i64, limit: usize)
        -> Result<Vec<QueueRecord>>;
    /// After their reports: removes the settled recipients (and messages left with none) and
    /// marks the delayed ones as reported.
    async fn queue_reported(&self, settled: &[i64], delayed: &[i64]) -> Result<()>;
    /// Makes a queued message's pending recipients (or, with `None`, every pending recipient)
    /// due at `now`, held or not (`queue retry`); returns how many.
    async fn queue_release(&self, queue_id: Option<i64>, now: i64) -> Result<u64>;
    /// Removes a queued message and its recipients (`queue delete`); returns the recipients
    /// removed.
    async fn queue_delete(&self, queue_id: i64) -> Result<u64>;
}

/// The metadata half of the store. Every method is one transaction; a method that returns an
/// error has changed nothing.
#[async_trait]
pub trait MetaStore: QueueStore + Send + Sync {
    /// Schema version the store is at (after migrations).
    async fn schema_version(&self) -> Result<i64>;

    async fn add_domain(&self, name: &str) -> Result<DomainId>;
    /// Refuses while accounts or aliases of the domain exist.
    async fn remove_domain(&self, name: &str) -> Result<()>;
    async fn list_domains(&self) -> Result<Vec<String>>;
    async fn domain_exists(&self, name: &str) -> Result<bool>;

    /// Stores a DKIM key of an existing domain (`NotFound` otherwise); `AlreadyExists` when the
    /// domain has a key under that selector. `created` is set by the store.
    async fn add_dkim_key(&self, key: &DkimKey) -> Result<()>;
    /// The DKIM keys of every domain, by domain then selector.
    async fn dkim_keys(&self) -> Result<Vec<DkimKey>>;

    /// Creates the account and its default mailboxes ([`DEFAULT_MAILBOXES`]) in one transaction.
    async fn add_account(&self, address: &str, password_hash: &str) -> Result<AccountId>;
    /// Removes the account, its mailboxes and their message entries. Bodies shared with other
    /// accounts stay; unreferenced ones are left for garbage collection.
    async fn remove_account(&self, address: &str) -> Result<()>;
    async fn list_accounts(&self) -> Result<Vec<String>>;
    async fn set_password(&self, address: &str, password_hash: &str) -> Result<()>;
    async fn account_by_address(&self, address: &str) -> Result<Option<AccountRecord>>;

    async fn add_alias(&self, address: &str, target: &str) -> Result<()>;
    /// Removes one target, or every target of the alias when `target` is `None`.
    async fn remove_alias(&self, address: &str, target: Option<&str>) -> Result<()>;
    async fn list_aliases(&self) -> Result<Vec<(String, String)>>;
    async fn alias_targets(&self, address: &str) -> Result<Vec<String>>;

    /// Commits a message: its body (when `write_blob`), its parsed metadata, one entry per local
    /// recipient in that account's INBOX with a fresh UID and MODSEQ, and the outbound queue
    /// entries. All or nothing.
    async fn deliver(&self, delivery: Arc<Delivery>, write_blob: bool) -> Result<DeliveryReceipt>;

    async fn mailboxes(&self, account: AccountId) -> Result<Vec<MailboxRecord>>;
    /// Messages of one mailbox, or of every mailbox, in mailbox then UID order.
    async fn list_messages(
        &self,
        account: AccountId,
        mailbox: Option<&str>,
    ) -> Result<Vec<MessageRecord>>;
    async fn find_message(
        &self,
        account: AccountId,
        mailbox: &str,
        uid: u32,
    ) -> Result<Option<MessageRecord>>;
    async fn message_meta(&self, hash: &BlobHash) -> Result<Option<MessageMeta>>;
    /// The parsed metadata of many messages at once (SORT, THREAD); unknown hashes are left out.
    async fn message_metas(&self, hashes: &[BlobHash]) -> Result<Vec<(BlobHash, MessageMeta)>>;
    /// Metadata and the copied header block (see [`NewMessage::header`]) of many messages at
    /// once; messages without metadata are left out.
    async fn message_heads(
        &self,
        hashes: &[BlobHash],
    ) -> Result<Vec<(BlobHash, MessageMeta, Option<Vec<u8>>)>>;

    /// Removes messages from a mailbox (POP3 DELE at QUIT, IMAP EXPUNGE) in one transaction:
    /// one MODSEQ for the operation, one `expunge` change per message. UIDs already gone are
    /// skipped, so a concurrent removal is not an error. Returns the UIDs removed.
    async fn expunge(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<u32>>;

    /// Creates a mailbox with a fresh UIDVALIDITY. `AlreadyExists` if the name is taken.
    async fn create_mailbox(
        &self,
        account: AccountId,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<MailboxRecord>;
    /// Deletes a mailbox and its message entries. `Invalid` for INBOX or while it has children.
    async fn delete_mailbox(&self, account: AccountId, name: &str) -> Result<()>;
    /// Renames a mailbox and every mailbox below it ("from/..."), with their subscriptions.
    /// `AlreadyExists` if a target name is taken. Not for INBOX (see the IMAP RENAME command).
    async fn rename_mailbox(&self, account: AccountId, from: &str, to: &str) -> Result<()>;
    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>>;
    async fn set_subscribed(&self, account: AccountId, name: &str, subscribed: bool) -> Result<()>;

    /// The mailbox's current record; `NotFound` once it has been deleted.
    async fn mailbox(&self, account: AccountId, mailbox: MailboxId) -> Result<MailboxRecord>;
    async fn mailbox_counts(&self, mailbox: MailboxId) -> Result<MailboxCounts>;
    /// Every message of a mailbox in UID order.
    async fn mailbox_entries(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>>;
    /// Messages added or changed, and UIDs removed, after MODSEQ `since`.
    async fn mailbox_delta(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<MailboxDelta>;

    /// Adds messages to a mailbox (IMAP APPEND, also MULTIAPPEND: all or none, RFC 3502).
    async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<AppendRequest>>,
        write_blob: bool,
    ) -> Result<Vec<Appended>>;
    /// Changes flags of the given UIDs under one new MODSEQ; unchanged messages keep theirs.
    async fn update_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[u32],
        change: &FlagChange,
    ) -> Result<FlagOutcome>;
    /// Copies messages (same bodies, flags and internal dates) to another mailbox, of the same
    /// account or, for a mailbox shared with ACL, of another; with `remove_source` the
    /// originals go in the same transaction (RFC 6851 MOVE). The target account's quota applies.
    async fn copy_messages(
        &self,
        from: (AccountId, MailboxId),
        uids: &[u32],
        to: (AccountId, MailboxId),
        remove_source: bool,
    ) -> Result<CopyOutcome>;

    /// RFC 4314 sharing: `grantee` (an account's address) gets `rights` on a mailbox of
    /// `owner`, or loses them all with None. The owner's own rights are not stored.
    async fn set_acl(
        &self,
        owner: AccountId,
        mailbox: MailboxId,
        grantee: &str,
        rights: Option<&str>,
    ) -> Result<()>;
    /// (grantee address, rights) for a mailbox of `owner`.
    async fn mailbox_acl(
        &self,
        owner: AccountId,
        mailbox: MailboxId,
    ) -> Result<Vec<(String, String)>>;
    /// The mailboxes of other accounts that `grantee` holds rights on.
    async fn shared_with(&self, grantee: AccountId) -> Result<Vec<SharedMailbox>>;

    /// Takes or renews the exclusive lease on an account's maildrop for `holder` until `until`
    /// (seconds since the epoch). False when another holder's lease has not expired.
    async fn lease_maildrop(&self, account: AccountId, holder: &str, until: i64) -> Result<bool>;
    /// Gives the lease up, if `holder` still has it.
    async fn release_maildrop(&self, account: AccountId, holder: &str) -> Result<()>;

    /// Forgets delivery ids older than `before` (seconds since the epoch); returns how many.
    /// They only need to outlive the retries of one delivery.
    async fn prune_delivery_ids(&self, before: i64) -> Result<u64>;

    /// Remembers that a body failed verification, so that operators and the scrub see it.
    async fn record_corruption(&self, hash: &BlobHash, detail: &str) -> Result<()>;

    /// The account's quota and current usage.
    async fn quota(&self, account: AccountId) -> Result<Quota>;
    /// Sets (or with None removes) the account's limits.
    async fn set_quota(
        &self,
        address: &str,
        storage: Option<u64>,
        messages: Option<u64>,
    ) -> Result<()>;

    /// Everything of one account a backup keeps, read in one transaction; None when there is
    /// no such account.
    async fn account_snapshot(&self, address: &str) -> Result<Option<AccountSnapshot>>;
    /// Puts messages back into a mailbox (backup restore), in UID order: each keeps its UID
    /// while that is still free by [`restored_uids`], so restoring next to mail that arrived
    /// since never reuses a UID. No quota applies: this is an operator's repair.
    async fn restore_messages(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<RestoreRequest>>,
        write_blob: bool,
    ) -> Result<Vec<Appended>>;
    /// Before a restore into it: gives the mailbox `uidvalidity` if it has never held a
    /// message (so no client can have seen a UID under its current one), and raises its
    /// UIDNEXT to at least `uidnext`. Returns the mailbox as it is then.
    async fn restore_mailbox_state(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uidvalidity: Option<u32>,
        uidnext: u32,
    ) -> Result<MailboxRecord>;

    /// Distinct hashes of the bodies that messages or the outbound queue refer to, in hash
    /// order, after `after`.
    async fn referenced_hashes(
        &self,
        after: Option<BlobHash>,
        limit: usize,
    ) -> Result<Vec<BlobHash>>;
    /// Checks the metadata invariants (see [`invariants`]); with `repair`, fixes those that
    /// have a safe repair, in the same transaction.
    async fn check_invariants(&self, repair: bool) -> Result<Vec<Invariant>>;
    /// Removes up to `limit` bodies kept in this database that no message or queue entry
    /// refers to and that were first written before `before`. Never one a delivery in flight
    /// is about to refer to: a delivery locks the body it stores (or finds) until it commits.
    async fn collect_garbage(&self, before: i64, limit: usize) -> Result<Collected>;

    /// Starts passing on changes made by other processes on the same store, or a notice for
    /// [`ALL_ACCOUNTS`] when some may have been missed. A store with one process has nothing
    /// to do.
    fn start_change_feed(&self, _feed: tokio::sync::broadcast::Sender<Change>) {}

    /// Messages (of any account: the caller keeps its mailbox's), by [`search::index_key`],
    /// whose indexed text answers `query`: exactly the messages containing its needle when
    /// [`TextQuery::is_exact`], otherwise candidates to check against their text.
    async fn search_index(&self, query: &TextQuery) -> Result<Vec<i64>>;
    /// Messages the index cannot answer for (not indexed yet, or too long to index whole),
    /// which every text search must check against their text.
    async fn search_unindexed(&self) -> Result<Vec<BlobHash>>;
    /// The stored search text of these messages (only `parts` of it); those without one are
    /// left out.
    async fn search_texts(
        &self,
        hashes: &[BlobHash],
        parts: TextParts,
    ) -> Result<Vec<(BlobHash, SearchText)>>;
    /// Up to `limit` messages not in the text index yet, with their stored text if they have
    /// one (messages stored before the index existed have none).
    async fn search_backlog(&self, limit: usize) -> Result<Vec<(BlobHash, Option<SearchText>)>>;
    /// Puts a message of the backlog into the index (storing `text` if it had none). Doing it
    /// twice, or in two processes at once, indexes it once.
    async fn index_backlogged(&self, hash: &BlobHash, text: &IndexedText) -> Result<()>;
    /// Moves index entries written since the last call to where searches find them fastest,
    /// while nothing is waiting to be indexed. Cheap when there is nothing to move.
    async fn tidy_search_index(&self) -> Result<()>;
}

/// A change notice meaning "any account may have changed" (after a lost connection).
pub const ALL_ACCOUNTS: AccountId = -1;

/// A change notice: an account's mail changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub account: AccountId,
    /// The account MODSEQ the change committed under, when it was one write of messages'
    /// flags, entries or mailboxes that all carry it. A session that has seen the account at
    /// that MODSEQ or later already shows it (each account's MODSEQs are handed out under its
    /// row lock, so in commit order). None: anything else, or not known.
    pub modseq: Option<u64>,
}

impl Change {
    pub fn of(account: AccountId) -> Change {
        Change {
            account,
            modseq: None,
        }
    }
}

/// Which back end, parsed from `sqlite:PATH` or `postgres://...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(StoreError::Invalid("sqlite: URL without a path".into()));
            }
            Ok(StoreUrl::Sqlite(path.into()))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(s.to_string()))
        } else {
            Err(StoreError::Invalid(format!(
                "unknown store URL {s:?}: expected sqlite:PATH or postgres://..."
            )))
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            // Never print a password that may be in the URL.
            StoreUrl::Postgres(url) => match url.split_once('@') {
                Some((creds, host)) if creds.contains(':') && creds.matches(':').count() > 1 => {
                    let user_end = creds.rfind(':').unwrap_or(creds.len());
                    write!(f, "{}:***@{host}", &creds[..user_end])
                }
                _ => f.write_str(url),
            },
        }
    }
}

/// The store as the rest of Trimaran sees it.
pub struct Store {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    corrupt_reads: AtomicU64,
    /// Accounts whose mail changed, for sessions waiting in IMAP IDLE.
    changes: tokio::sync::broadcast::Sender<Change>,
}

/// What [`Store::read_blob`] records when a body named by metadata does not exist.
const MISSING_BODY: &str = "the body is missing";

/// Change notices buffered per listener; one that falls behind re-reads its mailbox anyway.
const CHANGE_BACKLOG: usize = 1024;

impl Store {
    /// Opens the back end named by `url`, applying schema migrations; bodies live in it too.
    pub async fn open(url: &StoreUrl) -> Result<Arc<Store>> {
        Store::open_with_blobs(url, None).await
    }

    /// Opens the back end named by `url`, with bodies in the object store `blobs` when given,
    /// else in the same database.
    pub async fn open_with_blobs(
        url: &StoreUrl,
        blobs: Option<&s3::S3Config>,
    ) -> Result<Arc<Store>> {
        // Before the database, so that a bad blob configuration is reported as such.
        let external = blobs.map(s3::open).transpose()?;
        Ok(match url {
            StoreUrl::Sqlite(path) => {
                Store::assemble(Arc::new(sqlite::SqliteStore::open(path).await?), external)
            }
            StoreUrl::Postgres(url) => Store::assemble(
                Arc::new(postgres::PostgresStore::open(url).await?),
                external,
            ),
        })
    }

    /// A store on `backend`, with bodies in `external` when given, else in `backend` too.
    pub(crate) fn assemble<B: MetaStore + BlobStore + 'static>(
        backend: Arc<B>,
        external: Option<Arc<dyn BlobStore>>,
    ) -> Arc<Store> {
        let bodies = external.unwrap_or_else(|| backend.clone());
        Arc::new(Store::new(backend, bodies))
    }

    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>) -> Store {
        let changes = tokio::sync::broadcast::channel(CHANGE_BACKLOG).0;
        meta.start_change_feed(changes.clone());
        Store {
            meta,
            blobs,
            corrupt_reads: AtomicU64::new(0),
            changes,
        }
    }

    pub fn meta(&self) -> &dyn MetaStore {
        self.meta.as_ref()
    }

    /// Commits a delivery. With an external blob store the body is written first: a crash
    /// between the two leaves an unreferenced body (collected later), never a reference to a
    /// missing one.
    pub async fn deliver(&self, delivery: Arc<Delivery>) -> Result<DeliveryReceipt> {
        let shared = self.blobs.shares_metadata_transaction();
        if !shared {
            for message in delivery.messages() {
                self.blobs.put_blob(&message.blob).await?;
            }
        }
        let receipt = self.meta.deliver(delivery, shared).await?;
        for copy in &receipt.copies {
            self.changed(copy.account_id);
        }
        Ok(receipt)
    }

    /// Adds messages to a mailbox (IMAP APPEND), bodies first as in [`Store::deliver`].
    pub async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<AppendRequest>>,
    ) -> Result<Vec<Appended>> {
        let shared = self.blobs.shares_metadata_transaction();
        if !shared {
            for m in messages.iter() {
                self.blobs.put_blob(&m.message.blob).await?;
            }
        }
        let appended = self.meta.append(account, mailbox, messages, shared).await?;
        self.changed(account);
        Ok(appended)
    }

    /// Puts messages back into a mailbox (backup restore; see
    /// [`MetaStore::restore_messages`]), bodies first as in [`Store::deliver`].
    pub async fn restore_messages(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<RestoreRequest>>,
    ) -> Result<Vec<Appended>> {
        let shared = self.blobs.shares_metadata_transaction();
        if !shared {
            for m in messages.iter() {
                self.blobs.put_blob(&m.append.message.blob).await?;
            }
        }
        let restored = self
            .meta
            .restore_messages(account, mailbox, messages, shared)
            .await?;
        self.changed(account);
        Ok(restored)
    }

    /// Where the bodies are, for tools that copy them as stored (backup) instead of reading
    /// them through [`Store::read_blob`].
    pub fn blobs(&self) -> &dyn BlobStore {
        self.blobs.as_ref()
    }

    /// Tells this process's waiting sessions that an account's mail changed.
    pub fn changed(&self, account: AccountId) {
        self.announce(Change::of(account));
    }

    /// Tells this process's waiting sessions of a change.
    pub fn announce(&self, change: Change) {
        // No receivers is not an error: nobody is waiting.
        let _ = self.changes.send(change);
    }

    /// Notices of changed accounts, from this process's writes and (PostgreSQL) other
    /// processes'.
    pub fn watch(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The exact bytes of a body, verified against their hash. A mismatch is logged, counted,
    /// recorded in the store and returned as [`StoreError::Corrupt`]; the bytes never are.
    pub async fn read_blob(&self, hash: &BlobHash) -> Result<Vec<u8>> {
        let verified = match self.blobs.get_blob(hash).await {
            Ok(Some(stored)) => stored.decode_verified(),
            // Metadata names this body, so its absence is damage to the store, not a client
            // mistake: a temporary failure for the client, recorded for the operator.
            Ok(None) => Err(StoreError::Corrupt {
                hash: hash.to_hex(),
                detail: MISSING_BODY.into(),
            }),
            // An object store's object that is not a blob at all.
            Err(err @ StoreError::Corrupt { .. }) => Err(err),
            Err(err) => return Err(err),
        };
        match verified {
            Ok(bytes) => Ok(bytes),
            Err(err) => {
                self.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                let detail = match &err {
                    StoreError::Corrupt { detail, .. } if detail == MISSING_BODY => {
                        tracing::error!(%hash, "a stored message's body is missing");
                        MISSING_BODY.to_string()
                    }
                    _ => {
                        tracing::error!(%hash, error = %err, "stored body failed verification; not served");
                        err.to_string()
                    }
                };
                if let Err(e) = self.meta.record_corruption(hash, &detail).await {
                    tracing::warn!(%hash, error = %e, "could not record the corruption");
                }
                Err(err)
            }
        }
    }

    /// Bodies that failed verification since this process started.
    pub fn corrupt_reads(&self) -> u64 {
        self.corrupt_reads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(matches!(
            "postgres://u@h/db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert!("mysql://x".parse::<StoreUrl>().is_err());
        let shown = "postgres://u:secret@h/db"
            .parse::<StoreUrl>()
            .unwrap()
            .to_string();
        assert!(!shown.contains("secret"), "{shown}");
    }
}
