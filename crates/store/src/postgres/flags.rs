//! Flag changes (IMAP STORE) on PostgreSQL.
//!
//! A flag change alone costs two statements and a durable commit; under many concurrent STOREs
//! that per-transaction work was most of PostgreSQL's time. So changes that arrive while
//! another is being written are grouped: one transaction of three statements (lock, read,
//! write) and one commit for the lot (group commit done by us, as PostgreSQL does for
//! concurrent commits' WAL flushes).
//! A few writes are under way at once; changes that arrive meanwhile form the next group, and
//! a change that finds nothing under way is written alone, as before.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::types::ToSql;

use super::{cached, lock_accounts, map_err, message_entry, message_entry_at, pool_err};
use crate::error::{Result, StoreError};
use crate::types::*;

/// Most changes written in one transaction.
const MAX_GROUP: usize = 64;

/// Writes (groups or lone changes) under way at once. One at a time left the machine idle
/// between round trips (a STORE waited for the group before its own); a few overlap them.
const IN_FLIGHT: usize = 3;

/// How long a write may hold its place among those in flight.
const INLINE_WAIT: Duration = Duration::from_millis(50);

struct Request {
    account: AccountId,
    mailbox: MailboxId,
    uids: Vec<i64>,
    change: FlagChange,
    reply: oneshot::Sender<Result<FlagOutcome>>,
}

/// Takes flag changes from every session of this process and writes them, grouping those that
/// wait at the same time.
pub(super) struct FlagWriter {
    requests: mpsc::UnboundedSender<Request>,
}

impl FlagWriter {
    /// Starts the writing task; it ends when the writer is dropped.
    pub(super) fn start(pool: Pool) -> FlagWriter {
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(write_changes(pool, received));
        FlagWriter { requests }
    }

    pub(super) async fn update(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: &[u32],
        change: &FlagChange,
    ) -> Result<FlagOutcome> {
        let mut uids: Vec<i64> = uids.iter().map(|&u| u as i64).collect();
        uids.sort_unstable();
        uids.dedup();
        let (reply, answer) = oneshot::channel();
        let request = Request {
            account,
            mailbox,
            uids,
            change: change.clone(),
            reply,
        };
        let gone = || StoreError::Unavailable("the flag writer stopped".into());
        self.requests.send(request).map_err(|_| gone())?;
        let mut outcome = answer.await.map_err(|_| gone())??;
        outcome.updated.sort_by_key(|e| e.uid);
        outcome.modified.sort_unstable();
        Ok(outcome)
    }
}

async fn write_changes(pool: Pool, mut received: mpsc::UnboundedReceiver<Request>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // While every write in flight is busy, the next changes queue up: the next group.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = received.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match received.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        // One change per account in a group: each account's changes in the group take one
        // MODSEQ, and two sessions' changes under one MODSEQ would each look like all there is
        // to show (see the STORE command). The others go alone and queue on the account's lock.
        let mut accounts = HashSet::new();
        let (grouped, alone): (Vec<Request>, Vec<Request>) =
            group.into_iter().partition(|r| accounts.insert(r.account));
        for request in alone {
            tokio::spawn(write_alone(pool.clone(), request));
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let write = async {
                if grouped.len() == 1 {
                    let request = grouped.into_iter().next().expect("one");
                    write_alone(pool, request).await
                } else {
                    write_group(pool, grouped).await
                }
            };
            tokio::pin!(write);
            // A write stuck behind a lock (a large COPY in the same account) gives its place
            // up and finishes on its own.
            let quick = tokio::time::timeout(INLINE_WAIT, &mut write).await;
            drop(permit);
            if quick.is_err() {
                write.await;
            }
        });
    }
}

async fn write_alone(pool: Pool, r: Request) {
    let outcome = alone(&pool, r.account, r.mailbox, &r.uids, &r.change).await;
    let _ = r.reply.send(outcome);
}

/// One change in its own statements. Optimistic first: two autocommitted statements instead of
/// a transaction of five round trips. Messages another session changed in between are done
/// again under the account's lock, where no one else can change them.
async fn alone(
    pool: &Pool,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[i64],
    change: &FlagChange,
) -> Result<FlagOutcome> {
    let mut c = pool.get().await.map_err(pool_err)?;
    let mut outcome = FlagOutcome::default();
    let lost = flag_round(&c, account, mailbox, uids, change, &mut outcome).await?;
    if !lost.is_empty() {
        let tx = c.transaction().await.map_err(map_err)?;
        lock_accounts(&tx, &[account]).await?;
        let lost = flag_round(&tx, account, mailbox, &lost, change, &mut outcome).await?;
        if !lost.is_empty() {
            return Err(StoreError::Internal(format!(
                "messages {lost:?} changed while their account was locked"
            )));
        }
        tx.commit().await.map_err(map_err)?;
    }
    Ok(outcome)
}

/// One round of a flag change: reads the entries of `uids`, writes the new flags of those
/// whose MODSEQ is still the one read, and returns the UIDs another writer got to first.
async fn flag_round(
    c: &impl GenericClient,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[i64],
    change: &FlagChange,
    outcome: &mut FlagOutcome,
) -> Result<Vec<i64>> {
    let read = cached(
        c,
        "SELECT mm.uid, mm.hash, mm.size, mm.internal_date, mm.flags, mm.keywords, mm.modseq
         FROM mailboxes mb
         LEFT JOIN mailbox_messages mm ON mm.mailbox_id = mb.id AND mm.uid = ANY($3)
         WHERE mb.id = $1 AND mb.account_id = $2
         ORDER BY mm.uid",
    )
    .await?;
    let rows = c
        .query(&read, &[&mailbox, &account, &uids])
        .await
        .map_err(map_err)?;
    if rows.is_empty() {
        return Err(StoreError::NotFound(format!("mailbox {mailbox}")));
    }
    let mut entries = Vec::new();
    for r in rows.iter().filter(|r| r.get::<_, Option<i64>>(0).is_some()) {
        entries.push(message_entry(r)?);
    }
    let to_change = decide(entries, change, outcome);
    if to_change.is_empty() {
        return Ok(Vec::new());
    }
    // The account's next MODSEQ, the messages still as read, and the mailbox's HIGHESTMODSEQ
    // in one statement. SET evaluates `m` before a message row is written, so the account's
    // row is locked first, as `lock_accounts` requires.
    let write = cached(
        c,
        "WITH m AS (
           UPDATE accounts SET modseq = modseq + 1 WHERE id = $1 RETURNING modseq
         ), changed AS (
           UPDATE mailbox_messages mm SET flags = t.f, keywords = t.k,
             modseq = (SELECT modseq FROM m)
           FROM unnest($3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[]) AS t(u, f, k, old)
           WHERE mm.mailbox_id = $2 AND mm.uid = t.u AND mm.modseq = t.old
           RETURNING mm.uid
         ), mailbox AS (
           UPDATE mailboxes SET highestmodseq = (SELECT modseq FROM m)
           WHERE id = $2 AND EXISTS (SELECT 1 FROM changed)
         )
         SELECT (SELECT modseq FROM m), ARRAY(SELECT uid FROM changed)",
    )
    .await?;
    let uids: Vec<i64> = to_change.iter().map(|(_, e)| e.uid as i64).collect();
    let flags: Vec<i64> = to_change.iter().map(|(_, e)| e.flags).collect();
    let keywords: Vec<String> = to_change
        .iter()
        .map(|(_, e)| keywords_to_text(&e.keywords))
        .collect();
    let old: Vec<i64> = to_change.iter().map(|(m, _)| *m).collect();
    let row = c
        .query_one(
            &write,
            &[&account, &mailbox, &uids, &flags, &keywords, &old],
        )
        .await
        .map_err(map_err)?;
    let modseq = row.get::<_, i64>(0) as u64;
    let written: Vec<i64> = row.get(1);
    // Taken but unused when every row was lost: it names no change.
    if !written.is_empty() {
        outcome.modseqs.push(modseq);
    }
    let mut lost = Vec::new();
    for (_, mut e) in to_change {
        if written.contains(&(e.uid as i64)) {
            e.modseq = modseq;
            outcome.updated.push(e);
        } else {
            lost.push(e.uid as i64);
        }
    }
    Ok(lost)
}

/// Sorts the entries read into those left alone (UNCHANGEDSINCE), those already as asked, and
/// those to write: returned with the MODSEQ they were read at and their new flags.
fn decide(
    entries: Vec<MessageEntry>,
    change: &FlagChange,
    outcome: &mut FlagOutcome,
) -> Vec<(i64, MessageEntry)> {
    let mut to_change = Vec::new();
    for e in entries {
        if change.unchanged_since.is_some_and(|since| e.modseq > since) {
            outcome.modified.push(e.uid);
            continue;
        }
        let (flags, keywords) = change.apply(e.flags, &e.keywords);
        if flags == e.flags && keywords == e.keywords {
            outcome.updated.push(e);
        } else {
            to_change.push((
                e.modseq as i64,
                MessageEntry {
                    flags,
                    keywords,
                    ..e
                },
            ));
        }
    }
    to_change
}

async fn write_group(pool: Pool, group: Vec<Request>) {
    let done = match grouped(&pool, &group).await {
        Ok(done) => done,
        Err(e) => {
            // Nothing of the group was written: each change is tried again on its own, where
            // its own retries and its own error belong.
            tracing::debug!("a group of flag changes failed ({e}); writing them one by one");
            vec![None; group.len()]
        }
    };
    for (request, outcome) in group.into_iter().zip(done) {
        match outcome {
            Some(o) => {
                let _ = request.reply.send(Ok(o));
            }
            None => {
                tokio::spawn(write_alone(pool.clone(), request));
            }
        }
    }
}

/// Writes the group's changes in one transaction. `None` for a change left to be written
/// alone: its account was locked by another writer (waiting for it would hold up the whole
/// group), or none of its messages was found (the change alone tells a missing mailbox from
/// expunged messages).
async fn grouped(pool: &Pool, group: &[Request]) -> Result<Vec<Option<FlagOutcome>>> {
    let c = pool.get().await.map_err(pool_err)?;
    let outcome = grouped_on(&c, group).await;
    if outcome.is_err() {
        // The transaction may still be open: the connection is closed, not pooled again.
        drop(deadpool_postgres::Object::take(c));
    }
    outcome
}

/// Two round trips, as for a change alone: BEGIN, the locks and the read are sent together,
/// then the write and COMMIT. Statements run one after the other even when sent together, so
/// the read's snapshot is taken after the locks are held.
async fn grouped_on(
    c: &deadpool_postgres::Object,
    group: &[Request],
) -> Result<Vec<Option<FlagOutcome>>> {
    // Every writer of an account's messages holds the account's row first, so with these
    // rows held nobody else changes the messages read below until the commit. SKIP LOCKED:
    // never wait, so never deadlock with a writer that holds some of them.
    let lock = cached(
        c,
        "SELECT id FROM accounts WHERE id = ANY($1) FOR UPDATE SKIP LOCKED",
    )
    .await?;
    // The account is matched too (G4): a mailbox id names a mailbox of that account only.
    let read = cached(
        c,
        "SELECT t.i, mm.uid, mm.hash, mm.size, mm.internal_date, mm.flags, mm.keywords, mm.modseq
         FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS t(i, a, mb, u)
         JOIN mailbox_messages mm
           ON mm.mailbox_id = t.mb AND mm.uid = t.u AND mm.account_id = t.a",
    )
    .await?;
    // Each account written to takes its next MODSEQ (one per account: the group has one
    // change per account); its messages and its mailbox's HIGHESTMODSEQ get it.
    let write = cached(
        c,
        "WITH m AS (
           UPDATE accounts SET modseq = modseq + 1
           WHERE id IN (SELECT DISTINCT a FROM unnest($1::BIGINT[]) AS a)
           RETURNING id, modseq
         ), changed AS (
           UPDATE mailbox_messages mm SET flags = t.f, keywords = t.k, modseq = m.modseq
           FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[])
             AS t(a, mb, u, f, k)
           JOIN m ON m.id = t.a
           WHERE mm.mailbox_id = t.mb AND mm.uid = t.u
           RETURNING mm.mailbox_id, m.modseq
         ), mailbox AS (
           UPDATE mailboxes b SET highestmodseq = c.modseq
           FROM (SELECT DISTINCT mailbox_id, modseq FROM changed) AS c
           WHERE b.id = c.mailbox_id
         )
         SELECT id, modseq, (SELECT count(*) FROM changed) FROM m",
    )
    .await?;

    let accounts: Vec<AccountId> = group.iter().map(|r| r.account).collect();
    let (mut which, mut owners, mut boxes, mut uids) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, r) in group.iter().enumerate() {
        for &uid in &r.uids {
            which.push(i as i64);
            owners.push(r.account);
            boxes.push(r.mailbox);
            uids.push(uid);
        }
    }
    let lock_params: [&(dyn ToSql + Sync); 1] = [&accounts];
    let read_params: [&(dyn ToSql + Sync); 4] = [&which, &owners, &boxes, &uids];
    let (begun, locked, rows) = tokio::join!(
        c.batch_execute("BEGIN"),
        c.query(&lock, &lock_params),
        c.query(&read, &read_params),
    );
    begun.map_err(map_err)?;
    let locked: HashSet<AccountId> = locked.map_err(map_err)?.iter().map(|r| r.get(0)).collect();
    // Rows of accounts another writer held were read without their lock: not used.
    let mut entries: Vec<Vec<MessageEntry>> = vec![Vec::new(); group.len()];
    for row in &rows.map_err(map_err)? {
        let i = row.get::<_, i64>(0) as usize;
        if locked.contains(&group[i].account) {
            entries[i].push(message_entry_at(row, 1)?);
        }
    }

    let mut outcomes: Vec<Option<FlagOutcome>> = vec![None; group.len()];
    let (mut w_accounts, mut w_boxes, mut w_uids, mut w_flags, mut w_keywords) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut writes: Vec<Vec<MessageEntry>> = vec![Vec::new(); group.len()];
    for (i, r) in group.iter().enumerate() {
        if entries[i].is_empty() {
            continue;
        }
        let mut outcome = FlagOutcome::default();
        for (_, e) in decide(std::mem::take(&mut entries[i]), &r.change, &mut outcome) {
            w_accounts.push(r.account);
            w_boxes.push(r.mailbox);
            w_uids.push(e.uid as i64);
            w_flags.push(e.flags);
            w_keywords.push(keywords_to_text(&e.keywords));
            writes[i].push(e);
        }
        outcomes[i] = Some(outcome);
    }
    if w_uids.is_empty() {
        c.batch_execute("COMMIT").await.map_err(map_err)?;
        return Ok(outcomes);
    }
    let write_params: [&(dyn ToSql + Sync); 5] =
        [&w_accounts, &w_boxes, &w_uids, &w_flags, &w_keywords];
    let (rows, committed) =
        tokio::join!(c.query(&write, &write_params), c.batch_execute("COMMIT"),);
    let rows = rows.map_err(map_err)?;
    committed.map_err(map_err)?;
    let written = rows.first().map_or(0, |r| r.get::<_, i64>(2)) as usize;
    if written != w_uids.len() {
        // Cannot happen while every writer takes the account's row first. Were it to, the
        // changes are made again alone: setting flags twice leaves them as set once.
        return Err(StoreError::Internal(format!(
            "a group of flag changes wrote {written} messages of {}",
            w_uids.len()
        )));
    }
    for row in &rows {
        let (account, modseq): (AccountId, i64) = (row.get(0), row.get(1));
        for (i, r) in group.iter().enumerate() {
            if r.account != account || writes[i].is_empty() {
                continue;
            }
            if let Some(outcome) = outcomes[i].as_mut() {
                outcome.modseqs.push(modseq as u64);
                for mut e in std::mem::take(&mut writes[i]) {
                    e.modseq = modseq as u64;
                    outcome.updated.push(e);
                }
            }
        }
    }
    Ok(outcomes)
}
