//! The outbound queue on PostgreSQL. Several Trimaran processes share it: a recipient is worked
//! on by whoever holds its lease, and claims skip rows another claimer has locked, so two
//! processes never pick the same work and never wait for each other.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{map_err, PostgresStore};
use crate::error::{Result, StoreError};
use crate::types::*;
use crate::QueueStore;
use async_trait::async_trait;

const COLUMNS: &str = "q.id, r.id, r.status, q.sender, r.recipient, q.hash, q.size,
    q.created, r.next_attempt, r.attempts, r.last_error, q.envid, q.ret, q.body, q.smtputf8,
    q.hold_until, r.notify, r.orcpt, r.delay_notified, r.remote_mta, r.settled, r.lease_owner,
    r.lease_until FROM queue_recipients r JOIN queue_messages q ON q.id = r.queue_id";

fn record(r: &Row) -> Result<QueueRecord> {
    let status: String = r.get(2);
    let body: String = r.get(13);
    Ok(QueueRecord {
        queue_id: r.get(0),
        recipient_id: r.get(1),
        status: QueueStatus::parse(&status).ok_or_else(|| bad_value("queue status", &status))?,
        sender: r.get(3),
        recipient: r.get(4),
        hash: r.get::<_, String>(5).parse()?,
        size: r.get::<_, i64>(6) as u64,
        created: r.get(7),
        next_attempt: r.get(8),
        attempts: r.get(9),
        last_error: r.get(10),
        envelope: OutboundEnvelope {
            envid: r.get(11),
            ret: r.get::<_, Option<&str>>(12).and_then(Ret::parse),
            body: BodyType::parse(&body).ok_or_else(|| bad_value("body type", &body))?,
            smtputf8: r.get(14),
            hold_until: r.get(15),
        },
        notify: r.get::<_, Option<&str>>(16).and_then(Notify::from_param),
        orcpt: r.get(17),
        delay_notified: r.get(18),
        remote_mta: r.get(19),
        settled: r.get(20),
        lease_owner: r.get(21),
        lease_until: r.get(22),
    })
}

fn bad_value(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("unknown {what} {value:?} in the outbound queue"))
}

async fn records(
    c: &impl GenericClient,
    filter: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<QueueRecord>> {
    let st = c
        .prepare_cached(&format!("SELECT {COLUMNS} {filter}"))
        .await
        .map_err(map_err)?;
    let rows = c.query(&st, args).await.map_err(map_err)?;
    rows.iter().map(record).collect()
}

/// Inserts an accepted message's queue entry inside the delivery's transaction.
pub(super) async fn enqueue(
    tx: &deadpool_postgres::Transaction<'_>,
    out: &OutboundRequest,
    now: i64,
) -> Result<i64> {
    let hash = out.message.blob.hash.to_hex();
    let size = out.message.blob.size as i64;
    let env = &out.envelope;
    let queue_id: i64 = tx
        .query_one(
            "INSERT INTO queue_messages (hash, size, sender, submitted_by, created, envid, ret,
                                         body, smtputf8, hold_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            &[
                &hash,
                &size,
                &out.sender,
                &out.submitted_by,
                &now,
                &env.envid,
                &env.ret.map(Ret::as_str),
                &env.body.as_str(),
                &env.smtputf8,
                &env.hold_until,
            ],
        )
        .await
        .map_err(map_err)?
        .get(0);
    let insert = tx
        .prepare_cached(
            "INSERT INTO queue_recipients (queue_id, recipient, status, next_attempt, notify,
                                           orcpt)
             VALUES ($1, $2, 'pending', $3, $4, $5)",
        )
        .await
        .map_err(map_err)?;
    let due = now.max(env.hold_until);
    for rcpt in &out.recipients {
        let notify = rcpt.notify.map(Notify::to_param);
        tx.execute(
            &insert,
            &[&queue_id, &rcpt.address, &due, &notify, &rcpt.orcpt],
        )
        .await
        .map_err(map_err)?;
    }
    Ok(queue_id)
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn queue_list(&self) -> Result<Vec<QueueRecord>> {
        let c = self.client().await?;
        records(&c, "ORDER BY q.id, r.id", &[]).await
    }

    async fn queue_claim(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<QueueRecord>> {
        let c = self.client().await?;
        let limit = limit as i64;
        // SKIP LOCKED: a row another process is claiming right now is simply not ours.
        let st = c
            .prepare_cached(
                "WITH due AS (
                     SELECT id FROM queue_recipients
                     WHERE status = 'pending' AND next_attempt <= $3
                       AND (lease_until IS NULL OR lease_until < $3)
                     ORDER BY next_attempt, queue_id, id LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 UPDATE queue_recipients r SET lease_owner = $1, lease_until = $2
                 FROM due WHERE r.id = due.id RETURNING r.id",
            )
            .await
            .map_err(map_err)?;
        let ids: Vec<i64> = c
            .query(&st, &[&owner, &until, &now, &limit])
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        records(&c, "WHERE r.id = ANY($1) ORDER BY q.id, r.id", &[&ids]).await
    }

    async fn queue_renew(&self, owner: &str, recipients: &[i64], until: i64) -> Result<u64> {
        let c = self.client().await?;
        c.execute(
            "UPDATE queue_recipients SET lease_until = $3
             WHERE id = ANY($1) AND lease_owner = $2 AND status = 'pending'",
            &[&recipients, &owner, &until],
        )
        .await
        .map_err(map_err)
    }

    async fn queue_settle(&self, owner: &str, now: i64, outcomes: &[QueueOutcome]) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let done = tx
            .prepare_cached(
                "UPDATE queue_recipients
                 SET status = $2, settled = $3, last_error = $4,
                     remote_mta = coalesce($5, remote_mta), attempts = attempts + 1,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND status = 'pending' AND ($6 OR lease_owner = $7)",
            )
            .await
            .map_err(map_err)?;
        let retry = tx
            .prepare_cached(
                "UPDATE queue_recipients
                 SET next_attempt = $2, last_error = $3, remote_mta = coalesce($4, remote_mta),
                     attempts = attempts + 1, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND status = 'pending' AND lease_owner = $5",
            )
            .await
            .map_err(map_err)?;
        for o in outcomes {
            match o.result {
                QueueResult::Done(status) => {
                    let anyone = status != QueueStatus::Failed;
                    tx.execute(
                        &done,
                        &[
                            &o.recipient_id,
                            &status.as_str(),
                            &now,
                            &o.detail,
                            &o.remote_mta,
                            &anyone,
                            &owner,
                        ],
                    )
                    .await
                    .map_err(map_err)?;
                }
                QueueResult::Retry(at) => {
                    tx.execute(
                        &retry,
                        &[&o.recipient_id, &at, &o.detail, &o.remote_mta, &owner],
                    )
                    .await
                    .map_err(map_err)?;
                }
            }
        }
        tx.commit().await.map_err(map_err)
    }

    async fn queue_reports_due(
        &self,
        delayed_since: i64,
        limit: usize,
    ) -> Result<Vec<QueueRecord>> {
        let c = self.client().await?;
        records(
            &c,
            "WHERE r.status <> 'pending'
                OR (r.status = 'pending' AND NOT r.delay_notified
                    AND greatest(q.created, q.hold_until) < $1)
             ORDER BY q.id, r.id LIMIT $2",
            &[&delayed_since, &(limit as i64)],
        )
        .await
    }

    async fn queue_reported(&self, settled: &[i64], delayed: &[i64]) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "UPDATE queue_recipients SET delay_notified = true WHERE id = ANY($1)",
            &[&delayed],
        )
        .await
        .map_err(map_err)?;
        tx.execute(
            "WITH gone AS (
                 DELETE FROM queue_recipients WHERE id = ANY($1) AND status <> 'pending'
                 RETURNING queue_id)
             DELETE FROM queue_messages q WHERE q.id IN (SELECT queue_id FROM gone)
               AND NOT EXISTS (SELECT 1 FROM queue_recipients r
                               WHERE r.queue_id = q.id AND NOT (r.id = ANY($1)))",
            &[&settled],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn queue_release(&self, queue_id: Option<i64>, now: i64) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "UPDATE queue_messages SET hold_until = $2
             WHERE ($1::BIGINT IS NULL OR id = $1) AND hold_until > $2",
            &[&queue_id, &now],
        )
        .await
        .map_err(map_err)?;
        let n = tx
            .execute(
                "UPDATE queue_recipients SET next_attempt = $2
                 WHERE ($1::BIGINT IS NULL OR queue_id = $1) AND status = 'pending'",
                &[&queue_id, &now],
            )
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }

    async fn queue_delete(&self, queue_id: i64) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "DELETE FROM queue_recipients WHERE queue_id = $1",
                &[&queue_id],
            )
            .await
            .map_err(map_err)?;
        tx.execute("DELETE FROM queue_messages WHERE id = $1", &[&queue_id])
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }
}
