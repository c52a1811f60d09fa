//! The cluster back end: PostgreSQL holds metadata and (by default) bodies.
//!
//! Durability: every transaction commits with `synchronous_commit = on`, set per session so that
//! a server default cannot weaken it. PostgreSQL flushes the WAL of concurrent committers
//! together, so parallel deliveries on the pool's connections share fsyncs (group commit)
//! without an explicit batch. Change notices for other processes are sent after commit, not
//! from inside the transaction, so as not to lose that (see `notices`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Timeouts};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use crate::blob::{BlobHash, BlobStore, Compression, StoredBlob};
use crate::error::{Result, StoreError};
use crate::migrate;
use crate::search::{IndexedText, SearchText, TextParts, TextQuery};
use crate::types::*;
use crate::{Change, MetaStore};

mod flags;
pub mod members;
mod notices;
mod queue;

pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    notifier: notices::Notifier,
    flags: flags::FlagWriter,
}

/// Pool size: enough for concurrent deliveries to share WAL flushes, small enough for a
/// default `max_connections` shared by several nodes.
const POOL_SIZE: usize = 16;
/// How long one attempt may wait for a connection, per host of a multi-host URL; the callers'
/// retry loop bounds the total. Short, because during a failover the first hosts tried may be
/// the dead or cut-off ones.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long sent data may go unacknowledged before the kernel drops the connection
/// (TCP_USER_TIMEOUT, RFC 5482). A server that is merely slow (a commit waiting for its
/// synchronous standby) still acknowledges our packets; only a dead or cut-off host does not.
/// Without it, a query sent to a primary that was partitioned away would wait for TCP's
/// retransmissions to give up, some fifteen minutes.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepalive probes find a dead peer of an idle connection (the change feed's LISTEN, pooled
/// connections) within about KEEPALIVE_IDLE + 3 × KEEPALIVE_INTERVAL.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Sorts PostgreSQL's errors into temporary and permanent ones (G2).
pub(crate) fn map_err(e: tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        let text = e.to_string();
        // No SQLSTATE and not a conversion or row-count mistake of ours: the connection broke
        // or could not be made. A mistake of ours is not worth waiting for.
        let ours = [
            "error serializing",
            "error deserializing",
            "invalid column",
            "query returned an unexpected number of rows",
        ];
        if ours.iter().any(|p| text.starts_with(p)) {
            return StoreError::Internal(text);
        }
        return StoreError::Unavailable(text);
    };
    let text = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    };
    if *code == SqlState::DISK_FULL {
        StoreError::Full(text)
    } else if *code == SqlState::UNIQUE_VIOLATION {
        StoreError::AlreadyExists(text)
    } else if code.code().starts_with("08") // connection exception
        || code.code().starts_with("53") // insufficient resources
        || code.code().starts_with("57") // operator intervention: shutdown, cannot connect now
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION // a standby after failover
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        StoreError::Unavailable(text)
    } else {
        StoreError::Internal(format!("{text} (SQLSTATE {})", code.code()))
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => map_err(e),
        other => StoreError::Unavailable(format!("no PostgreSQL connection: {other}")),
    }
}

fn already(e: StoreError, what: String) -> StoreError {
    match e {
        StoreError::AlreadyExists(_) => StoreError::AlreadyExists(what),
        other => other,
    }
}

impl PostgresStore {
    pub async fn open(url: &str) -> Result<PostgresStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(3);
        // With several hosts (a cluster's members), only the primary can take writes: connect to
        // whichever host is it now, so that a failover needs no configuration change.
        if config.get_hosts().len() > 1
            && config.get_target_session_attrs() == TargetSessionAttrs::Any
        {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        // Statements are prepared once per connection and their parameters are keys, so one
        // generic plan serves every execution. Left to choose, PostgreSQL planned the hot
        // statements (arrays as parameters) afresh on every execution: a fifth of all CPU
        // under a STORE load.
        config.options("-c synchronous_commit=on -c plan_cache_mode=force_generic_plan");
        config.application_name("trimaran");
        // A new connection tries the hosts in turn, each for up to CONNECT_TIMEOUT: the pool
        // must give it time to reach the last one, or a cut-off host early in the list hides
        // a healthy primary behind it.
        let create_timeout =
            CONNECT_TIMEOUT * config.get_hosts().len().max(1) as u32 + Duration::from_secs(1);
        let config_for_feed = config.clone();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(create_timeout),
                create: Some(create_timeout),
                recycle: Some(CONNECT_TIMEOUT),
            })
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let store = PostgresStore {
            flags: flags::FlagWriter::start(pool.clone()),
            pool,
            notifier: notices::Notifier::start(config_for_feed.clone()),
            config: config_for_feed,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// The first column of a parameterless query, as strings.
    async fn strings(&self, sql: &str) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c.query(sql, &[]).await.map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        // Two nodes starting together must not both apply the same migration.
        tx.execute("SELECT pg_advisory_xact_lock(7461726)", &[])
            .await
            .map_err(map_err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await
            .map_err(map_err)?;
        let current: i64 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await
            .map_err(map_err)?
            .get(0);
        let known = migrate::latest(migrate::POSTGRES);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        for (version, sql) in migrate::POSTGRES.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(sql).await.map_err(map_err)?;
            tx.execute("DELETE FROM schema_version", &[])
                .await
                .map_err(map_err)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(map_err)?;
            tracing::info!(version, "applied PostgreSQL schema migration");
        }
        tx.commit().await.map_err(map_err)
    }
}

async fn domain_id(c: &impl GenericClient, domain: &str) -> Result<DomainId> {
    c.query_opt("SELECT id FROM domains WHERE name = $1", &[&domain])
        .await
        .map_err(map_err)?
        .map(|r| r.get(0))
        .ok_or_else(|| StoreError::NotFound(format!("domain {domain}")))
}

async fn address_domain_id(c: &impl GenericClient, address: &str) -> Result<DomainId> {
    let domain = domain_of(address)
        .ok_or_else(|| StoreError::Invalid(format!("{address:?} is not an address")))?;
    domain_id(c, domain).await
}

const MESSAGE_COLUMNS: &str =
    "mb.name, mm.uid, mm.size, mm.hash, meta.subject, mm.internal_date, mm.modseq
     FROM mailbox_messages mm
     JOIN mailboxes mb ON mb.id = mm.mailbox_id
     LEFT JOIN message_meta meta ON meta.hash = mm.hash";

fn message_record(r: &Row) -> Result<MessageRecord> {
    Ok(MessageRecord {
        mailbox: r.get(0),
        uid: r.get::<_, i64>(1) as u32,
        size: r.get::<_, i64>(2) as u64,
        hash: r.get::<_, String>(3).parse()?,
        subject: r.get(4),
        internal_date: r.get(5),
        modseq: r.get::<_, i64>(6) as u64,
    })
}

/// Text for a PostgreSQL text column. Those cannot hold U+0000 (SQLSTATE 22021), which a
/// message may well carry (a NUL in a literal8 APPEND or in a header field): it is stored as
/// U+FFFD, as lossy decoding marks what it could not keep. SQLite keeps it as it is; neither
/// can be searched for (IMAP search strings hold no NUL).
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A message's `message_meta` text columns: subject, first From address, Message-ID, and the
/// metadata as JSON.
struct MetaColumns<'a> {
    subject: Option<std::borrow::Cow<'a, str>>,
    from: Option<std::borrow::Cow<'a, str>>,
    message_id: Option<std::borrow::Cow<'a, str>>,
    json: String,
}

impl MetaColumns<'_> {
    fn of(msg: &NewMessage) -> Result<MetaColumns<'_>> {
        Ok(MetaColumns {
            subject: msg.meta.subject.as_deref().map(pg_text),
            from: msg
                .meta
                .from
                .first()
                .and_then(|a| a.address.as_deref())
                .map(pg_text),
            message_id: msg.meta.message_id.as_deref().map(pg_text),
            json: serde_json::to_string(&msg.meta)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        })
    }
}

async fn insert_message(
    tx: &deadpool_postgres::Transaction<'_>,
    msg: &NewMessage,
    write_blob: bool,
    now: i64,
) -> Result<()> {
    let hash = msg.blob.hash.to_hex();
    let size = msg.blob.size as i64;
    if write_blob {
        let st = tx
            .prepare_cached(
                // DO UPDATE ... WHERE false changes nothing but locks a body that is there
                // already until this transaction commits its reference, so that garbage
                // collection cannot remove it in between (see `collect_garbage`).
                "INSERT INTO blobs (hash, size, compression, data, created) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (hash) DO UPDATE SET size = EXCLUDED.size WHERE false",
            )
            .await
            .map_err(map_err)?;
        tx.execute(
            &st,
            &[
                &hash,
                &size,
                &(msg.blob.compression as i64),
                &msg.blob.data,
                &now,
            ],
        )
        .await
        .map_err(map_err)?;
    }
    let columns = MetaColumns::of(msg)?;
    let st = tx
        .prepare_cached(
            "INSERT INTO message_meta
               (hash, size, subject, from_addr, message_id, sent_date, meta, header)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (hash) DO NOTHING",
        )
        .await
        .map_err(map_err)?;
    tx.execute(
        &st,
        &[
            &hash,
            &size,
            &columns.subject.as_deref(),
            &columns.from.as_deref(),
            &columns.message_id.as_deref(),
            &msg.meta.date,
            &columns.json,
            &msg.header,
        ],
    )
    .await
    .map_err(map_err)?;
    // Every message is in the text index or waiting for it: never silently unsearchable.
    let backlog = match &msg.text {
        Some(indexed) => {
            let st = tx
                .prepare_cached(
                    "INSERT INTO message_text (hash, header, body) VALUES ($1, $2, $3)
                     ON CONFLICT (hash) DO NOTHING",
                )
                .await
                .map_err(map_err)?;
            let fresh = tx
                .execute(
                    &st,
                    &[
                        &hash,
                        &pg_text(&indexed.text.header),
                        &pg_text(&indexed.text.body),
                    ],
                )
                .await
                .map_err(map_err)?;
            if fresh > 0 && !indexed.deferred {
                index_text(tx, &msg.blob.hash, indexed).await?;
                // Delivered again while waiting in the backlog (stored before the index
                // existed): indexed now, and not a second time by the backlog.
                let st = tx
                    .prepare_cached("DELETE FROM search_backlog WHERE hash = $1")
                    .await
                    .map_err(map_err)?;
                tx.execute(&st, &[&hash]).await.map_err(map_err)?;
            }
            fresh > 0 && indexed.deferred
        }
        None => true,
    };
    if backlog {
        let st = tx
            .prepare_cached("INSERT INTO search_backlog (hash) VALUES ($1) ON CONFLICT DO NOTHING")
            .await
            .map_err(map_err)?;
        tx.execute(&st, &[&hash]).await.map_err(map_err)?;
    }
    Ok(())
}

/// [`insert_message`] for many messages that all go to the search backlog (restore), in three
/// statements instead of three per message: a restore is bound by round trips otherwise.
/// Bodies are taken in hash order, so that two restores sharing bodies lock them in one order.
async fn insert_unindexed_messages(
    tx: &Tx<'_>,
    messages: &[&NewMessage],
    write_blob: bool,
    now: i64,
) -> Result<()> {
    // One row per body: ON CONFLICT DO UPDATE may not touch a row twice in one statement.
    let unique: std::collections::BTreeMap<String, &NewMessage> = messages
        .iter()
        .map(|m| (m.blob.hash.to_hex(), *m))
        .collect();
    let hashes: Vec<&str> = unique.keys().map(String::as_str).collect();
    let sizes: Vec<i64> = unique.values().map(|m| m.blob.size as i64).collect();
    if write_blob {
        let compression: Vec<i64> = unique.values().map(|m| m.blob.compression as i64).collect();
        let data: Vec<&[u8]> = unique.values().map(|m| m.blob.data.as_ref()).collect();
        // As in `insert_message`: DO UPDATE ... WHERE false locks a body that is there already
        // against garbage collection until this transaction commits its references.
        let st = cached(
            tx,
            "INSERT INTO blobs (hash, size, compression, data, created)
             SELECT h, s, c, d, $5
             FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BYTEA[]) AS t(h, s, c, d)
             ON CONFLICT (hash) DO UPDATE SET size = EXCLUDED.size WHERE false",
        )
        .await?;
        tx.execute(&st, &[&hashes, &sizes, &compression, &data, &now])
            .await
            .map_err(map_err)?;
    }
    let mut subjects = Vec::with_capacity(unique.len());
    let mut froms = Vec::with_capacity(unique.len());
    let mut message_ids = Vec::with_capacity(unique.len());
    let mut dates = Vec::with_capacity(unique.len());
    let mut metas = Vec::with_capacity(unique.len());
    let mut headers = Vec::with_capacity(unique.len());
    for m in unique.values() {
        let columns = MetaColumns::of(m)?;
        subjects.push(columns.subject);
        froms.push(columns.from);
        message_ids.push(columns.message_id);
        dates.push(m.meta.date);
        metas.push(columns.json);
        headers.push(m.header.as_deref());
    }
    let st = cached(
        tx,
        "INSERT INTO message_meta
           (hash, size, subject, from_addr, message_id, sent_date, meta, header)
         SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                              $6::BIGINT[], $7::TEXT[], $8::BYTEA[])
         ON CONFLICT (hash) DO NOTHING",
    )
    .await?;
    tx.execute(
        &st,
        &[
            &hashes,
            &sizes,
            &subjects,
            &froms,
            &message_ids,
            &dates,
            &metas,
            &headers,
        ],
    )
    .await
    .map_err(map_err)?;
    // Every message is in the text index or waiting for it (as in `insert_message`).
    let st = cached(
        tx,
        "INSERT INTO search_backlog (hash) SELECT unnest($1::TEXT[]) ON CONFLICT DO NOTHING",
    )
    .await?;
    tx.execute(&st, &[&hashes]).await.map_err(map_err)?;
    Ok(())
}

/// Puts a message's tokens into the index under its key (see `search::index_key`).
async fn index_text(
    tx: &deadpool_postgres::Transaction<'_>,
    hash: &BlobHash,
    indexed: &IndexedText,
) -> Result<()> {
    let key = crate::search::index_key(hash);
    let hex = hash.to_hex();
    let Some(tokens) = &indexed.tokens else {
        return mark_unindexable(tx, &hex).await;
    };
    let st = tx
        .prepare_cached(
            "INSERT INTO text_index (key, hash, tokens) VALUES ($1, $2, array_to_tsvector($3::TEXT[]))
             ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens
               WHERE text_index.hash = excluded.hash",
        )
        .await
        .map_err(map_err)?;
    let n = tx
        .execute(&st, &[&key, &hex, tokens])
        .await
        .map_err(map_err)?;
    if n == 0 {
        tracing::warn!(hash = %hex, "search index key taken by another message; searched by its text");
        mark_unindexable(tx, &hex).await?;
    }
    Ok(())
}

/// Lists a message that is not in the index, so that searches check it against its text.
async fn mark_unindexable(tx: &deadpool_postgres::Transaction<'_>, hex: &str) -> Result<()> {
    let st = cached(
        tx,
        "INSERT INTO search_unindexable (hash) VALUES ($1) ON CONFLICT DO NOTHING",
    )
    .await?;
    tx.execute(&st, &[&hex]).await.map_err(map_err)?;
    Ok(())
}

fn text_columns(parts: TextParts) -> &'static str {
    match (parts.header, parts.body) {
        (true, true) => "hash, header, body",
        (true, false) => "hash, header, ''",
        (false, true) => "hash, '', body",
        (false, false) => "hash, '', ''",
    }
}

async fn deliver_tx(
    tx: &deadpool_postgres::Transaction<'_>,
    d: &Delivery,
    write_blob: bool,
) -> Result<DeliveryReceipt> {
    let now = now_unix();
    let fresh = tx
        .execute(
            "INSERT INTO deliveries (id, created) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            &[&d.id, &now],
        )
        .await
        .map_err(map_err)?;
    if fresh == 0 {
        return Ok(DeliveryReceipt {
            already_committed: true,
            ..DeliveryReceipt::default()
        });
    }
    for msg in d.messages() {
        insert_message(tx, msg, write_blob, now).await?;
    }
    let mut receipt = DeliveryReceipt::default();
    if let Some(local) = &d.local {
        deliver_local(tx, local, now, &mut receipt).await?;
    }
    if let Some(out) = d.outbound.as_ref().filter(|o| !o.recipients.is_empty()) {
        receipt.queue_id = Some(queue::enqueue(tx, out, now).await?);
    }
    Ok(receipt)
}

async fn deliver_local(
    tx: &deadpool_postgres::Transaction<'_>,
    local: &LocalDelivery,
    now: i64,
    receipt: &mut DeliveryReceipt,
) -> Result<()> {
    let msg = &local.message;
    let hash = msg.blob.hash.to_hex();
    let size = msg.blob.size as i64;
    let mut accounts = local.accounts.clone();
    // A fixed locking order: two deliveries to the same accounts never deadlock.
    accounts.sort_unstable();
    accounts.dedup();
    let next_modseq = tx
        .prepare_cached("UPDATE accounts SET modseq = modseq + 1 WHERE id = $1 RETURNING modseq")
        .await
        .map_err(map_err)?;
    let next_uid = tx
        .prepare_cached(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = $2
             WHERE account_id = $1 AND name = 'INBOX' RETURNING id, uidnext - 1",
        )
        .await
        .map_err(map_err)?;
    let insert_entry = tx
        .prepare_cached(
            "INSERT INTO mailbox_messages
               (mailbox_id, uid, account_id, hash, size, flags, keywords, modseq, internal_date)
             VALUES ($1, $2, $3, $4, $5, 0, '', $6, $7)",
        )
        .await
        .map_err(map_err)?;
    let insert_change = tx
        .prepare_cached(
            "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
             VALUES ($1, $2, 'append', $3, $4, $5)",
        )
        .await
        .map_err(map_err)?;
    for account in accounts {
        // The account's row before its INBOX's, as `lock_accounts` requires.
        let modseq: i64 = tx
            .query_one(&next_modseq, &[&account])
            .await
            .map_err(map_err)?
            .get(0);
        let row = tx
            .query_opt(&next_uid, &[&account, &modseq])
            .await
            .map_err(map_err)?
            .ok_or_else(|| StoreError::Internal(format!("account {account} has no INBOX")))?;
        let (mailbox_id, uid): (i64, i64) = (row.get(0), row.get(1));
        tx.execute(
            &insert_entry,
            &[
                &mailbox_id,
                &uid,
                &account,
                &hash,
                &size,
                &modseq,
                &msg.received_at,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.execute(
            &insert_change,
            &[&account, &modseq, &mailbox_id, &uid, &now],
        )
        .await
        .map_err(map_err)?;
        receipt.copies.push(DeliveredCopy {
            account_id: account,
            mailbox_id,
            uid: uid as u32,
            modseq: modseq as u64,
        });
    }
    Ok(())
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// A statement prepared once per connection: a statement given as text costs a round trip
/// to prepare every time, which on the paths every command takes doubled their round trips.
async fn cached(c: &impl GenericClient, sql: &str) -> Result<tokio_postgres::Statement> {
    c.prepare_cached(sql).await.map_err(map_err)
}

async fn bump_modseq(tx: &Tx<'_>, account: AccountId) -> Result<i64> {
    let st = cached(
        tx,
        "UPDATE accounts SET modseq = modseq + 1 WHERE id = $1 RETURNING modseq",
    )
    .await?;
    Ok(tx
        .query_one(&st, &[&account])
        .await
        .map_err(map_err)?
        .get(0))
}

const MAILBOX_COLUMNS: &str =
    "id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq FROM mailboxes";

fn mailbox_record(r: &Row) -> MailboxRecord {
    MailboxRecord {
        id: r.get(0),
        account_id: r.get(1),
        name: r.get(2),
        special_use: r.get(3),
        uidvalidity: r.get::<_, i64>(4) as u32,
        uidnext: r.get::<_, i64>(5) as u32,
        highestmodseq: r.get::<_, i64>(6) as u64,
    }
}

async fn mailbox_by_id(
    c: &impl GenericClient,
    account: AccountId,
    id: MailboxId,
) -> Result<MailboxRecord> {
    let st = cached(
        c,
        &format!("SELECT {MAILBOX_COLUMNS} WHERE id = $1 AND account_id = $2"),
    )
    .await?;
    c.query_opt(&st, &[&id, &account])
        .await
        .map_err(map_err)?
        .map(|r| mailbox_record(&r))
        .ok_or_else(|| StoreError::NotFound(format!("mailbox {id}")))
}

const ENTRY_COLUMNS: &str =
    "uid, hash, size, internal_date, flags, keywords, modseq FROM mailbox_messages";

fn message_entry(r: &Row) -> Result<MessageEntry> {
    message_entry_at(r, 0)
}

/// The entry whose `ENTRY_COLUMNS` start at column `at` of a wider row.
fn message_entry_at(r: &Row, at: usize) -> Result<MessageEntry> {
    Ok(MessageEntry {
        uid: r.get::<_, i64>(at) as u32,
        hash: r.get::<_, String>(at + 1).parse()?,
        size: r.get::<_, i64>(at + 2) as u64,
        internal_date: r.get(at + 3),
        flags: r.get(at + 4),
        keywords: keywords_from_text(r.get(at + 5)),
        modseq: r.get::<_, i64>(at + 6) as u64,
    })
}

/// Locks and returns the entries for `uids` that exist, in UID order.
async fn entries_for_update(
    tx: &Tx<'_>,
    mailbox: MailboxId,
    uids: &[u32],
) -> Result<Vec<MessageEntry>> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    let st = cached(
        tx,
        &format!("SELECT {ENTRY_COLUMNS} WHERE mailbox_id = $1 AND uid = ANY($2) ORDER BY uid FOR UPDATE"),
    )
    .await?;
    tx.query(&st, &[&mailbox, &uids])
        .await
        .map_err(map_err)?
        .iter()
        .map(message_entry)
        .collect()
}

/// Locks the rows of `accounts` in one order. Every transaction that changes an account's
/// messages or mailboxes takes its account's row before any of their rows (here or through
/// `bump_modseq`), so writers queue on that row and cannot deadlock on the others. Bodies
/// (`blobs` rows) come before it: a transaction that stores bodies does so first.
async fn lock_accounts(tx: &Tx<'_>, accounts: &[AccountId]) -> Result<()> {
    let st = cached(
        tx,
        "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .await?;
    tx.query(&st, &[&accounts]).await.map_err(map_err)?;
    Ok(())
}

/// Adds entries with consecutive new UIDs of `mailbox`; returns the UIDs.
async fn add_entries(
    tx: &Tx<'_>,
    account: AccountId,
    mailbox: MailboxId,
    entries: &[MessageEntry],
    modseq: i64,
) -> Result<Vec<u32>> {
    let n = entries.len() as i64;
    let first: i64 = tx
        .query_opt(
            "UPDATE mailboxes SET uidnext = uidnext + $3, highestmodseq = $4
             WHERE id = $1 AND account_id = $2 RETURNING uidnext - $3",
            &[&mailbox, &account, &n, &modseq],
        )
        .await
        .map_err(map_err)?
        .map(|r| r.get(0))
        .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox}")))?;
    let uids: Vec<u32> = (first..first + n).map(|u| u as u32).collect();
    insert_entries(tx, account, mailbox, &uids, entries, modseq).await?;
    Ok(uids)
}

/// Inserts entries under the given UIDs, with their `append` changes; the caller has moved
/// the mailbox's UIDNEXT past them.
async fn insert_entries(
    tx: &Tx<'_>,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[u32],
    entries: &[MessageEntry],
    modseq: i64,
) -> Result<()> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    let hashes: Vec<String> = entries.iter().map(|e| e.hash.to_hex()).collect();
    let sizes: Vec<i64> = entries.iter().map(|e| e.size as i64).collect();
    let flags: Vec<i64> = entries.iter().map(|e| e.flags).collect();
    let keywords: Vec<String> = entries
        .iter()
        .map(|e| keywords_to_text(&e.keywords))
        .collect();
    let dates: Vec<i64> = entries.iter().map(|e| e.internal_date).collect();
    tx.execute(
        "INSERT INTO mailbox_messages
           (mailbox_id, uid, account_id, hash, size, flags, keywords, modseq, internal_date)
         SELECT $1, u, $2, h, s, f, k, $3, d
         FROM unnest($4::BIGINT[], $5::TEXT[], $6::BIGINT[], $7::BIGINT[], $8::TEXT[], $9::BIGINT[])
           AS t(u, h, s, f, k, d)",
        &[
            &mailbox, &account, &modseq, &uids, &hashes, &sizes, &flags, &keywords, &dates,
        ],
    )
    .await
    .map_err(map_err)?;
    tx.execute(
        "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
         SELECT $1, $2, 'append', $3, u, $4 FROM unnest($5::BIGINT[]) AS u",
        &[&account, &modseq, &mailbox, &now_unix(), &uids],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Removes entries under MODSEQ `modseq`; returns the UIDs that were there.
async fn remove_entries(
    tx: &Tx<'_>,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[u32],
    modseq: i64,
) -> Result<Vec<u32>> {
    let uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
    let mut removed: Vec<i64> = tx
        .query(
            "DELETE FROM mailbox_messages WHERE mailbox_id = $1 AND uid = ANY($2) RETURNING uid",
            &[&mailbox, &uids],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    removed.sort_unstable();
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    tx.execute(
        "UPDATE mailboxes SET highestmodseq = $1 WHERE id = $2",
        &[&modseq, &mailbox],
    )
    .await
    .map_err(map_err)?;
    tx.execute(
        "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
         SELECT $1, $2, 'expunge', $3, u, $4 FROM unnest($5::BIGINT[]) AS u",
        &[&account, &modseq, &mailbox, &now_unix(), &removed],
    )
    .await
    .map_err(map_err)?;
    Ok(removed.into_iter().map(|u| u as u32).collect())
}

const QUOTA_QUERY: &str = "SELECT a.quota_storage, a.quota_messages,
       (SELECT coalesce(sum(size), 0)::BIGINT FROM mailbox_messages WHERE account_id = a.id),
       (SELECT count(*) FROM mailbox_messages WHERE account_id = a.id)
     FROM accounts a WHERE a.id = $1";

async fn quota_of(c: &impl GenericClient, account: AccountId) -> Result<Quota> {
    let r = c
        .query_opt(QUOTA_QUERY, &[&account])
        .await
        .map_err(map_err)?
        .ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
    Ok(Quota {
        storage_limit: r.get::<_, Option<i64>>(0).map(|v| v as u64),
        message_limit: r.get::<_, Option<i64>>(1).map(|v| v as u64),
        storage_used: r.get::<_, i64>(2) as u64,
        messages_used: r.get::<_, i64>(3) as u64,
    })
}

/// Refuses a change that adds `messages` messages of `bytes` past the account's quota. Runs
/// after the account row is locked by the MODSEQ bump, so concurrent changes see each other.
async fn check_quota(tx: &Tx<'_>, account: AccountId, messages: u64, bytes: u64) -> Result<()> {
    let quota = quota_of(tx, account).await?;
    if quota.exceeded_by(messages, bytes) {
        return Err(StoreError::OverQuota(format!(
            "{} messages, {} bytes in use",
            quota.messages_used, quota.storage_used
        )));
    }
    Ok(())
}

#[async_trait]
impl MetaStore for PostgresStore {
    async fn schema_version(&self) -> Result<i64> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT max(version) FROM schema_version", &[])
            .await
            .map_err(map_err)?;
        Ok(row.get(0))
    }

    async fn add_domain(&self, name: &str) -> Result<DomainId> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "INSERT INTO domains (name, created) VALUES ($1, $2) RETURNING id",
                &[&name, &now_unix()],
            )
            .await
            .map_err(|e| already(map_err(e), format!("domain {name}")))?;
        Ok(row.get(0))
    }

    async fn remove_domain(&self, name: &str) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let id = domain_id(&tx, name).await?;
        let users: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM accounts WHERE domain_id = $1)
                      + (SELECT count(*) FROM aliases WHERE domain_id = $1)",
                &[&id],
            )
            .await
            .map_err(map_err)?
            .get(0);
        if users > 0 {
            return Err(StoreError::Invalid(format!(
                "domain {name} still has {users} accounts or aliases; remove them first"
            )));
        }
        tx.execute("DELETE FROM domains WHERE id = $1", &[&id])
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_domains(&self) -> Result<Vec<String>> {
        self.strings("SELECT name FROM domains ORDER BY name").await
    }

    async fn domain_exists(&self, name: &str) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT 1 FROM domains WHERE name = $1")
            .await
            .map_err(map_err)?;
        Ok(c.query_opt(&st, &[&name]).await.map_err(map_err)?.is_some())
    }

    async fn add_dkim_key(&self, key: &DkimKey) -> Result<()> {
        let c = self.client().await?;
        let domain = domain_id(&c, &key.domain).await?;
        c.execute(
            "INSERT INTO dkim_keys
               (domain_id, selector, algorithm, private_key, public_key, created)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &domain,
                &key.selector,
                &key.algorithm,
                &key.private_key,
                &key.public_key,
                &now_unix(),
            ],
        )
        .await
        .map_err(|e| {
            already(
                map_err(e),
                format!(
                    "a DKIM key of {} under selector {}",
                    key.domain, key.selector
                ),
            )
        })?;
        Ok(())
    }

    async fn dkim_keys(&self) -> Result<Vec<DkimKey>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT d.name, k.selector, k.algorithm, k.private_key, k.public_key, k.created
                 FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
                 ORDER BY d.name, k.selector",
                &[],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| DkimKey {
                domain: r.get(0),
                selector: r.get(1),
                algorithm: r.get(2),
                private_key: r.get(3),
                public_key: r.get(4),
                created: r.get(5),
            })
            .collect())
    }

    async fn add_account(&self, address: &str, password_hash: &str) -> Result<AccountId> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let domain = address_domain_id(&tx, address).await?;
        let now = now_unix();
        let id: AccountId = tx
            .query_one(
                "INSERT INTO accounts (address, domain_id, password_hash, created)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&address, &domain, &password_hash, &now],
            )
            .await
            .map_err(|e| already(map_err(e), format!("account {address}")))?
            .get(0);
        for (name, special_use) in DEFAULT_MAILBOXES {
            tx.execute(
                "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, created)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, name, special_use, &(now as u32 as i64), &now],
            )
            .await
            .map_err(map_err)?;
            tx.execute(
                "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2)",
                &[&id, name],
            )
            .await
            .map_err(map_err)?;
        }
        tx.execute(
            "UPDATE accounts SET last_uidvalidity = $2 WHERE id = $1",
            &[&id, &(now as u32 as i64)],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(id)
    }

    async fn remove_account(&self, address: &str) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let id: AccountId = tx
            .query_opt("SELECT id FROM accounts WHERE address = $1", &[&address])
            .await
            .map_err(map_err)?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound(format!("account {address}")))?;
        tx.execute("DELETE FROM mailbox_messages WHERE account_id = $1", &[&id])
            .await
            .map_err(map_err)?;
        tx.execute("DELETE FROM accounts WHERE id = $1", &[&id])
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        self.strings("SELECT address FROM accounts ORDER BY address")
            .await
    }

    async fn set_password(&self, address: &str, password_hash: &str) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE accounts SET password_hash = $1 WHERE address = $2",
                &[&password_hash, &address],
            )
            .await
            .map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {address}")));
        }
        Ok(())
    }

    async fn account_by_address(&self, address: &str) -> Result<Option<AccountRecord>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT id, address, password_hash FROM accounts WHERE address = $1")
            .await
            .map_err(map_err)?;
        Ok(c.query_opt(&st, &[&address])
            .await
            .map_err(map_err)?
            .map(|r| AccountRecord {
                id: r.get(0),
                address: r.get(1),
                password_hash: r.get(2),
            }))
    }

    async fn add_alias(&self, address: &str, target: &str) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let domain = address_domain_id(&tx, address).await?;
        tx.execute(
            "INSERT INTO aliases (address, target, domain_id, created) VALUES ($1, $2, $3, $4)",
            &[&address, &target, &domain, &now_unix()],
        )
        .await
        .map_err(|e| already(map_err(e), format!("alias {address} -> {target}")))?;
        tx.commit().await.map_err(map_err)
    }

    async fn remove_alias(&self, address: &str, target: Option<&str>) -> Result<()> {
        let c = self.client().await?;
        let n = match target {
            Some(t) => {
                c.execute(
                    "DELETE FROM aliases WHERE address = $1 AND target = $2",
                    &[&address, &t],
                )
                .await
            }
            None => {
                c.execute("DELETE FROM aliases WHERE address = $1", &[&address])
                    .await
            }
        }
        .map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("alias {address}")));
        }
        Ok(())
    }

    async fn list_aliases(&self) -> Result<Vec<(String, String)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT address, target FROM aliases ORDER BY address, target",
                &[],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn alias_targets(&self, address: &str) -> Result<Vec<String>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT target FROM aliases WHERE address = $1 ORDER BY target")
            .await
            .map_err(map_err)?;
        let rows = c.query(&st, &[&address]).await.map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn deliver(&self, delivery: Arc<Delivery>, write_blob: bool) -> Result<DeliveryReceipt> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let receipt = deliver_tx(&tx, &delivery, write_blob).await?;
        tx.commit().await.map_err(map_err)?;
        let accounts: Vec<AccountId> = receipt.copies.iter().map(|c| c.account_id).collect();
        self.notifier.announce_accounts(&accounts).await;
        Ok(receipt)
    }

    async fn mailboxes(&self, account: AccountId) -> Result<Vec<MailboxRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &cached(
                    &c,
                    "SELECT id, account_id, name, special_use, uidvalidity, uidnext, highestmodseq
                 FROM mailboxes WHERE account_id = $1 ORDER BY name",
                )
                .await?,
                &[&account],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| MailboxRecord {
                id: r.get(0),
                account_id: r.get(1),
                name: r.get(2),
                special_use: r.get(3),
                uidvalidity: r.get::<_, i64>(4) as u32,
                uidnext: r.get::<_, i64>(5) as u32,
                highestmodseq: r.get::<_, i64>(6) as u64,
            })
            .collect())
    }

    async fn list_messages(
        &self,
        account: AccountId,
        mailbox: Option<&str>,
    ) -> Result<Vec<MessageRecord>> {
        let c = self.client().await?;
        let rows = match mailbox {
            Some(name) => {
                c.query(
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} WHERE mb.account_id = $1 AND mb.name = $2
                         ORDER BY mb.name, mm.uid"
                    ),
                    &[&account, &name],
                )
                .await
            }
            None => {
                c.query(
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} WHERE mb.account_id = $1 ORDER BY mb.name, mm.uid"
                    ),
                    &[&account],
                )
                .await
            }
        }
        .map_err(map_err)?;
        rows.iter().map(message_record).collect()
    }

    async fn find_message(
        &self,
        account: AccountId,
        mailbox: &str,
        uid: u32,
    ) -> Result<Option<MessageRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} WHERE mb.account_id = $1 AND mb.name = $2 AND mm.uid = $3"
                ),
                &[&account, &mailbox, &(uid as i64)],
            )
            .await
            .map_err(map_err)?;
        row.as_ref().map(message_record).transpose()
    }

    async fn message_meta(&self, hash: &BlobHash) -> Result<Option<MessageMeta>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &cached(&c, "SELECT meta FROM message_meta WHERE hash = $1").await?,
                &[&hash.to_hex()],
            )
            .await
            .map_err(map_err)?;
        row.map(|r| {
            serde_json::from_str(r.get::<_, &str>(0))
                .map_err(|e| StoreError::Internal(e.to_string()))
        })
        .transpose()
    }

    async fn message_metas(&self, hashes: &[BlobHash]) -> Result<Vec<(BlobHash, MessageMeta)>> {
        let keys: Vec<String> = hashes.iter().map(BlobHash::to_hex).collect();
        let c = self.client().await?;
        let rows = c
            .query(
                &cached(
                    &c,
                    "SELECT hash, meta FROM message_meta WHERE hash = ANY($1)",
                )
                .await?,
                &[&keys],
            )
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let meta = serde_json::from_str(r.get::<_, &str>(1))
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                Ok((r.get::<_, String>(0).parse()?, meta))
            })
            .collect()
    }

    async fn message_heads(
        &self,
        hashes: &[BlobHash],
    ) -> Result<Vec<(BlobHash, MessageMeta, Option<Vec<u8>>)>> {
        let keys: Vec<String> = hashes.iter().map(BlobHash::to_hex).collect();
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT hash, meta, header FROM message_meta WHERE hash = ANY($1)")
            .await
            .map_err(map_err)?;
        let rows = c.query(&st, &[&keys]).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let meta = serde_json::from_str(r.get::<_, &str>(1))
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                Ok((r.get::<_, String>(0).parse()?, meta, r.get(2)))
            })
            .collect()
    }

    async fn expunge(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<u32>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        lock_accounts(&tx, &[account]).await?;
        mailbox_by_id(&tx, account, mailbox).await?;
        let present: Vec<u32> = entries_for_update(&tx, mailbox, uids)
            .await?
            .iter()
            .map(|e| e.uid)
            .collect();
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let modseq = bump_modseq(&tx, account).await?;
        let removed = remove_entries(&tx, account, mailbox, &present, modseq).await?;
        tx.commit().await.map_err(map_err)?;
        self.notifier.announce(&[Change::of(account)]).await;
        Ok(removed)
    }

    async fn create_mailbox(
        &self,
        account: AccountId,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<MailboxRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // A UIDVALIDITY above every one this account has had (RFC 9051 §2.3.1.1).
        let uidvalidity: i64 = tx
            .query_one(
                "UPDATE accounts SET last_uidvalidity = greatest($2, last_uidvalidity + 1,
                    coalesce((SELECT max(uidvalidity) + 1 FROM mailboxes WHERE account_id = $1), 0))
                 WHERE id = $1 RETURNING last_uidvalidity",
                &[&account, &(now_unix() as u32 as i64)],
            )
            .await
            .map_err(map_err)?
            .get(0);
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, created)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {}",
                    MAILBOX_COLUMNS.trim_end_matches(" FROM mailboxes")
                ),
                &[&account, &name, &special_use, &uidvalidity, &now_unix()],
            )
            .await
            .map_err(|e| already(map_err(e), format!("mailbox {name}")))?;
        tx.commit().await.map_err(map_err)?;
        Ok(mailbox_record(&row))
    }

    async fn delete_mailbox(&self, account: AccountId, name: &str) -> Result<()> {
        if name.eq_ignore_ascii_case(INBOX) {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        lock_accounts(&tx, &[account]).await?;
        let id: MailboxId = tx
            .query_opt(
                "SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2 FOR UPDATE",
                &[&account, &name],
            )
            .await
            .map_err(map_err)?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {name}")))?;
        let children: i64 = tx
            .query_one(
                "SELECT count(*) FROM mailboxes WHERE account_id = $1
                   AND left(name, length($2) + 1) = $2 || '/'",
                &[&account, &name],
            )
            .await
            .map_err(map_err)?
            .get(0);
        if children > 0 {
            return Err(StoreError::Invalid(format!("mailbox {name} has children")));
        }
        let modseq = bump_modseq(&tx, account).await?;
        tx.execute(
            "INSERT INTO changes (account_id, modseq, kind, mailbox_id, uid, at)
             VALUES ($1, $2, 'mailbox-delete', $3, NULL, $4)",
            &[&account, &modseq, &id, &now_unix()],
        )
        .await
        .map_err(map_err)?;
        tx.execute("DELETE FROM mailbox_messages WHERE mailbox_id = $1", &[&id])
            .await
            .map_err(map_err)?;
        tx.execute("DELETE FROM mailboxes WHERE id = $1", &[&id])
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        self.notifier.announce(&[Change::of(account)]).await;
        Ok(())
    }

    async fn rename_mailbox(&self, account: AccountId, from: &str, to: &str) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        lock_accounts(&tx, &[account]).await?;
        let exists = tx
            .query_opt(
                "SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2",
                &[&account, &from],
            )
            .await
            .map_err(map_err)?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound(format!("mailbox {from}")));
        }
        for table in ["mailboxes", "subscriptions"] {
            tx.execute(
                &format!(
                    "UPDATE {table} SET name = $3 || substr(name, length($2) + 1)
                     WHERE account_id = $1 AND (name = $2 OR left(name, length($2) + 1) = $2 || '/')"
                ),
                &[&account, &from, &to],
            )
            .await
            .map_err(|e| already(map_err(e), format!("mailbox {to}")))?;
        }
        bump_modseq(&tx, account).await?;
        tx.commit().await.map_err(map_err)?;
        self.notifier.announce(&[Change::of(account)]).await;
        Ok(())
    }

    async fn subscriptions(&self, account: AccountId) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT name FROM subscriptions WHERE account_id = $1 ORDER BY name",
                &[&account],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn set_subscribed(&self, account: AccountId, name: &str, subscribed: bool) -> Result<()> {
        let c = self.client().await?;
        if subscribed {
            c.execute(
                "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&account, &name],
            )
            .await
        } else {
            c.execute(
                "DELETE FROM subscriptions WHERE account_id = $1 AND name = $2",
                &[&account, &name],
            )
            .await
        }
        .map_err(map_err)?;
        Ok(())
    }

    async fn mailbox(&self, account: AccountId, mailbox: MailboxId) -> Result<MailboxRecord> {
        let c = self.client().await?;
        mailbox_by_id(&c, account, mailbox).await
    }

    async fn mailbox_counts(&self, mailbox: MailboxId) -> Result<MailboxCounts> {
        let c = self.client().await?;
        let r = c
            .query_one(
                &cached(
                    &c,
                    "SELECT count(*), count(*) FILTER (WHERE flags & 1 = 0),
                        count(*) FILTER (WHERE flags & 8 <> 0), coalesce(sum(size), 0)::BIGINT,
                        coalesce(sum(size) FILTER (WHERE flags & 8 <> 0), 0)::BIGINT
                 FROM mailbox_messages WHERE mailbox_id = $1",
                )
                .await?,
                &[&mailbox],
            )
            .await
            .map_err(map_err)?;
        Ok(MailboxCounts {
            messages: r.get::<_, i64>(0) as u64,
            unseen: r.get::<_, i64>(1) as u64,
            deleted: r.get::<_, i64>(2) as u64,
            size: r.get::<_, i64>(3) as u64,
            deleted_size: r.get::<_, i64>(4) as u64,
        })
    }

    async fn mailbox_entries(&self, mailbox: MailboxId) -> Result<Vec<MessageEntry>> {
        let c = self.client().await?;
        c.query(
            &cached(
                &c,
                &format!("SELECT {ENTRY_COLUMNS} WHERE mailbox_id = $1 ORDER BY uid"),
            )
            .await?,
            &[&mailbox],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(message_entry)
        .collect()
    }

    async fn mailbox_delta(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        since: u64,
    ) -> Result<MailboxDelta> {
        let c = self.client().await?;
        // One statement is one snapshot, so the record, the changed messages and the expunged
        // UIDs agree without a transaction: every command ends with this check (RFC 9051
        // §7: untagged updates), so its round trips count. The left join keeps the mailbox's
        // row when nothing changed.
        let st = cached(
            &c,
            "SELECT mb.id, mb.account_id, mb.name, mb.special_use, mb.uidvalidity, mb.uidnext,
                    mb.highestmodseq,
                    mm.uid, mm.hash, mm.size, mm.internal_date, mm.flags, mm.keywords, mm.modseq,
                    ARRAY(SELECT DISTINCT uid FROM changes WHERE mailbox_id = $1 AND modseq > $3
                            AND kind = 'expunge' ORDER BY uid)
             FROM mailboxes mb
             LEFT JOIN mailbox_messages mm ON mm.mailbox_id = mb.id AND mm.modseq > $3
             WHERE mb.id = $1 AND mb.account_id = $2
             ORDER BY mm.uid",
        )
        .await?;
        let rows = c
            .query(&st, &[&mailbox, &account, &(since as i64)])
            .await
            .map_err(map_err)?;
        let first = rows
            .first()
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox}")))?;
        let mut changed = Vec::new();
        for r in &rows {
            if r.get::<_, Option<i64>>(7).is_some() {
                changed.push(message_entry_at(r, 7)?);
            }
        }
        Ok(MailboxDelta {
            mailbox: mailbox_record(first),
            changed,
            expunged: first
                .get::<_, Vec<i64>>(14)
                .into_iter()
                .map(|u| u as u32)
                .collect(),
        })
    }

    async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<AppendRequest>>,
        write_blob: bool,
    ) -> Result<Vec<Appended>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let record = mailbox_by_id(&tx, account, mailbox).await?;
        let now = now_unix();
        // Bodies before the account row, as a delivery takes them, so the two cannot deadlock.
        for m in messages.iter() {
            insert_message(&tx, &m.message, write_blob, now).await?;
        }
        let modseq = bump_modseq(&tx, account).await?;
        let bytes: u64 = messages.iter().map(|m| m.message.blob.size).sum();
        check_quota(&tx, account, messages.len() as u64, bytes).await?;
        let mut entries = Vec::new();
        for m in messages.iter() {
            entries.push(MessageEntry {
                uid: 0,
                hash: m.message.blob.hash,
                size: m.message.blob.size,
                internal_date: m.message.received_at,
                flags: m.flags,
                keywords: m.keywords.clone(),
                modseq: modseq as u64,
            });
        }
        let uids = add_entries(&tx, account, mailbox, &entries, modseq).await?;
        tx.commit().await.map_err(map_err)?;
        self.notifier.announce(&[Change::of(account)]).await;
        Ok(uids
            .into_iter()
            .map(|uid| Appended {
                uidvalidity: record.uidvalidity,
                uid,
                modseq: modseq as u64,
            })
            .collect())
    }

    async fn update_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[u32],
        change: &FlagChange,
    ) -> Result<FlagOutcome> {
        let outcome = self.flags.update(account, mailbox, uids, change).await?;
        if let Some(change) = outcome.change(account) {
            self.notifier.announce(&[change]).await;
        }
        Ok(outcome)
    }

    async fn copy_messages(
        &self,
        (from_account, from): (AccountId, MailboxId),
        uids: &[u32],
        (to_account, to): (AccountId, MailboxId),
        remove_source: bool,
    ) -> Result<CopyOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        lock_accounts(&tx, &[from_account, to_account]).await?;
        mailbox_by_id(&tx, from_account, from).await?;
        let target = mailbox_by_id(&tx, to_account, to).await?;
        let sources = entries_for_update(&tx, from, uids).await?;
        let mut outcome = CopyOutcome {
            uidvalidity: target.uidvalidity,
            pairs: Vec::new(),
        };
        if sources.is_empty() {
            return Ok(outcome);
        }
        let within = from_account == to_account;
        let modseq = bump_modseq(&tx, to_account).await?;
        if !remove_source || !within {
            let bytes: u64 = sources.iter().map(|e| e.size).sum();
            check_quota(&tx, to_account, sources.len() as u64, bytes).await?;
        }
        let new_uids = add_entries(&tx, to_account, to, &sources, modseq).await?;
        outcome.pairs = sources.iter().map(|e| e.uid).zip(new_uids).collect();
        if remove_source {
            let uids: Vec<u32> = sources.iter().map(|e| e.uid).collect();
            let modseq = if within {
                modseq
            } else {
                bump_modseq(&tx, from_account).await?
            };
            remove_entries(&tx, from_account, from, &uids, modseq).await?;
        }
        tx.commit().await.map_err(map_err)?;
        let mut changed = vec![to_account];
        if remove_source && !within {
            changed.push(from_account);
        }
        self.notifier.announce_accounts(&changed).await;
        Ok(outcome)
    }

    async fn set_acl(
        &self,
        owner: AccountId,
        mailbox: MailboxId,
        grantee: &str,
        rights: Option<&str>,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        mailbox_by_id(&tx, owner, mailbox).await?;
        let id: AccountId = tx
            .query_opt("SELECT id FROM accounts WHERE address = $1", &[&grantee])
            .await
            .map_err(map_err)?
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound(format!("account {grantee}")))?;
        if id == owner {
            return Err(StoreError::Invalid(
                "the owner always holds every right".into(),
            ));
        }
        match rights.filter(|r| !r.is_empty()) {
            Some(r) => tx
                .execute(
                    "INSERT INTO mailbox_acl (mailbox_id, grantee_id, rights) VALUES ($1, $2, $3)
                     ON CONFLICT (mailbox_id, grantee_id) DO UPDATE SET rights = excluded.rights",
                    &[&mailbox, &id, &r],
                )
                .await
                .map_err(map_err)?,
            None => tx
                .execute(
                    "DELETE FROM mailbox_acl WHERE mailbox_id = $1 AND grantee_id = $2",
                    &[&mailbox, &id],
                )
                .await
                .map_err(map_err)?,
        };
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn mailbox_acl(
        &self,
        owner: AccountId,
        mailbox: MailboxId,
    ) -> Result<Vec<(String, String)>> {
        let c = self.client().await?;
        mailbox_by_id(&c, owner, mailbox).await?;
        let rows = c
            .query(
                "SELECT a.address, l.rights FROM mailbox_acl l
                 JOIN accounts a ON a.id = l.grantee_id
                 WHERE l.mailbox_id = $1 ORDER BY a.address",
                &[&mailbox],
            )
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn account_snapshot(&self, address: &str) -> Result<Option<AccountSnapshot>> {
        let mut c = self.client().await?;
        // One snapshot for every statement (REPEATABLE READ): a message moved meanwhile is
        // seen in exactly one mailbox.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(map_err)?;
        let Some(row) = tx
            .query_opt(
                "SELECT id, password_hash, quota_storage, quota_messages
                 FROM accounts WHERE address = $1",
                &[&address],
            )
            .await
            .map_err(map_err)?
        else {
            return Ok(None);
        };
        let id: AccountId = row.get(0);
        let subscriptions = tx
            .query(
                "SELECT name FROM subscriptions WHERE account_id = $1 ORDER BY name",
                &[&id],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let records: Vec<MailboxRecord> = tx
            .query(
                &format!("SELECT {MAILBOX_COLUMNS} WHERE account_id = $1 ORDER BY name"),
                &[&id],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(mailbox_record)
            .collect();
        let entries_st = cached(
            &tx,
            &format!("SELECT {ENTRY_COLUMNS} WHERE mailbox_id = $1 ORDER BY uid"),
        )
        .await?;
        let mut mailboxes = Vec::with_capacity(records.len());
        for mb in records {
            let messages = tx
                .query(&entries_st, &[&mb.id])
                .await
                .map_err(map_err)?
                .iter()
                .map(|r| message_entry(r).map(SnapshotMessage::from))
                .collect::<Result<Vec<_>>>()?;
            let acl = tx
                .query(
                    "SELECT a.address, l.rights FROM mailbox_acl l
                     JOIN accounts a ON a.id = l.grantee_id
                     WHERE l.mailbox_id = $1 ORDER BY a.address",
                    &[&mb.id],
                )
                .await
                .map_err(map_err)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
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
        tx.commit().await.map_err(map_err)?;
        Ok(Some(AccountSnapshot {
            address: address.to_string(),
            password_hash: row.get(1),
            quota_storage: row.get::<_, Option<i64>>(2).map(|v| v as u64),
            quota_messages: row.get::<_, Option<i64>>(3).map(|v| v as u64),
            subscriptions,
            mailboxes,
        }))
    }

    async fn restore_messages(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        messages: Arc<Vec<RestoreRequest>>,
        write_blob: bool,
    ) -> Result<Vec<Appended>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let now = now_unix();
        // Bodies before the account row, as a delivery takes them, so the two cannot deadlock.
        // Restored mail is indexed by the background indexer, from the backlog.
        let bodies: Vec<&NewMessage> = messages.iter().map(|m| &m.append.message).collect();
        if bodies.iter().all(|m| m.text.is_none()) {
            insert_unindexed_messages(&tx, &bodies, write_blob, now).await?;
        } else {
            for m in &bodies {
                insert_message(&tx, m, write_blob, now).await?;
            }
        }
        // The account row before the mailbox's, as every writer of its mailboxes takes it
        // (`lock_accounts`).
        let modseq = bump_modseq(&tx, account).await?;
        let record = tx
            .query_opt(
                &format!("SELECT {MAILBOX_COLUMNS} WHERE id = $1 AND account_id = $2 FOR UPDATE"),
                &[&mailbox, &account],
            )
            .await
            .map_err(map_err)?
            .map(|r| mailbox_record(&r))
            .ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox}")))?;
        let (uids, uidnext) = restored_uids(record.uidnext, messages.iter().map(|m| m.uid));
        let entries: Vec<MessageEntry> = messages
            .iter()
            .map(|m| MessageEntry {
                uid: 0,
                hash: m.append.message.blob.hash,
                size: m.append.message.blob.size,
                internal_date: m.append.message.received_at,
                flags: m.append.flags,
                keywords: m.append.keywords.clone(),
                modseq: modseq as u64,
            })
            .collect();
        insert_entries(&tx, account, mailbox, &uids, &entries, modseq).await?;
        tx.execute(
            "UPDATE mailboxes SET uidnext = $1, highestmodseq = $2 WHERE id = $3",
            &[&(uidnext as i64), &modseq, &mailbox],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        self.notifier.announce(&[Change::of(account)]).await;
        Ok(uids
            .into_iter()
            .map(|uid| Appended {
                uidvalidity: record.uidvalidity,
                uid,
                modseq: modseq as u64,
            })
            .collect())
    }

    async fn restore_mailbox_state(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uidvalidity: Option<u32>,
        uidnext: u32,
    ) -> Result<MailboxRecord> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        lock_accounts(&tx, &[account]).await?;
        if let Some(v) = uidvalidity {
            tx.execute(
                "UPDATE mailboxes SET uidvalidity = $1
                 WHERE id = $2 AND account_id = $3 AND uidnext = 1",
                &[&(v as i64), &mailbox, &account],
            )
            .await
            .map_err(map_err)?;
            // A mailbox made later must still get a UIDVALIDITY above every earlier one.
            tx.execute(
                "UPDATE accounts SET last_uidvalidity = GREATEST(last_uidvalidity, $1)
                 WHERE id = $2",
                &[&(v as i64), &account],
            )
            .await
            .map_err(map_err)?;
        }
        tx.execute(
            "UPDATE mailboxes SET uidnext = GREATEST(uidnext, $1) WHERE id = $2 AND account_id = $3",
            &[&(uidnext as i64), &mailbox, &account],
        )
        .await
        .map_err(map_err)?;
        let record = mailbox_by_id(&tx, account, mailbox).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn referenced_hashes(
        &self,
        after: Option<BlobHash>,
        limit: usize,
    ) -> Result<Vec<BlobHash>> {
        let after = after.map(|h| h.to_hex()).unwrap_or_default();
        let c = self.client().await?;
        c.query(
            "SELECT hash FROM (SELECT hash FROM mailbox_messages WHERE hash > $1
                               UNION SELECT hash FROM queue_messages WHERE hash > $1) h
             ORDER BY hash LIMIT $2",
            &[&after, &(limit as i64)],
        )
        .await
        .map_err(map_err)?
        .iter()
        .map(|r| r.get::<_, String>(0).parse())
        .collect()
    }

    async fn check_invariants(&self, repair: bool) -> Result<Vec<Invariant>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let mut out = Vec::new();
        for (i, (name, query)) in crate::invariants::CHECKS.iter().enumerate() {
            let violations: i64 = tx.query_one(*query, &[]).await.map_err(map_err)?.get(0);
            let mut repaired = false;
            if repair && violations > 0 {
                if let Some(fix) = crate::invariants::repair_postgres(i) {
                    tx.execute(fix, &[]).await.map_err(map_err)?;
                    repaired = true;
                }
            }
            out.push(Invariant {
                name,
                violations: violations as u64,
                repaired,
            });
        }
        tx.commit().await.map_err(map_err)?;
        Ok(out)
    }

    async fn collect_garbage(&self, before: i64, limit: usize) -> Result<Collected> {
        let c = self.client().await?;
        // A delivery locks the body row it stores or finds (see `insert_message`) until it
        // commits its reference: such rows are skipped, and a delivery that comes for a row
        // locked here waits, then finds it gone and writes it again.
        let rows = c
            .query(
                "WITH doomed AS (
                     SELECT b.hash FROM blobs b WHERE b.created < $1
                       AND NOT EXISTS (SELECT 1 FROM mailbox_messages m WHERE m.hash = b.hash)
                       AND NOT EXISTS (SELECT 1 FROM queue_messages q WHERE q.hash = b.hash)
                     LIMIT $2 FOR UPDATE OF b SKIP LOCKED)
                 DELETE FROM blobs b USING doomed d WHERE b.hash = d.hash
                   AND NOT EXISTS (SELECT 1 FROM mailbox_messages m WHERE m.hash = b.hash)
                   AND NOT EXISTS (SELECT 1 FROM queue_messages q WHERE q.hash = b.hash)
                 RETURNING b.size",
                &[&before, &(limit as i64)],
            )
            .await
            .map_err(map_err)?;
        Ok(Collected {
            bodies: rows.len() as u64,
            bytes: rows.iter().map(|r| r.get::<_, i64>(0) as u64).sum(),
        })
    }

    async fn shared_with(&self, grantee: AccountId) -> Result<Vec<SharedMailbox>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &cached(
                    &c,
                    "SELECT m.id, m.account_id, m.name, m.special_use, m.uidvalidity, m.uidnext,
                        m.highestmodseq, o.address, l.rights
                 FROM mailbox_acl l
                 JOIN mailboxes m ON m.id = l.mailbox_id
                 JOIN accounts o ON o.id = m.account_id
                 WHERE l.grantee_id = $1 ORDER BY o.address, m.name",
                )
                .await?,
                &[&grantee],
            )
            .await
            .map_err(map_err)?;
        Ok(rows
            .iter()
            .map(|r| SharedMailbox {
                mailbox: mailbox_record(r),
                owner: r.get(7),
                rights: r.get(8),
            })
            .collect())
    }

    async fn prune_delivery_ids(&self, before: i64) -> Result<u64> {
        let c = self.client().await?;
        c.execute("DELETE FROM deliveries WHERE created < $1", &[&before])
            .await
            .map_err(map_err)
    }

    async fn lease_maildrop(&self, account: AccountId, holder: &str, until: i64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO maildrop_leases (account_id, holder, expires) VALUES ($1, $2, $3)
                 ON CONFLICT (account_id) DO UPDATE SET holder = excluded.holder,
                   expires = excluded.expires
                 WHERE maildrop_leases.holder = excluded.holder OR maildrop_leases.expires < $4",
                &[&account, &holder, &until, &now_unix()],
            )
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn release_maildrop(&self, account: AccountId, holder: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM maildrop_leases WHERE account_id = $1 AND holder = $2",
            &[&account, &holder],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn quota(&self, account: AccountId) -> Result<Quota> {
        let c = self.client().await?;
        quota_of(&c, account).await
    }

    async fn set_quota(
        &self,
        address: &str,
        storage: Option<u64>,
        messages: Option<u64>,
    ) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE accounts SET quota_storage = $2, quota_messages = $3 WHERE address = $1",
                &[
                    &address,
                    &storage.map(|v| v as i64),
                    &messages.map(|v| v as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {address}")));
        }
        Ok(())
    }

    async fn search_index(&self, query: &TextQuery) -> Result<Vec<i64>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // For a common word the planner picks a sequential scan, which unpacks every message's
        // token list (TOASTed and compressed): seconds, where the GIN index takes milliseconds.
        tx.batch_execute("SET LOCAL enable_seqscan = off")
            .await
            .map_err(map_err)?;
        let st = tx
            .prepare_cached("SELECT key FROM text_index WHERE tokens @@ ($1::TEXT)::tsquery")
            .await
            .map_err(map_err)?;
        let rows = tx.query(&st, &[&query.tsquery()]).await.map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
    }

    async fn search_unindexed(&self) -> Result<Vec<BlobHash>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT hash FROM search_backlog UNION ALL SELECT hash FROM search_unindexable",
            )
            .await
            .map_err(map_err)?;
        let rows = c.query(&st, &[]).await.map_err(map_err)?;
        rows.iter().map(|r| r.get::<_, String>(0).parse()).collect()
    }

    async fn search_texts(
        &self,
        hashes: &[BlobHash],
        parts: TextParts,
    ) -> Result<Vec<(BlobHash, SearchText)>> {
        let keys: Vec<String> = hashes.iter().map(BlobHash::to_hex).collect();
        let sql = format!(
            "SELECT {} FROM message_text WHERE hash = ANY($1)",
            text_columns(parts)
        );
        let c = self.client().await?;
        let st = c.prepare_cached(&sql).await.map_err(map_err)?;
        let rows = c.query(&st, &[&keys]).await.map_err(map_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<_, String>(0).parse()?,
                    SearchText {
                        header: r.get(1),
                        body: r.get(2),
                    },
                ))
            })
            .collect()
    }

    async fn search_backlog(&self, limit: usize) -> Result<Vec<(BlobHash, Option<SearchText>)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT b.hash, t.header, t.body FROM search_backlog b
                 LEFT JOIN message_text t ON t.hash = b.hash LIMIT $1",
                &[&(limit as i64)],
            )
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| {
                let header: Option<String> = r.get(1);
                let body: Option<String> = r.get(2);
                Ok((
                    r.get::<_, String>(0).parse()?,
                    header.map(|header| SearchText {
                        header,
                        body: body.unwrap_or_default(),
                    }),
                ))
            })
            .collect()
    }

    async fn index_backlogged(&self, hash: &BlobHash, text: &IndexedText) -> Result<()> {
        let key = *hash;
        let hash = hash.to_hex();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        // A second process indexing the same message waits here for the first, then finds
        // nothing left to do.
        let taken = tx
            .execute("DELETE FROM search_backlog WHERE hash = $1", &[&hash])
            .await
            .map_err(map_err)?;
        if taken == 0 {
            return Ok(());
        }
        // A text already stored stays as it is; only its index entry is made again.
        tx.execute(
            "INSERT INTO message_text (hash, header, body) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
            &[
                &hash,
                &pg_text(&text.text.header),
                &pg_text(&text.text.body),
            ],
        )
        .await
        .map_err(map_err)?;
        index_text(&tx, &key, text).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn tidy_search_index(&self) -> Result<()> {
        // A GIN index takes new entries into an unsorted pending list (fastupdate), which
        // every search reads whole, and merges it into the index only once it passes 4 MB or
        // at the next VACUUM: up to half of a common word's search time on 100,000 messages.
        // Merging it whenever the indexer is idle keeps searches off it; the work is the
        // merge the next insert or VACUUM would have done.
        let c = self.client().await?;
        let st = cached(
            &c,
            "SELECT gin_clean_pending_list('text_index_tokens'::regclass)",
        )
        .await?;
        c.query_one(&st, &[]).await.map_err(map_err)?;
        Ok(())
    }

    fn start_change_feed(&self, feed: tokio::sync::broadcast::Sender<Change>) {
        tokio::spawn(notices::change_feed(self.config.clone(), feed.downgrade()));
    }

    async fn record_corruption(&self, hash: &BlobHash, detail: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO blob_faults (hash, detail, first_seen, last_seen, count)
             VALUES ($1, $2, $3, $3, 1)
             ON CONFLICT (hash) DO UPDATE SET detail = excluded.detail,
               last_seen = excluded.last_seen, count = blob_faults.count + 1",
            &[&hash.to_hex(), &detail, &now_unix()],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl BlobStore for PostgresStore {
    async fn put_blob(&self, blob: &StoredBlob) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO blobs (hash, size, compression, data, created) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (hash) DO NOTHING",
            &[
                &blob.hash.to_hex(),
                &(blob.size as i64),
                &(blob.compression as i64),
                &blob.data,
                &now_unix(),
            ],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn replace_blob(&self, blob: &StoredBlob) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO blobs (hash, size, compression, data, created) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (hash) DO UPDATE SET size = EXCLUDED.size,
                 compression = EXCLUDED.compression, data = EXCLUDED.data",
            &[
                &blob.hash.to_hex(),
                &(blob.size as i64),
                &(blob.compression as i64),
                &blob.data,
                &now_unix(),
            ],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_blob(&self, hash: &BlobHash) -> Result<Option<StoredBlob>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT size, compression, data FROM blobs WHERE hash = $1")
            .await
            .map_err(map_err)?;
        let row = c.query_opt(&st, &[&hash.to_hex()]).await.map_err(map_err)?;
        row.map(|r| {
            Ok(StoredBlob {
                hash: *hash,
                size: r.get::<_, i64>(0) as u64,
                compression: Compression::from_code(r.get(1))?,
                data: r.get(2),
            })
        })
        .transpose()
    }

    fn shares_metadata_transaction(&self) -> bool {
        true
    }
}
