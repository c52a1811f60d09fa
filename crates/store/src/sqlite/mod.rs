//! The embedded back end: one SQLite database file holds metadata and bodies.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit has reached the disk before it
//! returns. Writes go through [`writer::Writer`] (one thread, group commit); reads use a small
//! pool of connections, which WAL lets run beside the writer. A store restored where none
//! exists is built without the WAL and made durable once, before any server can open it
//! ([`SqliteBuild`]).

mod build;
mod queue;
mod writer;

pub use build::SqliteBuild;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::blob::{BlobHash, BlobStore, Compression, StoredBlob};
use crate::error::{Result, StoreError};
use crate::migrate;
use crate::search::{IndexedText, SearchText, TextParts, TextQuery};
use crate::types::*;
use crate::MetaStore;
use writer::Writer;

pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
    /// Bounds concurrent reads: past a few, more connections only add contention, and a burst
    /// of lookups must not open a connection per blocking thread.
    read_slots: Arc<tokio::sync::Semaphore>,
}

/// Reads running at once.
const MAX_CONCURRENT_READS: usize = 16;

struct Readers {
    path: PathBuf,
    journal: Journal,
    idle: Mutex<Vec<Connection>>,
}

/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = MAX_CONCURRENT_READS;

impl Readers {
    fn take(&self) -> Result<Connection> {
        let idle = self.idle.lock().expect("reader pool lock").pop();
        match idle {
            Some(conn) => Ok(conn),
            None => open_connection(&self.path, self.journal),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// How a database's connections journal their writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Journal {
    /// A store in service: WAL, every commit on disk before it returns (G1).
    Durable,
    /// A database no server can see yet ([`SqliteBuild`]): the rollback journal in memory and
    /// no fsync per commit. Every page is written once, to the database file, instead of to
    /// the WAL and again to the database; the whole file is made durable once, at the end,
    /// before it is put in place. A crash meanwhile can leave the file inconsistent, which is
    /// why it is only ever used where a crash means starting over. (MEMORY rather than OFF:
    /// a job that fails rolls its savepoint back, which needs a journal.)
    Unpublished,
}

/// Opens a connection with the settings every connection needs.
pub(crate) fn open_connection(path: &Path, journal: Journal) -> Result<Connection> {
    let conn = Connection::open(path).map_err(map_err)?;
    // synchronous=FULL: with WAL, NORMAL could lose the last commits on power loss; G1 forbids it.
    // An unpublished database has no WAL, so readers and the writer lock each other out: a
    // reader there waits for a commit however long it takes (nobody interactive is waiting)
    // rather than fail the whole build.
    let (mode, synchronous, busy_ms) = match journal {
        Journal::Durable => ("WAL", "FULL", 10_000),
        Journal::Unpublished => ("MEMORY", "OFF", 600_000),
    };
    // mmap_size: reads come straight from the kernel's page cache, shared by every connection,
    // instead of a pread and a copy into each connection's small private cache (that was most
    // of the CPU of a header FETCH). Writes still go through write() and the WAL. The price:
    // an I/O error on a mapped page ends the process (SIGBUS) instead of failing one command;
    // committed mail stays safe (G1) and the service restarts, as mox (bbolt) and LMDB-based
    // servers accept. 2 GiB is SQLite's default ceiling; a larger file is read as before past it.
    conn.execute_batch(&format!(
        "PRAGMA busy_timeout={busy_ms};
         PRAGMA journal_mode={mode};
         PRAGMA synchronous={synchronous};
         PRAGMA foreign_keys=ON;
         PRAGMA mmap_size=2147418112;"
    ))
    .map_err(map_err)?;
    Ok(conn)
}

/// The directory a database file at `path` is in.
pub(crate) fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Sorts SQLite's errors into temporary and permanent ones (G2).
pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull => StoreError::Full(e.to_string()),
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory => StoreError::Unavailable(e.to_string()),
            ErrorCode::ConstraintViolation => StoreError::AlreadyExists(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(path, Journal::Durable).await
    }

    /// Finishes every write sent so far and closes the database; see [`Writer::close`].
    fn close(self) -> Result<()> {
        self.writer.close()
    }

    async fn open_with(path: &Path, journal: Journal) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> Result<Connection> {
                let dir = directory_of(&path);
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Unavailable(format!("creating {}: {e}", dir.display()))
                })?;
                let mut conn = open_connection(&path, journal)?;
                migrate_sqlite(&mut conn)?;
                Ok(conn)
            }
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        Ok(SqliteStore {
            writer: Writer::start(path.clone(), conn, journal),
            readers: Arc::new(Readers {
                path,
                journal,
                idle: Mutex::new(Vec::new()),
            }),
            read_slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_READS)),
        })
    }

    async fn read<F, R>(&self, work: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let readers = self.readers.clone();
        let slot = self
            .read_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Internal("reader slots closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let conn = readers.take()?;
            // Each piece of work reads inside one transaction: one snapshot for all its
            // statements, and the database's shared lock (two fcntl calls and a WAL read
            // mark) taken once, not per statement, which cost more than the lookups of a
            // batch.
            let out = conn
                .unchecked_transaction()
                .map_err(map_err)
                .and_then(|tx| {
                    let out = work(&tx)?;
                    tx.commit().map_err(map_err)?;
                    Ok(out)
                });
            readers.give_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Internal(format!("reader task failed: {e}")))?
    }

    /// The first column of a parameterless query, as strings.
    async fn strings(&self, sql: &'static str) -> Result<Vec<String>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(sql).map_err(map_err)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
                .map_err(map_err)
        })
        .await
    }

    async fn write<F, R>(&self, work: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.write(work).await
    }
}

fn migrate_sqlite(conn: &mut Connection) -> Result<()> {
    // IMMEDIATE: two processes starting together must not both apply the same migration.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(map_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    let known = migrate::latest(migrate::SQLITE);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in migrate::SQLITE.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).map_err(map_err)?;
        tx.execute("DELETE FROM schema_version", [])
            .map_err(map_err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )
        .map_err(map_err)?;
        tracing::info!(version, "applied SQLite schema migration");
    }
    tx.commit().map_err(map_err)
}

fn domain_id(conn: &Connection, domain: &str) -> Result<DomainId> {
    conn.query_row("SELECT id FROM domains WHERE name = ?1", [domain], |r| {
        r.get(0)
    })
    .optional()
    .map_err(map_err)?
    .ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))
}

fn address_domain_id(conn: &Connection, address: &str) -> Result<DomainId> {
    let domain = domain_of(address)
        .ok_or_else(|| StoreError::Invalid(format!("{address:?} is not an address")))?;
    domain_id(conn, domain)
}

fn account_id(conn: &Connection, address: &str) -> Result<AccountId> {
    conn.query_row(
        "SELECT id FROM accounts WHERE address = ?1",
        [address],
        |r| r.get(0),
    )
    .optional()
    .map_err(map_err)?
    .ok_or_else(|| StoreError::NotFound(format!("account {address}")))
}

/// Columns of [`MESSAGE_COLUMNS`] before conversion: name, uid, size, hash, subject, date, modseq.
type MessageRow = (String, i64, i64, String, Option<String>, i64, i64);

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn to_message_record(row: MessageRow) -> Result<MessageRecord> {
    let (mailbox, uid, size, hash, subject, internal_date, modseq) = row;
    Ok(MessageRecord {
        mailbox,
        uid: uid as u32,
        size: size as u64,
        hash: hash.parse()?,
        subject,
        internal_date,
        modseq: modseq as u64,
    })
}

const MESSAGE_COLUMNS: &str =
    "mb.name, mm.uid, mm.size, mm.hash, meta.subject, mm.internal_date, mm.modseq
     FROM mailbox_messages mm
     JOIN mailboxes mb ON mb.id = mm.mailbox_id
     LEFT JOIN message_meta meta ON meta.hash = mm.hash";

/// What `insert_message` writes that is not in the message as given: worked out before the
/// writer thread runs it where that can be done (restore), since that thread is SQLite's
/// one writer.
struct MetaRow {
    hash: String,
    meta_json: String,
    from: Option<String>,
}

impl MetaRow {
    fn of(msg: &NewMessage) -> Result<MetaRow> {
        Ok(MetaRow {
            hash: msg.blob.hash.to_hex(),
            meta_json: serde_json::to_string(&msg.meta)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
            from: msg.meta.from.first().and_then(|a| a.address.clone()),
        })
    }
}

fn insert_message(conn: &Connection, msg: &NewMessage, write_blob: bool, now: i64) -> Result<()> {
    insert_message_row(conn, msg, &MetaRow::of(msg)?, write_blob, now)
}

fn insert_message_row(
    conn: &Connection,
    msg: &NewMessage,
    row: &MetaRow,
    write_blob: bool,
    now: i64,
) -> Result<()> {
    let hash = &row.hash;
    if write_blob {
        conn.prepare_cached(
            "INSERT INTO blobs (hash, size, compression, data, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (hash) DO NOTHING",
        )
        .and_then(|mut st| {
            st.execute(params![
                hash,
                msg.blob.size as i64,
                msg.blob.compression as i64,
                msg.blob.data,
                now
            ])
        })
        .map_err(map_err)?;
    }
    conn.prepare_cached(
        "INSERT INTO message_meta
           (hash, size, subject, from_addr, message_id, sent_date, meta, header)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (hash) DO NOTHING",
    )
    .and_then(|mut st| {
        st.execute(params![
            hash,
            msg.blob.size as i64,
            msg.meta.subject,
            row.from,
            msg.meta.message_id,
            msg.meta.date,
            row.meta_json,
            msg.header
        ])
    })
    .map_err(map_err)?;
    // Every message is in the text index or waiting for it: never silently unsearchable.
    let backlog = match &msg.text {
        Some(indexed) => {
            let fresh = conn
                .prepare_cached(
                    "INSERT INTO message_text (hash, header, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (hash) DO NOTHING",
                )
                .and_then(|mut st| {
                    st.execute(params![hash, indexed.text.header, indexed.text.body])
                })
                .map_err(map_err)?;
            if fresh > 0 && !indexed.deferred {
                index_text(conn, &msg.blob.hash, indexed)?;
                // Delivered again while waiting in the backlog (stored before the index
                // existed): indexed now, and not a second time by the backlog.
                conn.prepare_cached("DELETE FROM search_backlog WHERE hash = ?1")
                    .and_then(|mut st| st.execute([&hash]))
                    .map_err(map_err)?;
            }
            fresh > 0 && indexed.deferred
        }
        None => true,
    };
    if backlog {
        conn.prepare_cached("INSERT OR IGNORE INTO search_backlog (hash) VALUES (?1)")
            .and_then(|mut st| st.execute([&hash]))
            .map_err(map_err)?;
    }
    Ok(())
}

/// Puts a message's tokens into the index under its key (see `search::index_key`).
fn index_text(conn: &Connection, hash: &BlobHash, indexed: &IndexedText) -> Result<()> {
    let key = crate::search::index_key(hash);
    let hex = hash.to_hex();
    let holder: Option<String> = conn
        .prepare_cached("SELECT hash FROM text_index_keys WHERE key = ?1")
        .and_then(|mut st| st.query_row([key], |r| r.get(0)).optional())
        .map_err(map_err)?;
    let tokens = match (&indexed.tokens, holder) {
        (None, _) => None,
        (Some(_), Some(h)) if h != hex => {
            tracing::warn!(hash = %hex, "search index key taken by another message; searched by its text");
            None
        }
        // Its own key: indexed for the first time, or again from the backlog.
        (Some(tokens), holder) => {
            if holder.is_none() {
                conn.prepare_cached("INSERT INTO text_index_keys (key, hash) VALUES (?1, ?2)")
                    .and_then(|mut st| st.execute(params![key, hex]))
                    .map_err(map_err)?;
            }
            Some(tokens)
        }
    };
    match tokens {
        Some(tokens) => conn
            .prepare_cached("INSERT INTO text_index (rowid, tokens) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![key, tokens.join(" ")])),
        // Not in the index: searches check it against its text.
        None => conn
            .prepare_cached("INSERT OR IGNORE INTO search_unindexable (hash) VALUES (?1)")
            .and_then(|mut st| st.execute([&hex])),
    }
    .map_err(map_err)?;
    Ok(())
}

/// Most whole terms a prefix is replaced by; past it, FTS5's prefix query is used.
const MAX_PREFIX_TERMS: usize = 64;

/// The FTS5 query for a search's token prefixes (see `TextQuery::parts`): each prefix as the
/// terms it stands for when there are few, which FTS5 answers much faster than a prefix query.
/// None when some part has no term at all, so nothing matches.
fn fts5_terms(c: &Connection, parts: &[Vec<String>]) -> Result<Option<String>> {
    let mut st = c
        .prepare_cached("SELECT term FROM text_index_vocab WHERE term >= ?1 AND term < ?2 LIMIT ?3")
        .map_err(map_err)?;
    let mut and = Vec::with_capacity(parts.len());
    for prefixes in parts {
        let mut or = Vec::new();
        for prefix in prefixes {
            // Tokens continue in hex digits only, all below 'g'.
            let end = format!("{prefix}g");
            let terms = st
                .query_map(params![prefix, end, MAX_PREFIX_TERMS as i64 + 1], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(map_err)?;
            if terms.len() > MAX_PREFIX_TERMS {
                or.push(format!("{prefix}*"));
            } else {
                or.extend(terms);
            }
        }
        if or.is_empty() {
            return Ok(None);
        }
        and.push(format!("({})", or.join(" OR ")));
    }
    Ok(Some(and.join(" AND ")))
}

fn text_columns(parts: TextParts) -> &'static str {
    match (parts.header, parts.body) {
        (true, true) => "header, body",
        (true, false) => "header, ''",
        (false, true) => "'', body",
        (false, false) => "'', ''",
    }
}

fn deliver_tx(conn: &Connection, d: &Delivery, write_blob: bool) -> Result<DeliveryReceipt> {
    let now = now_unix();
    let fresh = conn
        .prepare_cached(
            "INSERT INTO deliveries (id, created) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut st| st.execute(params![d.id, now]))
        .map_err(map_err)?;
    if fresh == 0 {
        return Ok(DeliveryReceipt {
            already_committed: true,
            ..DeliveryReceipt::default()
        });
    }
    for msg in d.messages() {
        insert_message(conn, msg, write_blob, now)?;
    }
    let mut receipt = DeliveryReceipt::default();
    if let Some(local) = &d.local {
        let msg = &local.message;
        let hash = msg.blob.hash.to_hex();
        let mut accounts = local.accounts.clone();
        accounts.sort_unstable();
        accounts.dedup();
        for account in accounts {
            let (mailbox_id, uid): (i64, i64) = conn
                .prepare_cached(
                    "UPDATE mailboxes SET uidnext = uidnext + 1
                     WHERE account_id = ?1 AND name = 'INBOX' RETURNING id, uidnext - 1",
                )
                .and_then(|mut st| st.query_row([account], |r| Ok((r.get(0)?, r.get(1)?))))
                .optional()
                .map_err(map_err)?
                .ok_or_else(|| StoreError::Internal(format!("account {account} has no INBOX")))?;
            let modseq: i64 = conn
                .prepare_cached(
                    "UPDATE accounts SET modseq = modseq + 1 WHERE id = ?1 RETURNING modseq",
                )
                .and_then(|mut st| st.query_row([account], |r| r.get(0)))
                .map_err(map_err)?;
            conn.prepare_cached("UPDATE mailboxes SET highestmodseq = ?1 WHERE id = ?2")
                .and_then(|mut st| st.execute(params![modseq, mailbox_id]))
                .map_err(map_err)?;
            conn.prepare_cached(
                "INSERT INTO mailbox_messages
                   (mailbox_id, uid, account_id, hash, size, flags, keywords, modseq, internal_date)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, '', ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    mailbox_id,
                    uid,
                    account,
                    hash,
                    msg.blob.size as i64,
                    modseq,
                    msg.received_at
                ])
            })
            .map_err(map_err)?;
            conn.prepare_cached(
                "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
                 VALUES (?1, ?2, 'append', ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![account, modseq, mailbox_id, uid, now]))
            .map_err(map_err)?;
            receipt.copies.push(DeliveredCopy {
                account_id: account,
                mailbox_id,
                uid: uid as u32,
                modseq: modseq as u64,
            });
        }
    }

    if let Some(out) = d.outbound.as_ref().filter(|o| !o.recipients.is_empty()) {
        receipt.queue_id = Some(queue::enqueue(conn, out, now)?);
    }
    Ok(receipt)
}

fn bump_modseq(conn: &Connection, account: AccountId) -> Result<i64> {
    conn.prepare_cached("UPDATE accounts SET modseq = modseq + 1 WHERE id = ?1 RETURNING modseq")
        .and_then(|mut st| st.query_row([account], |r| r.get(0)))
        .map_err(map_err)
}

/// A UIDVALIDITY above every one this account has had (RFC 9051 §2.3.1.1), normally the time.
fn next_uidvalidity(conn: &Connection, account: AccountId) -> Result<i64> {
    conn.query_row(
        "UPDATE accounts SET last_uidvalidity = max(?2, last_uidvalidity + 1,
            coalesce((SELECT max(uidvalidity) + 1 FROM mailboxes WHERE account_id = ?1), 0))
         WHERE id = ?1 RETURNING last_uidvalidity",
        params![account, now_unix() as u32 as i64],
        |r| r.get(0),
    )
    .map_err(map_err)
}

const MAILBOX_COLUMNS: &str =
    "id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq FROM mailboxes";

fn mailbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailboxRecord> {
    Ok(MailboxRecord {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        special_use: r.get(3)?,
        uidvalidity: r.get::<_, i64>(4)? as u32,
        uidnext: r.get::<_, i64>(5)? as u32,
        highestmodseq: r.get::<_, i64>(6)? as u64,
    })
}

fn mailbox_by_id(conn: &Connection, account: AccountId, id: MailboxId) -> Result<MailboxRecord> {
    conn.prepare_cached(&format!(
        "SELECT {MAILBOX_COLUMNS} WHERE id = ?1 AND account_id = ?2"
    ))
    .and_then(|mut st| st.query_row([id, account], mailbox_row).optional())
    .map_err(map_err)?
    .ok_or_else(|| StoreError::NotFound(format!("mailbox {id}")))
}

const ENTRY_COLUMNS: &str =
    "uid, hash, size, internal_date, flags, keywords, modseq FROM mailbox_messages";

type EntryRow = (i64, String, i64, i64, i64, String, i64);

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn to_entry(row: EntryRow) -> Result<MessageEntry> {
    let (uid, hash, size, internal_date, flags, keywords, modseq) = row;
    Ok(MessageEntry {
        uid: uid as u32,
        hash: hash.parse()?,
        size: size as u64,
        internal_date,
        flags,
        keywords: keywords_from_text(&keywords),
        modseq: modseq as u64,
    })
}

fn entry(conn: &Connection, mailbox: MailboxId, uid: u32) -> Result<Option<MessageEntry>> {
    conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} WHERE mailbox_id = ?1 AND uid = ?2"
    ))
    .and_then(|mut st| {
        st.query_row(params![mailbox, uid as i64], entry_row)
            .optional()
    })
    .map_err(map_err)?
    .map(to_entry)
    .transpose()
}

/// Adds one message entry with the next UID of `mailbox`; returns the UID.
#[allow(clippy::too_many_arguments)]
fn add_entry(
    conn: &Connection,
    account: AccountId,
    mailbox: MailboxId,
    hash: &str,
    size: i64,
    flags: i64,
    keywords: &str,
    modseq: i64,
    internal_date: i64,
) -> Result<u32> {
    let uid: i64 = conn
        .prepare_cached(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = ?3
             WHERE id = ?1 AND account_id = ?2 RETURNING uidnext - 1",
        )
        .and_then(|mut st| {
            st.query_row(params![mailbox, account, modseq], |r| r.get(0))
                .optional()
        })
        .map_err(map_err)?
        .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox}")))?;
    let uid = uid as u32;
    insert_entry(
        conn,
        account,
        mailbox,
        uid,
        hash,
        size,
        flags,
        keywords,
        modseq,
        internal_date,
    )?;
    Ok(uid)
}

/// Inserts one entry under `uid`, with its `append` change; the caller has moved the
/// mailbox's UIDNEXT past it.
#[allow(clippy::too_many_arguments)]
fn insert_entry(
    conn: &Connection,
    account: AccountId,
    mailbox: MailboxId,
    uid: u32,
    hash: &str,
    size: i64,
    flags: i64,
    keywords: &str,
    modseq: i64,
    internal_date: i64,
) -> Result<()> {
    let uid = uid as i64;
    conn.prepare_cached(
        "INSERT INTO mailbox_messages
           (mailbox_id, uid, account_id, hash, size, flags, keywords, modseq, internal_date)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut st| {
        st.execute(params![
            mailbox,
            uid,
            account,
            hash,
            size,
            flags,
            keywords,
            modseq,
            internal_date
        ])
    })
    .map_err(map_err)?;
    conn.prepare_cached(
        "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
         VALUES (?1, ?2, 'append', ?3, ?4, ?5)",
    )
    .and_then(|mut st| st.execute(params![account, modseq, mailbox, uid, now_unix()]))
    .map_err(map_err)?;
    Ok(())
}

/// Removes entries under MODSEQ `modseq`; returns the UIDs that were there.
fn remove_entries(
    conn: &Connection,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[u32],
    modseq: i64,
) -> Result<Vec<u32>> {
    let now = now_unix();
    let mut removed = Vec::new();
    for &uid in uids {
        let n = conn
            .prepare_cached("DELETE FROM mailbox_messages WHERE mailbox_id = ?1 AND uid = ?2")
            .and_then(|mut st| st.execute(params![mailbox, uid as i64]))
            .map_err(map_err)?;
        if n > 0 {
            conn.prepare_cached(
                "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
                 VALUES (?1, ?2, 'expunge', ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![account, modseq, mailbox, uid as i64, now]))
            .map_err(map_err)?;
            removed.push(uid);
        }
    }
    if !removed.is_empty() {
        conn.prepare_cached("UPDATE mailboxes SET highestmodseq = ?1 WHERE id = ?2")
            .and_then(|mut st| st.execute(params![modseq, mailbox]))
            .map_err(map_err)?;
    }
    Ok(removed)
}

const QUOTA_QUERY: &str = "SELECT a.quota_storage, a.quota_messages,
       (SELECT coalesce(sum(size), 0) FROM mailbox_messages WHERE account_id = a.id),
       (SELECT count(*) FROM mailbox_messages WHERE account_id = a.id)
     FROM accounts a WHERE a.id = ?1";

fn quota_of(conn: &Connection, account: AccountId) -> Result<Quota> {
    conn.prepare_cached(QUOTA_QUERY)
        .and_then(|mut st| {
            st.query_row([account], |r| {
                Ok(Quota {
                    storage_limit: r.get::<_, Option<i64>>(0)?.map(|v| v as u64),
                    message_limit: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                    storage_used: r.get::<_, i64>(2)? as u64,
                    messages_used: r.get::<_, i64>(3)? as u64,
                })
            })
            .optional()
        })
        .map_err(map_err)?
        .ok_or_else(|| StoreError::NotFound(format!("account {account}")))
}

/// Refuses a change that adds `messages` messages of `bytes` past the account's quota.
fn check_quota(conn: &Connection, account: AccountId, messages: u64, bytes: u64) -> Result<()> {
    let quota = quota_of(conn, account)?;
    if quota.exceeded_by(messages, bytes) {
        return Err(StoreError::OverQuota(format!(
            "{} messages, {} bytes in use",
            quota.messages_used, quota.storage_used
        )));
    }
    Ok(())
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn schema_version(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
                .map_err(map_err)
        })
        .await
    }

    async fn add_domain(&self, name: &str) -> Result<DomainId> {
        let name = name.to_string();
        self.write(move |c| {
            c.query_row(
                "INSERT INTO domains (name, created) VALUES (?1, ?2) RETURNING id",
                params![name, now_unix()],
                |r| r.get(0),
            )
            .map_err(|e| match map_err(e) {
                StoreError::AlreadyExists(_) => StoreError::AlreadyExists(format!("domain {name}")),
                other => other,
            })
        })
        .await
    }

    async fn remove_domain(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            let id = domain_id(c, &name)?;
            let users: i64 = c
                .query_row(
                    "SELECT (SELECT count(*) FROM accounts WHERE domain_id = ?1)
                          + (SELECT count(*) FROM aliases WHERE domain_id = ?1)",
                    [id],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if users > 0 {
                return Err(StoreError::Invalid(format!(
                    "domain {name} still has {users} accounts or aliases; remove them first"
                )));
            }
            c.execute("DELETE FROM domains WHERE id = ?1", [id])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_domains(&self) -> Result<Vec<String>> {
        self.strings("SELECT name FROM domains ORDER BY name").await
    }

    async fn domain_exists(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT 1 FROM domains WHERE name = ?1")
                .and_then(|mut st| st.exists([name]))
                .map_err(map_err)
        })
        .await
    }

    async fn add_dkim_key(&self, key: &DkimKey) -> Result<()> {
        let key = key.clone();
        self.write(move |c| {
            let domain = domain_id(c, &key.domain)?;
            c.execute(
                "INSERT INTO dkim_keys
                   (domain_id, selector, algorithm, private_key, public_key, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    domain,
                    key.selector,
                    key.algorithm,
                    key.private_key,
                    key.public_key,
                    now_unix()
                ],
            )
            .map_err(|e| match map_err(e) {
                StoreError::AlreadyExists(_) => StoreError::AlreadyExists(format!(
                    "a DKIM key of {} under selector {}",
                    key.domain, key.selector
                )),
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn dkim_keys(&self) -> Result<Vec<DkimKey>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT d.name, k.selector, k.algorithm, k.private_key, k.public_key, k.created
                     FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
                     ORDER BY d.name, k.selector",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(DkimKey {
                        domain: r.get(0)?,
                        selector: r.get(1)?,
                        algorithm: r.get(2)?,
                        private_key: r.get(3)?,
                        public_key: r.get(4)?,
                        created: r.get(5)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn add_account(&self, address: &str, password_hash: &str) -> Result<AccountId> {
        let address = address.to_string();
        let hash = password_hash.to_string();
        self.write(move |c| {
            let domain = address_domain_id(c, &address)?;
            let now = now_unix();
            let id: AccountId = c
                .query_row(
                    "INSERT INTO accounts (address, domain_id, password_hash, created)
                     VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    params![address, domain, hash, now],
                    |r| r.get(0),
                )
                .map_err(|e| match map_err(e) {
                    StoreError::AlreadyExists(_) => {
                        StoreError::AlreadyExists(format!("account {address}"))
                    }
                    other => other,
                })?;
            for (name, special_use) in DEFAULT_MAILBOXES {
                c.execute(
                    "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, created)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, name, special_use, now as u32 as i64, now],
                )
                .map_err(map_err)?;
                c.execute(
                    "INSERT INTO subscriptions (account_id, name) VALUES (?1, ?2)",
                    params![id, name],
                )
                .map_err(map_err)?;
            }
            c.execute(
                "UPDATE accounts SET last_uidvalidity = ?2 WHERE id = ?1",
                params![id, now as u32 as i64],
            )
            .map_err(map_err)?;
            Ok(id)
        })
        .await
    }

    async fn remove_account(&self, address: &str) -> Result<()> {
        let address = address.to_string();
        self.write(move |c| {
            let id = account_id(c, &address)?;
            // Children first: mailbox_messages and changes go with their mailboxes/account.
            c.execute("DELETE FROM mailbox_messages WHERE account_id = ?1", [id])
                .map_err(map_err)?;
            c.execute("DELETE FROM accounts WHERE id = ?1", [id])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        self.strings("SELECT address FROM accounts ORDER BY address")
            .await
    }

    async fn set_password(&self, address: &str, password_hash: &str) -> Result<()> {
        let address = address.to_string();
        let hash = password_hash.to_string();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE accounts SET password_hash = ?1 WHERE address = ?2",
                    params![hash, address],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("account {address}")));
            }
            Ok(())
        })
        .await
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<AccountRecord>> {
        let address = address.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT id, address, password_hash FROM accounts WHERE address = ?1")
                .and_then(|mut st| {
                    st.query_row([address], |r| {
                        Ok(AccountRecord {
                            id: r.get(0)?,
                            address: r.get(1)?,
                            password_hash: r.get(2)?,
                        })
                    })
                    .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn add_alias(&self, address: &str, target: &str) -> Result<()> {
        let address = address.to_string();
        let target = target.to_string();
        self.write(move |c| {
            let domain = address_domain_id(c, &address)?;
            c.execute(
                "INSERT INTO aliases (address, target, domain_id, created) VALUES (?1, ?2, ?3, ?4)",
                params![address, target, domain, now_unix()],
            )
            .map_err(|e| match map_err(e) {
                StoreError::AlreadyExists(_) => {
                    StoreError::AlreadyExists(format!("alias {address} -> {target}"))
                }
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn remove_alias(&self, address: &str, target: Option<&str>) -> Result<()> {
        let address = address.to_string();
        let target = target.map(str::to_string);
        self.write(move |c| {
            let n = match &target {
                Some(t) => c.execute(
                    "DELETE FROM aliases WHERE address = ?1 AND target = ?2",
                    params![address, t],
                ),
                None => c.execute("DELETE FROM aliases WHERE address = ?1", [&address]),
            }
            .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("alias {address}")));
            }
            Ok(())
        })
        .await
    }

    async fn list_aliases(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT address, target FROM aliases ORDER BY address, target")
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn alias_targets(&self, address: &str) -> Result<Vec<String>> {
        let address = address.to_string();
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT target FROM aliases WHERE address = ?1 ORDER BY target")
                .map_err(map_err)?;
            let rows = st.query_map([address], |r| r.get(0)).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
                .map_err(map_err)
        })
        .await
    }

    async fn deliver(&self, delivery: Arc<Delivery>, write_blob: bool) -> Result<DeliveryReceipt> {
        self.write(move |c| deliver_tx(c, &delivery, write_blob))
            .await
    }

    async fn mailboxes(&self, account: AccountId) -> Result<Vec<MailboxRecord>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq
                     FROM mailboxes WHERE account_id = ?1 ORDER BY name",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([account], |r| {
                    Ok(MailboxRecord {
                        id: r.get(0)?,
                        account_id: r.get(1)?,
                        name: r.get(2)?,
                        special_use: r.get(3)?,
                        uidvalidity: r.get::<_, i64>(4)? as u32,
                        uidnext: r.get::<_, i64>(5)? as u32,
                        highestmodseq: r.get::<_, i64>(6)? as u64,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn list_messages(
        &self,
        account: AccountId,
        mailbox: Option<&str>,
    ) -> Result<Vec<MessageRecord>> {
        let mailbox = mailbox.map(str::to_string);
        self.read(move |c| {
            let rows = match &mailbox {
                Some(name) => {
                    let mut st = c
                        .prepare_cached(&format!(
                            "SELECT {MESSAGE_COLUMNS} WHERE mb.account_id = ?1 AND mb.name = ?2
                             ORDER BY mb.name, mm.uid"
                        ))
                        .map_err(map_err)?;
                    let rows = st.query_map(params![account, name], message_row).map_err(map_err)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                }
                None => {
                    let mut st = c
                        .prepare_cached(&format!(
                            "SELECT {MESSAGE_COLUMNS} WHERE mb.account_id = ?1 ORDER BY mb.name, mm.uid"
                        ))
                        .map_err(map_err)?;
                    let rows = st.query_map(params![account], message_row).map_err(map_err)?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                }
            }
            .map_err(map_err)?;
            rows.into_iter().map(to_message_record).collect()
        })
        .await
    }

    async fn find_message(
        &self,
        account: AccountId,
        mailbox: &str,
        uid: u32,
    ) -> Result<Option<MessageRecord>> {
        let mailbox = mailbox.to_string();
        self.read(move |c| {
            let row = c
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} WHERE mb.account_id = ?1 AND mb.name = ?2 AND mm.uid = ?3"
                ))
                .and_then(|mut st| {
                    st.query_row(params![account, mailbox, uid as i64], message_row)
                        .optional()
                })
                .map_err(map_err)?;
            row.map(to_message_record).transpose()
        })
        .await
    }

    async fn message_meta(&self, hash: &BlobHash) -> Result<Option<MessageMeta>> {
        let hash = hash.to_hex();
        self.read(move |c| {
            let json: Option<String> = c
                .prepare_cached("SELECT meta FROM message_meta WHERE hash = ?1")
                .and_then(|mut st| st.query_row([hash], |r| r.get(0)).optional())
                .map_err(map_err)?;
            json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Internal(e.to_string())))
                .transpose()
        })
        .await
    }

    async fn message_metas(&self, hashes: &[BlobHash]) -> Result<Vec<(BlobHash, MessageMeta)>> {
        let hashes = hashes.to_vec();
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT meta FROM message_meta WHERE hash = ?1")
                .map_err(map_err)?;
            let mut out = Vec::with_capacity(hashes.len());
            for h in hashes {
                let json: Option<String> = st
                    .query_row([h.to_hex()], |r| r.get(0))
                    .optional()
                    .map_err(map_err)?;
                if let Some(j) = json {
                    let meta = serde_json::from_str(&j)
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    out.push((h, meta));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn message_heads(
        &self,
        hashes: &[BlobHash],
    ) -> Result<Vec<(BlobHash, MessageMeta, Option<Vec<u8>>)>> {
        let hashes = hashes.to_vec();
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT meta, header FROM message_meta WHERE hash = ?1")
                .map_err(map_err)?;
            let mut out = Vec::with_capacity(hashes.len());
            for h in hashes {
                let row: Option<(String, Option<Vec<u8>>)> = st
                    .query_row([h.to_hex()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(map_err)?;
                if let Some((json, header)) = row {
                    let meta = serde_json::from_str(&json)
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    out.push((h, meta, header));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn expunge(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<u32>> {
        let uids = uids.to_vec();
        self.write(move |c| {
            mailbox_by_id(c, account, mailbox)?;
            let present: Vec<u32> = {
                let mut out = Vec::new();
                for &uid in &uids {
                    if entry(c, mailbox, uid)?.is_some() {
                        out.push(uid);
                    }
                }
                out
            };
            if present.is_empty() {
                return Ok(Vec::new());
            }
            let modseq = bump_modseq(c, account)?;
            remove_entries(c, account, mailbox, &present, modseq)
        })
        .await
    }

    async fn create_mailbox(
        &self,
        account: AccountId,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<MailboxRecord> {
        let name = name.to_string();
        let special_use = special_use.map(str::to_string);
        self.write(move |c| {
            let uidvalidity = next_uidvalidity(c, account)?;
            let id: MailboxId = c
                .query_row(
                    "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, created)
                     VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                    params![account, name, special_use, uidvalidity, now_unix()],
                    |r| r.get(0),
                )
                .map_err(|e| match map_err(e) {
                    StoreError::AlreadyExists(_) => {
                        StoreError::AlreadyExists(format!("mailbox {name}"))
                    }
                    other => other,
                })?;
            mailbox_by_id(c, account, id)
        })
        .await
    }

    async fn delete_mailbox(&self, account: AccountId, name: &str) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            if name.eq_ignore_ascii_case(INBOX) {
                return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
            }
            let id: MailboxId = c
                .query_row(
                    "SELECT id FROM mailboxes WHERE account_id = ?1 AND name = ?2",
                    params![account, name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))?;
            let children: i64 = c
                .query_row(
                    "SELECT count(*) FROM mailboxes WHERE account_id = ?1
                       AND substr(name, 1, length(?2) + 1) = ?2 || '/'",
                    params![account, name],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if children > 0 {
                return Err(StoreError::Invalid(format!("mailbox {name} has children")));
            }
            let modseq = bump_modseq(c, account)?;
            c.execute(
                "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
                 VALUES (?1, ?2, 'mailbox-delete', ?3, NULL, ?4)",
                params![account, modseq, id, now_unix()],
            )
            .map_err(map_err)?;
            c.execute("DELETE FROM mailbox_messages WHERE mailbox_id = ?1", [id])
                .map_err(map_err)?;
            c.execute("DELETE FROM mailboxes WHERE id = ?1", [id])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn rename_mailbox(&self, account: AccountId, from: &str, to: &str) -> Result<()> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(move |c| {
            let exists = c
                .prepare_cached("SELECT 1 FROM mailboxes WHERE account_id = ?1 AND name = ?2")
                .and_then(|mut st| st.exists(params![account, from]))
                .map_err(map_err)?;
            if !exists {
                return Err(StoreError::NotFound(format!("mailbox {from}")));
            }
            for table in ["mailboxes", "subscriptions"] {
                c.execute(
                    &format!(
                        "UPDATE {table} SET name = ?3 || substr(name, length(?2) + 1)
                         WHERE account_id = ?1
                           AND (name = ?2 OR substr(name, 1, length(?2) + 1) = ?2 || '/')"
                    ),
                    params![account, from, to],
                )
                .map_err(|e| match map_err(e) {
                    StoreError::AlreadyExists(_) => {
                        StoreError::AlreadyExists(format!("mailbox {to}"))
                    }
                    other => other,
                })?;
            }
            bump_modseq(c, account)?;
            Ok(())
        })
        .await
    }

    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT name FROM subscriptions WHERE account_id = ?1 ORDER BY name",
                )
                .map_err(map_err)?;
            let rows = st.query_map([account], |r| r.get(0)).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
                .map_err(map_err)
        })
        .await
    }

    async fn set_subscribed(&self, account: AccountId, name: &str, subscribed: bool) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            if subscribed {
                c.execute(
                    "INSERT INTO subscriptions (account_id, name) VALUES (?1, ?2)
                     ON CONFLICT DO NOTHING",
                    params![account, name],
                )
            } else {
                c.execute(
                    "DELETE FROM subscriptions WHERE account_id = ?1 AND name = ?2",
                    params![account, name],
                )
            }
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn mailbox(&self, account: AccountId, mailbox: MailboxId) -> Result<MailboxRecord> {
        self.read(move |c| mailbox_by_id(c, account, mailbox)).await
    }

    async fn mailbox_counts(&self, mailbox: MailboxId) -> Result<MailboxCounts> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT count(*), coalesce(sum(flags & 1 = 0), 0), coalesce(sum(flags & 8 != 0), 0),
                        coalesce(sum(size), 0), coalesce(sum(CASE WHEN flags & 8 != 0 THEN size END), 0)
                 FROM mailbox_messages WHERE mailbox_id = ?1",
            )
            .and_then(|mut st| {
                st.query_row([mailbox], |r| {
                    Ok(MailboxCounts {
                        messages: r.get::<_, i64>(0)? as u64,
                        unseen: r.get::<_, i64>(1)? as u64,
                        deleted: r.get::<_, i64>(2)? as u64,
                        size: r.get::<_, i64>(3)? as u64,
                        deleted_size: r.get::<_, i64>(4)? as u64,
                    })
                })
            })
            .map_err(map_err)
        })
        .await
    }

    async fn mailbox_entries(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} WHERE mailbox_id = ?1 ORDER BY uid"
                ))
                .map_err(map_err)?;
            let rows = st.query_map([mailbox], entry_row).map_err(map_err)?;
            let rows = rows
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            rows.into_iter().map(to_entry).collect()
        })
        .await
    }

    async fn mailbox_delta(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<MailboxDelta> {
        // `read` is one transaction: the record and the changes agree.
        self.read(move |c| {
            let record = mailbox_by_id(c, account, mailbox)?;
            if record.highestmodseq <= since {
                return Ok(MailboxDelta {
                    mailbox: record,
                    changed: vec![],
                    expunged: vec![],
                });
            }
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(params![mailbox, since as i64], entry_row)
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            let changed = rows.into_iter().map(to_entry).collect::<Result<Vec<_>>>()?;
            let mut st = c
                .prepare_cached(
                    "SELECT DISTINCT uid FROM changes WHERE mailbox_id = ?1 AND modseq > ?2
                       AND kind = 'expunge' ORDER BY uid",
                )
                .map_err(map_err)?;
            let expunged = st
                .query_map(params![mailbox, since as i64], |r| r.get::<_, i64>(0))
                .map_err(map_err)?
                .map(|u| u.map(|u| u as u32))
                .collect::<rusqlite::Result<Vec<u32>>>()
                .map_err(map_err)?;
            Ok(MailboxDelta {
                mailbox: record,
                changed,
                expunged,
            })
        })
        .await
    }

    async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<AppendRequest>>,
        write_blob: bool,
    ) -> Result<Vec<Appended>> {
        self.write(move |c| {
            let record = mailbox_by_id(c, account, mailbox)?;
            let bytes: u64 = messages.iter().map(|m| m.message.blob.size).sum();
            check_quota(c, account, messages.len() as u64, bytes)?;
            let now = now_unix();
            let modseq = bump_modseq(c, account)?;
            let mut out = Vec::new();
            for m in messages.iter() {
                insert_message(c, &m.message, write_blob, now)?;
                let uid = add_entry(
                    c,
                    account,
                    mailbox,
                    &m.message.blob.hash.to_hex(),
                    m.message.blob.size as i64,
                    m.flags,
                    &keywords_to_text(&m.keywords),
                    modseq,
                    m.message.received_at,
                )?;
                out.push(Appended {
                    uidvalidity: record.uidvalidity,
                    uid,
                    modseq: modseq as u64,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn update_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[u32],
        change: &FlagChange,
    ) -> Result<FlagOutcome> {
        let uids = uids.to_vec();
        let change = change.clone();
        self.write(move |c| {
            mailbox_by_id(c, account, mailbox)?;
            let mut outcome = FlagOutcome::default();
            let mut to_change = Vec::new();
            for uid in uids {
                let Some(e) = entry(c, mailbox, uid)? else {
                    continue;
                };
                if change.unchanged_since.is_some_and(|since| e.modseq > since) {
                    outcome.modified.push(uid);
                    continue;
                }
                let (flags, keywords) = change.apply(e.flags, &e.keywords);
                if flags == e.flags && keywords == e.keywords {
                    outcome.updated.push(e);
                } else {
                    to_change.push(MessageEntry {
                        flags,
                        keywords,
                        ..e
                    });
                }
            }
            if !to_change.is_empty() {
                let modseq = bump_modseq(c, account)?;
                outcome.modseqs.push(modseq as u64);
                for e in &mut to_change {
                    e.modseq = modseq as u64;
                    c.prepare_cached(
                        "UPDATE mailbox_messages SET flags = ?3, keywords = ?4, modseq = ?5
                         WHERE mailbox_id = ?1 AND uid = ?2",
                    )
                    .and_then(|mut st| {
                        st.execute(params![
                            mailbox,
                            e.uid as i64,
                            e.flags,
                            keywords_to_text(&e.keywords),
                            modseq
                        ])
                    })
                    .map_err(map_err)?;
                }
                c.prepare_cached("UPDATE mailboxes SET highestmodseq = ?1 WHERE id = ?2")
                    .and_then(|mut st| st.execute(params![modseq, mailbox]))
                    .map_err(map_err)?;
                outcome.updated.extend(to_change);
                outcome.updated.sort_by_key(|e| e.uid);
            }
            Ok(outcome)
        })
        .await
    }

    async fn copy_messages(
        &self,
        (from_account, from): (AccountId, MailboxId),
        uids: &[u32],
        (to_account, to): (AccountId, MailboxId),
        remove_source: bool,
    ) -> Result<CopyOutcome> {
        let uids = uids.to_vec();
        self.write(move |c| {
            mailbox_by_id(c, from_account, from)?;
            let target = mailbox_by_id(c, to_account, to)?;
            let mut sources = Vec::new();
            for uid in uids {
                if let Some(e) = entry(c, from, uid)? {
                    sources.push(e);
                }
            }
            let mut outcome = CopyOutcome {
                uidvalidity: target.uidvalidity,
                pairs: Vec::new(),
            };
            if sources.is_empty() {
                return Ok(outcome);
            }
            let within = from_account == to_account;
            if !remove_source || !within {
                let bytes: u64 = sources.iter().map(|e| e.size).sum();
                check_quota(c, to_account, sources.len() as u64, bytes)?;
            }
            let modseq = bump_modseq(c, to_account)?;
            for e in &sources {
                let uid = add_entry(
                    c,
                    to_account,
                    to,
                    &e.hash.to_hex(),
                    e.size as i64,
                    e.flags,
                    &keywords_to_text(&e.keywords),
                    modseq,
                    e.internal_date,
                )?;
                outcome.pairs.push((e.uid, uid));
            }
            if remove_source {
                let uids: Vec<u32> = sources.iter().map(|e| e.uid).collect();
                let modseq = if within {
                    modseq
                } else {
                    bump_modseq(c, from_account)?
                };
                remove_entries(c, from_account, from, &uids, modseq)?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn set_acl(
        &self,
        owner: AccountId,
        mailbox: MailboxId,
        grantee: &str,
        rights: Option<&str>,
    ) -> Result<()> {
        let grantee = grantee.to_string();
        let rights = rights.map(str::to_string);
        self.write(move |c| {
            mailbox_by_id(c, owner, mailbox)?;
            let id: AccountId = c
                .query_row(
                    "SELECT id FROM accounts WHERE address = ?1",
                    [&grantee],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?
                .ok_or_else(|| StoreError::NotFound(format!("account {grantee}")))?;
            if id == owner {
                return Err(StoreError::Invalid(
                    "the owner always holds every right".into(),
                ));
            }
            match rights.filter(|r| !r.is_empty()) {
                Some(r) => c.execute(
                    "INSERT INTO mailbox_acl (mailbox_id, grantee_id, rights) VALUES (?1, ?2, ?3)
                     ON CONFLICT (mailbox_id, grantee_id) DO UPDATE SET rights = excluded.rights",
                    params![mailbox, id, r],
                ),
                None => c.execute(
                    "DELETE FROM mailbox_acl WHERE mailbox_id = ?1 AND grantee_id = ?2",
                    params![mailbox, id],
                ),
            }
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn mailbox_acl(
        &self,
        owner: AccountId,
        mailbox: MailboxId,
    ) -> Result<Vec<(String, String)>> {
        self.read(move |c| {
            mailbox_by_id(c, owner, mailbox)?;
            let mut st = c
                .prepare_cached(
                    "SELECT a.address, l.rights FROM mailbox_acl l
                     JOIN accounts a ON a.id = l.grantee_id
                     WHERE l.mailbox_id = ?1 ORDER BY a.address",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([mailbox], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn account_snapshot(&self, address: &str) -> Result<Option<AccountSnapshot>> {
        let address = address.to_string();
        // One read transaction (see `read`): one consistent view of the whole account.
        self.read(move |c| {
            let Some((id, password_hash, quota_storage, quota_messages)) = c
                .prepare_cached(
                    "SELECT id, password_hash, quota_storage, quota_messages
                     FROM accounts WHERE address = ?1",
                )
                .and_then(|mut st| {
                    st.query_row([&address], |r| {
                        Ok((
                            r.get::<_, AccountId>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(map_err)?
            else {
                return Ok(None);
            };
            let strings = |sql: &str, key: i64| -> Result<Vec<String>> {
                let mut st = c.prepare_cached(sql).map_err(map_err)?;
                let rows = st.query_map([key], |r| r.get(0)).map_err(map_err)?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(map_err)
            };
            let subscriptions = strings(
                "SELECT name FROM subscriptions WHERE account_id = ?1 ORDER BY name",
                id,
            )?;
            let records = {
                let mut st = c
                    .prepare_cached(&format!(
                        "SELECT {MAILBOX_COLUMNS} WHERE account_id = ?1 ORDER BY name"
                    ))
                    .map_err(map_err)?;
                let rows = st.query_map([id], mailbox_row).map_err(map_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(map_err)?
            };
            let mut mailboxes = Vec::with_capacity(records.len());
            for mb in records {
                let mut st = c
                    .prepare_cached(&format!(
                        "SELECT {ENTRY_COLUMNS} WHERE mailbox_id = ?1 ORDER BY uid"
                    ))
                    .map_err(map_err)?;
                let rows = st.query_map([mb.id], entry_row).map_err(map_err)?;
                let messages = rows
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(map_err)?
                    .into_iter()
                    .map(|row| to_entry(row).map(SnapshotMessage::from))
                    .collect::<Result<Vec<_>>>()?;
                let mut st = c
                    .prepare_cached(
                        "SELECT a.address, l.rights FROM mailbox_acl l
                         JOIN accounts a ON a.id = l.grantee_id
                         WHERE l.mailbox_id = ?1 ORDER BY a.address",
                    )
                    .map_err(map_err)?;
                let acl = st
                    .query_map([mb.id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(map_err)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(map_err)?;
                mailboxes.push(MailboxSnapshot {
                    name: mb.name,
                    special_use: mb.special_use,
                    uidvalidity: mb.uidvalidity,
                    uidnext: mb.uidnext,
                    highestmodseq: mb.highestmodseq,
                    acl,
                    messages,
                });
            }
            Ok(Some(AccountSnapshot {
                address,
                password_hash,
                quota_storage: quota_storage.map(|v| v as u64),
                quota_messages: quota_messages.map(|v| v as u64),
                subscriptions,
                mailboxes,
            }))
        })
        .await
    }

    async fn restore_messages(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<RestoreRequest>>,
        write_blob: bool,
    ) -> Result<Vec<Appended>> {
        // Off the writer thread: it is the one thread that can write, and a restore is bound
        // by it.
        let rows = messages
            .iter()
            .map(|m| {
                Ok((
                    MetaRow::of(&m.append.message)?,
                    keywords_to_text(&m.append.keywords),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // Bodies in hash order: consecutive inserts into the hash-keyed B-trees then land on
        // neighbouring pages, still in SQLite's cache.
        let mut by_hash: Vec<usize> = (0..rows.len()).collect();
        by_hash.sort_unstable_by(|&a, &b| rows[a].0.hash.cmp(&rows[b].0.hash));
        self.write(move |c| {
            let modseq = bump_modseq(c, account)?;
            let record = mailbox_by_id(c, account, mailbox)?;
            let (uids, uidnext) = restored_uids(record.uidnext, messages.iter().map(|m| m.uid));
            let now = now_unix();
            for &i in &by_hash {
                insert_message_row(c, &messages[i].append.message, &rows[i].0, write_blob, now)?;
            }
            let mut out = Vec::with_capacity(uids.len());
            for ((m, (row, keywords)), uid) in messages.iter().zip(&rows).zip(uids) {
                let msg = &m.append.message;
                insert_entry(
                    c,
                    account,
                    mailbox,
                    uid,
                    &row.hash,
                    msg.blob.size as i64,
                    m.append.flags,
                    keywords,
                    modseq,
                    msg.received_at,
                )?;
                out.push(Appended {
                    uidvalidity: record.uidvalidity,
                    uid,
                    modseq: modseq as u64,
                });
            }
            c.prepare_cached("UPDATE mailboxes SET uidnext = ?1, highestmodseq = ?2 WHERE id = ?3")
                .and_then(|mut st| st.execute(params![uidnext as i64, modseq, mailbox]))
                .map_err(map_err)?;
            Ok(out)
        })
        .await
    }

    async fn restore_mailbox_state(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uidvalidity: Option<u32>,
        uidnext: u32,
    ) -> Result<MailboxRecord> {
        self.write(move |c| {
            if let Some(v) = uidvalidity {
                c.execute(
                    "UPDATE mailboxes SET uidvalidity = ?1
                     WHERE id = ?2 AND account_id = ?3 AND uidnext = 1",
                    params![v as i64, mailbox, account],
                )
                .map_err(map_err)?;
                // A mailbox made later must still get a UIDVALIDITY above every earlier one.
                c.execute(
                    "UPDATE accounts SET last_uidvalidity = max(last_uidvalidity, ?1) WHERE id = ?2",
                    params![v as i64, account],
                )
                .map_err(map_err)?;
            }
            c.execute(
                "UPDATE mailboxes SET uidnext = max(uidnext, ?1) WHERE id = ?2 AND account_id = ?3",
                params![uidnext as i64, mailbox, account],
            )
            .map_err(map_err)?;
            mailbox_by_id(c, account, mailbox)
        })
        .await
    }

    async fn referenced_hashes(
        &self,
        after: Option<BlobHash>,
        limit: usize,
    ) -> Result<Vec<BlobHash>> {
        let after = after.map(|h| h.to_hex()).unwrap_or_default();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT hash FROM (SELECT hash FROM mailbox_messages WHERE hash > ?1
                                       UNION SELECT hash FROM queue_messages WHERE hash > ?1)
                     ORDER BY hash LIMIT ?2",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![after, limit as i64], |r| r.get::<_, String>(0))
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(|h| h.parse()))
                .collect()
        })
        .await
    }

    async fn check_invariants(&self, repair: bool) -> Result<Vec<Invariant>> {
        // Counted in a read transaction: the checks scan whole tables, and the single writer
        // (every delivery) must not wait for them. Only repairs take it.
        let counts = self
            .read(|c| {
                crate::invariants::CHECKS
                    .iter()
                    .map(|(_, query)| {
                        c.query_row(query, [], |r| r.get::<_, i64>(0))
                            .map_err(map_err)
                    })
                    .collect::<Result<Vec<i64>>>()
            })
            .await?;
        let fixes: Vec<&'static str> = counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| repair && n > 0)
            .filter_map(|(i, _)| crate::invariants::repair_sqlite(i))
            .collect();
        if !fixes.is_empty() {
            // The repairs only raise counters to what the rows say (or move a message to its
            // mailbox's owner), so running one that another write already made unnecessary
            // changes nothing.
            self.write(move |c| {
                for fix in fixes {
                    c.execute(fix, []).map_err(map_err)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(crate::invariants::CHECKS
            .iter()
            .zip(counts)
            .enumerate()
            .map(|(i, ((name, _), n))| Invariant {
                name,
                violations: n as u64,
                repaired: repair && n > 0 && crate::invariants::repair_sqlite(i).is_some(),
            })
            .collect())
    }

    async fn collect_garbage(&self, before: i64, limit: usize) -> Result<Collected> {
        // One writer at a time: no delivery can add a reference between the check and the
        // removal.
        self.write(move |c| {
            let mut st = c
                .prepare_cached(
                    "DELETE FROM blobs WHERE hash IN (
                         SELECT b.hash FROM blobs b WHERE b.created < ?1
                           AND NOT EXISTS (SELECT 1 FROM mailbox_messages m WHERE m.hash = b.hash)
                           AND NOT EXISTS (SELECT 1 FROM queue_messages q WHERE q.hash = b.hash)
                         LIMIT ?2)
                     RETURNING size",
                )
                .map_err(map_err)?;
            let sizes = st
                .query_map(params![before, limit as i64], |r| r.get::<_, i64>(0))
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            Ok(Collected {
                bodies: sizes.len() as u64,
                bytes: sizes.iter().map(|&s| s as u64).sum(),
            })
        })
        .await
    }

    async fn shared_with(&self, grantee: AccountId) -> Result<Vec<SharedMailbox>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT m.id, m.account_id, m.name, m.special_use, m.uidvalidity, m.uidnext,
                            m.highestmodseq, o.address, l.rights
                     FROM mailbox_acl l
                     JOIN mailboxes m ON m.id = l.mailbox_id
                     JOIN accounts o ON o.id = m.account_id
                     WHERE l.grantee_id = ?1 ORDER BY o.address, m.name",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([grantee], |r| {
                    Ok(SharedMailbox {
                        mailbox: mailbox_row(r)?,
                        owner: r.get(7)?,
                        rights: r.get(8)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn prune_delivery_ids(&self, before: i64) -> Result<u64> {
        self.write(move |c| {
            c.execute("DELETE FROM deliveries WHERE created < ?1", [before])
                .map(|n| n as u64)
                .map_err(map_err)
        })
        .await
    }

    async fn lease_maildrop(&self, account: AccountId, holder: &str, until: i64) -> Result<bool> {
        let holder = holder.to_string();
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO maildrop_leases (account_id, holder, expires) VALUES (?1, ?2, ?3)
                     ON CONFLICT (account_id) DO UPDATE SET holder = excluded.holder,
                       expires = excluded.expires
                     WHERE maildrop_leases.holder = excluded.holder OR maildrop_leases.expires < ?4",
                    params![account, holder, until, now_unix()],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_maildrop(&self, account: AccountId, holder: &str) -> Result<()> {
        let holder = holder.to_string();
        self.write(move |c| {
            c.execute(
                "DELETE FROM maildrop_leases WHERE account_id = ?1 AND holder = ?2",
                params![account, holder],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn quota(&self, account: AccountId) -> Result<Quota> {
        self.read(move |c| quota_of(c, account)).await
    }

    async fn set_quota(
        &self,
        address: &str,
        storage: Option<u64>,
        messages: Option<u64>,
    ) -> Result<()> {
        let address = address.to_string();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE accounts SET quota_storage = ?2, quota_messages = ?3 WHERE address = ?1",
                    params![address, storage.map(|v| v as i64), messages.map(|v| v as i64)],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("account {address}")));
            }
            Ok(())
        })
        .await
    }

    async fn search_index(&self, query: &TextQuery) -> Result<Vec<i64>> {
        let parts = query.parts().to_vec();
        self.read(move |c| {
            let Some(query) = fts5_terms(c, &parts)? else {
                return Ok(Vec::new());
            };
            let mut st = c
                .prepare_cached("SELECT rowid FROM text_index WHERE text_index MATCH ?1")
                .map_err(map_err)?;
            let rows = st.query_map([query], |r| r.get(0)).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<i64>>>()
                .map_err(map_err)
        })
        .await
    }

    async fn search_unindexed(&self) -> Result<Vec<BlobHash>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT hash FROM search_backlog UNION ALL SELECT hash FROM search_unindexable",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(map_err)?;
            rows.map(|h| h.map_err(map_err)?.parse()).collect()
        })
        .await
    }

    async fn search_texts(
        &self,
        hashes: &[BlobHash],
        parts: TextParts,
    ) -> Result<Vec<(BlobHash, SearchText)>> {
        let hashes = hashes.to_vec();
        self.read(move |c| {
            let sql = format!(
                "SELECT {} FROM message_text WHERE hash = ?1",
                text_columns(parts)
            );
            let mut st = c.prepare_cached(&sql).map_err(map_err)?;
            let mut out = Vec::with_capacity(hashes.len());
            for h in hashes {
                let row = st
                    .query_row([h.to_hex()], |r| {
                        Ok(SearchText {
                            header: r.get(0)?,
                            body: r.get(1)?,
                        })
                    })
                    .optional()
                    .map_err(map_err)?;
                if let Some(text) = row {
                    out.push((h, text));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn search_backlog(&self, limit: usize) -> Result<Vec<(BlobHash, Option<SearchText>)>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT b.hash, t.header, t.body FROM search_backlog b
                     LEFT JOIN message_text t ON t.hash = b.hash LIMIT ?1",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([limit as i64], |r| {
                    let header: Option<String> = r.get(1)?;
                    let body: Option<String> = r.get(2)?;
                    Ok((
                        r.get::<_, String>(0)?,
                        header.map(|header| SearchText {
                            header,
                            body: body.unwrap_or_default(),
                        }),
                    ))
                })
                .map_err(map_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)?;
            rows.into_iter().map(|(h, t)| Ok((h.parse()?, t))).collect()
        })
        .await
    }

    async fn index_backlogged(&self, hash: &BlobHash, text: &IndexedText) -> Result<()> {
        let key = *hash;
        let hash = hash.to_hex();
        let text = text.clone();
        self.write(move |c| {
            // The writer runs each job in a savepoint of its group transaction.
            let taken = c
                .execute("DELETE FROM search_backlog WHERE hash = ?1", [&hash])
                .map_err(map_err)?;
            if taken == 0 {
                return Ok(());
            }
            // A text already stored stays as it is; only its index entry is made.
            c.execute(
                "INSERT INTO message_text (hash, header, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (hash) DO NOTHING",
                params![hash, text.text.header, text.text.body],
            )
            .map_err(map_err)?;
            index_text(c, &key, &text)
        })
        .await
    }

    async fn tidy_search_index(&self) -> Result<()> {
        // SQLite's B-trees take each entry in place: there is nothing pending to move.
        Ok(())
    }

    async fn record_corruption(&self, hash: &BlobHash, detail: &str) -> Result<()> {
        let hash = hash.to_hex();
        let detail = detail.to_string();
        self.write(move |c| {
            let now = now_unix();
            c.execute(
                "INSERT INTO blob_faults (hash, detail, first_seen, last_seen, count)
                 VALUES (?1, ?2, ?3, ?3, 1)
                 ON CONFLICT (hash) DO UPDATE SET detail = excluded.detail,
                   last_seen = excluded.last_seen, count = blob_faults.count + 1",
                params![hash, detail, now],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl BlobStore for SqliteStore {
    async fn put_blob(&self, blob: &StoredBlob) -> Result<()> {
        let blob = blob.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO blobs (hash, size, compression, data, created) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hash) DO NOTHING",
            )
            .and_then(|mut st| {
                st.execute(params![
                    blob.hash.to_hex(),
                    blob.size as i64,
                    blob.compression as i64,
                    blob.data,
                    now_unix()
                ])
            })
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn replace_blob(&self, blob: &StoredBlob) -> Result<()> {
        let blob = blob.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO blobs (hash, size, compression, data, created) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hash) DO UPDATE SET size = excluded.size,
                     compression = excluded.compression, data = excluded.data",
                params![
                    blob.hash.to_hex(),
                    blob.size as i64,
                    blob.compression as i64,
                    blob.data,
                    now_unix()
                ],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_blob(&self, hash: &BlobHash) -> Result<Option<StoredBlob>> {
        let hash = *hash;
        self.read(move |c| {
            let row: Option<(i64, i64, Vec<u8>)> = c
                .prepare_cached("SELECT size, compression, data FROM blobs WHERE hash = ?1")
                .and_then(|mut st| {
                    st.query_row([hash.to_hex()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()
                })
                .map_err(map_err)?;
            row.map(|(size, compression, data)| {
                Ok(StoredBlob {
                    hash,
                    size: size as u64,
                    compression: Compression::from_code(compression)?,
                    data,
                })
            })
            .transpose()
        })
        .await
    }

    fn shares_metadata_transaction(&self) -> bool {
        true
    }
}
