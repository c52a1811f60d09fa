//! The outbound queue on SQLite. One writer thread runs every write, each in its own
//! savepoint, so a claim's pick and update cannot interleave with another's.

use rusqlite::{params, Connection, OptionalExtension};

use super::{map_err, SqliteStore};
use crate::error::{Result, StoreError};
use crate::types::*;
use crate::QueueStore;
use async_trait::async_trait;

/// Inserts an accepted message's queue entry inside the delivery's transaction.
pub(super) fn enqueue(conn: &Connection, out: &OutboundRequest, now: i64) -> Result<i64> {
    let msg = &out.message;
    let hash = msg.blob.hash.to_hex();
    let env = &out.envelope;
    let queue_id: i64 = conn
        .prepare_cached(
            "INSERT INTO queue_messages (hash, size, sender, submitted_by, created, envid, ret,
                                         body, smtputf8, hold_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
        )
        .and_then(|mut st| {
            st.query_row(
                params![
                    hash,
                    msg.blob.size as i64,
                    out.sender,
                    out.submitted_by,
                    now,
                    env.envid,
                    env.ret.map(Ret::as_str),
                    env.body.as_str(),
                    env.smtputf8,
                    env.hold_until,
                ],
                |r| r.get(0),
            )
        })
        .map_err(map_err)?;
    for rcpt in &out.recipients {
        conn.prepare_cached(
            "INSERT INTO queue_recipients (queue_id, recipient, status, next_attempt, notify,
                                           orcpt)
             VALUES (?1, ?2, 'pending', ?3, ?4, ?5)",
        )
        .and_then(|mut st| {
            st.execute(params![
                queue_id,
                rcpt.address,
                now.max(env.hold_until),
                rcpt.notify.map(Notify::to_param),
                rcpt.orcpt,
            ])
        })
        .map_err(map_err)?;
    }
    Ok(queue_id)
}

const QUEUE_COLUMNS: &str = "q.id, r.id, r.status, q.sender, r.recipient, q.hash, q.size,
    q.created, r.next_attempt, r.attempts, r.last_error, q.envid, q.ret, q.body, q.smtputf8,
    q.hold_until, r.notify, r.orcpt, r.delay_notified, r.remote_mta, r.settled, r.lease_owner,
    r.lease_until FROM queue_recipients r JOIN queue_messages q ON q.id = r.queue_id";

fn records(c: &Connection, filter: &str, args: impl rusqlite::Params) -> Result<Vec<QueueRecord>> {
    let mut st = c
        .prepare_cached(&format!("SELECT {QUEUE_COLUMNS} {filter}"))
        .map_err(map_err)?;
    let rows = st
        .query_map(args, |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, Option<String>>(10)?,
                ),
                (
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                    r.get::<_, String>(13)?,
                    r.get::<_, bool>(14)?,
                    r.get::<_, i64>(15)?,
                    r.get::<_, Option<String>>(16)?,
                    r.get::<_, Option<String>>(17)?,
                    r.get::<_, bool>(18)?,
                    r.get::<_, Option<String>>(19)?,
                    r.get::<_, Option<i64>>(20)?,
                    r.get::<_, Option<String>>(21)?,
                    r.get::<_, Option<i64>>(22)?,
                ),
            ))
        })
        .map_err(map_err)?;
    let rows = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    rows.into_iter()
        .map(|(a, b)| {
            Ok(QueueRecord {
                queue_id: a.0,
                recipient_id: a.1,
                status: QueueStatus::parse(&a.2).ok_or_else(|| bad_value("queue status", &a.2))?,
                sender: a.3,
                recipient: a.4,
                hash: a.5.parse()?,
                size: a.6 as u64,
                created: a.7,
                next_attempt: a.8,
                attempts: a.9,
                last_error: a.10,
                envelope: OutboundEnvelope {
                    envid: b.0,
                    ret: b.1.as_deref().and_then(Ret::parse),
                    body: BodyType::parse(&b.2).ok_or_else(|| bad_value("body type", &b.2))?,
                    smtputf8: b.3,
                    hold_until: b.4,
                },
                notify: b.5.as_deref().and_then(Notify::from_param),
                orcpt: b.6,
                delay_notified: b.7,
                remote_mta: b.8,
                settled: b.9,
                lease_owner: b.10,
                lease_until: b.11,
            })
        })
        .collect()
}

fn bad_value(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("unknown {what} {value:?} in the outbound queue"))
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn queue_list(&self) -> Result<Vec<QueueRecord>> {
        self.read(|c| records(c, "ORDER BY q.id, r.id", [])).await
    }

    async fn queue_claim(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<QueueRecord>> {
        let owner = owner.to_string();
        self.write(move |c| {
            // One writer at a time, and each job in its own savepoint: nothing else can claim
            // between the pick and the update, and the two happen together or not at all.
            let ids: Vec<i64> = c
                .prepare_cached(
                    "UPDATE queue_recipients SET lease_owner = ?1, lease_until = ?2
                     WHERE id IN (SELECT id FROM queue_recipients
                                  WHERE status = 'pending' AND next_attempt <= ?3
                                    AND (lease_until IS NULL OR lease_until < ?3)
                                  ORDER BY next_attempt, queue_id, id LIMIT ?4)
                     RETURNING id",
                )
                .and_then(|mut st| {
                    st.query_map(params![owner, until, now, limit as i64], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<i64>>>()
                })
                .map_err(map_err)?;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                claimed.extend(records(c, "WHERE r.id = ?1", [id])?);
            }
            claimed.sort_by_key(|r| (r.queue_id, r.recipient_id));
            Ok(claimed)
        })
        .await
    }

    async fn queue_renew(&self, owner: &str, recipients: &[i64], until: i64) -> Result<u64> {
        let owner = owner.to_string();
        let ids = recipients.to_vec();
        self.write(move |c| {
            let mut n = 0;
            let mut st = c
                .prepare_cached(
                    "UPDATE queue_recipients SET lease_until = ?3
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'pending'",
                )
                .map_err(map_err)?;
            for id in ids {
                n += st.execute(params![id, owner, until]).map_err(map_err)? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn queue_settle(&self, owner: &str, now: i64, outcomes: &[QueueOutcome]) -> Result<()> {
        let owner = owner.to_string();
        let outcomes = outcomes.to_vec();
        self.write(move |c| {
            for o in &outcomes {
                match o.result {
                    QueueResult::Done(status) => {
                        let anyone = status != QueueStatus::Failed;
                        c.prepare_cached(
                            "UPDATE queue_recipients
                             SET status = ?2, settled = ?3, last_error = ?4,
                                 remote_mta = coalesce(?5, remote_mta), attempts = attempts + 1,
                                 lease_owner = NULL, lease_until = NULL
                             WHERE id = ?1 AND status = 'pending' AND (?6 OR lease_owner = ?7)",
                        )
                        .and_then(|mut st| {
                            st.execute(params![
                                o.recipient_id,
                                status.as_str(),
                                now,
                                o.detail,
                                o.remote_mta,
                                anyone,
                                owner
                            ])
                        })
                        .map_err(map_err)?;
                    }
                    QueueResult::Retry(at) => {
                        c.prepare_cached(
                            "UPDATE queue_recipients
                             SET next_attempt = ?2, last_error = ?3,
                                 remote_mta = coalesce(?4, remote_mta), attempts = attempts + 1,
                                 lease_owner = NULL, lease_until = NULL
                             WHERE id = ?1 AND status = 'pending' AND lease_owner = ?5",
                        )
                        .and_then(|mut st| {
                            st.execute(params![o.recipient_id, at, o.detail, o.remote_mta, owner])
                        })
                        .map_err(map_err)?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn queue_reports_due(
        &self,
        delayed_since: i64,
        limit: usize,
    ) -> Result<Vec<QueueRecord>> {
        self.read(move |c| {
            records(
                c,
                "WHERE r.status <> 'pending'
                    OR (r.status = 'pending' AND NOT r.delay_notified
                        AND max(q.created, q.hold_until) < ?1)
                 ORDER BY q.id, r.id LIMIT ?2",
                params![delayed_since, limit as i64],
            )
        })
        .await
    }

    async fn queue_reported(&self, settled: &[i64], delayed: &[i64]) -> Result<()> {
        let settled = settled.to_vec();
        let delayed = delayed.to_vec();
        self.write(move |c| {
            for id in &delayed {
                c.prepare_cached("UPDATE queue_recipients SET delay_notified = 1 WHERE id = ?1")
                    .and_then(|mut st| st.execute([id]))
                    .map_err(map_err)?;
            }
            for id in &settled {
                let queue_id: Option<i64> = c
                    .prepare_cached(
                        "DELETE FROM queue_recipients WHERE id = ?1 AND status <> 'pending'
                         RETURNING queue_id",
                    )
                    .and_then(|mut st| st.query_row([id], |r| r.get(0)).optional())
                    .map_err(map_err)?;
                if let Some(queue_id) = queue_id {
                    c.prepare_cached(
                        "DELETE FROM queue_messages WHERE id = ?1
                         AND NOT EXISTS (SELECT 1 FROM queue_recipients WHERE queue_id = ?1)",
                    )
                    .and_then(|mut st| st.execute([queue_id]))
                    .map_err(map_err)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn queue_release(&self, queue_id: Option<i64>, now: i64) -> Result<u64> {
        self.write(move |c| {
            c.execute(
                "UPDATE queue_messages SET hold_until = ?2
                 WHERE (?1 IS NULL OR id = ?1) AND hold_until > ?2",
                params![queue_id, now],
            )
            .map_err(map_err)?;
            let n = c
                .execute(
                    "UPDATE queue_recipients SET next_attempt = ?2
                     WHERE (?1 IS NULL OR queue_id = ?1) AND status = 'pending'",
                    params![queue_id, now],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn queue_delete(&self, queue_id: i64) -> Result<u64> {
        self.write(move |c| {
            let n = c
                .execute(
                    "DELETE FROM queue_recipients WHERE queue_id = ?1",
                    [queue_id],
                )
                .map_err(map_err)?;
            c.execute("DELETE FROM queue_messages WHERE id = ?1", [queue_id])
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }
}
