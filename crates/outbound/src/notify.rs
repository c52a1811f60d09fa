//! Makes the reports the queue owes (RFC 3464): for each message, one report to its sender
//! covering the recipients settled or delayed since the last one. The report is committed
//! with a delivery id derived from what it covers, so a crash between committing it and
//! marking the recipients reported makes the next round find it already delivered instead
//! of sending it twice.

use std::collections::BTreeMap;

use trimaran_core::delivery::{self, Resolved};
use trimaran_core::store::{
    now_unix, LocalDelivery, Notify, OutboundEnvelope, OutboundRecipient, OutboundRequest,
    QueueRecord, QueueStatus, StoreError,
};

use crate::report::{Action, Report};
use crate::worker::Runner;

/// Most recipients looked at per round.
const BATCH: usize = 500;

pub(crate) async fn make_reports(runner: &Runner) -> Result<(), StoreError> {
    let config = &runner.core.config.outbound;
    // delay_notice = 0: no delay reports (nothing started before the epoch).
    let delayed_since = if config.delay_notice == 0 {
        i64::MIN
    } else {
        now_unix() - config.delay_notice as i64
    };
    let store = &runner.core.store;
    loop {
        let due = store.meta().queue_reports_due(delayed_since, BATCH).await?;
        if due.is_empty() {
            return Ok(());
        }
        let full = due.len() >= BATCH;
        let mut by_message: BTreeMap<i64, Vec<QueueRecord>> = BTreeMap::new();
        for r in due {
            by_message.entry(r.queue_id).or_default().push(r);
        }
        // Recipients that owe no report (the common case: accepted by a DSN-capable peer) are
        // cleared together, in one write per round.
        let (mut quiet_settled, mut quiet_delayed) = (Vec::new(), Vec::new());
        for records in by_message.values() {
            let entries = owed(records);
            if entries.is_empty() {
                split(records, &mut quiet_settled, &mut quiet_delayed);
            } else {
                report_one(runner, records, entries).await?;
            }
        }
        if !quiet_settled.is_empty() || !quiet_delayed.is_empty() {
            store
                .meta()
                .queue_reported(&quiet_settled, &quiet_delayed)
                .await?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// The recipients of one message that are owed a report, with its kind; none for the null
/// sender (RFC 3461 §6.2, RFC 5321 §4.5.5: reports themselves have one, so they cannot loop).
fn owed(records: &[QueueRecord]) -> Vec<(&QueueRecord, Action)> {
    if records[0].sender.is_empty() {
        return Vec::new();
    }
    records
        .iter()
        .filter_map(|r| Action::for_record(r).map(|a| (r, a)))
        .filter(|(r, a)| a.wanted(r))
        .collect()
}

/// Settled recipients are removed once reported; pending ones are marked as told of delay.
fn split(records: &[QueueRecord], settled: &mut Vec<i64>, delayed: &mut Vec<i64>) {
    for r in records {
        if r.status == QueueStatus::Pending {
            delayed.push(r.recipient_id);
        } else {
            settled.push(r.recipient_id);
        }
    }
}

async fn report_one(
    runner: &Runner,
    records: &[QueueRecord],
    entries: Vec<(&QueueRecord, Action)>,
) -> Result<(), StoreError> {
    let store = &runner.core.store;
    let config = &runner.core.config;
    let sender = &records[0].sender;
    let original = store.read_blob(&records[0].hash).await.ok();
    let now = now_unix();
    let mut id = blake3::Hasher::new_derive_key("trimaran 2026 delivery report v1");
    for (r, a) in &entries {
        id.update(&r.recipient_id.to_le_bytes());
        id.update(format!("{a:?}").as_bytes());
    }
    let id = id.finalize().to_hex()[..32].to_string();
    let report = Report {
        hostname: &config.hostname,
        lifetime: config.outbound.lifetime as i64,
        entries,
        original: original.as_deref(),
        now,
    };
    // A report is made from the sender's message; a panic must not block every later report
    // (this one is then skipped, loudly).
    let Ok(report) = std::panic::catch_unwind(|| report.build(&id)) else {
        tracing::error!(
            queue_id = records[0].queue_id,
            "building a delivery report panicked; report skipped"
        );
        let (mut settled, mut delayed) = (Vec::new(), Vec::new());
        split(records, &mut settled, &mut delayed);
        return store.meta().queue_reported(&settled, &delayed).await;
    };
    send_report(runner, sender, report, format!("report-{id}")).await?;
    let (mut settled, mut delayed) = (Vec::new(), Vec::new());
    split(records, &mut settled, &mut delayed);
    store.meta().queue_reported(&settled, &delayed).await
}

/// Delivers a report from the null sender: into the sender's INBOX when the sender is ours,
/// otherwise through the queue.
async fn send_report(
    runner: &Runner,
    to: &str,
    report: Vec<u8>,
    id: String,
) -> Result<(), StoreError> {
    let store = &runner.core.store;
    let wait = runner.core.config.store_wait();
    let now = now_unix();
    match delivery::resolve(store, to).await? {
        Resolved::Local { accounts, .. } if !accounts.is_empty() => {
            let mut raw = b"Return-Path: <>\r\n".to_vec();
            raw.extend_from_slice(&report);
            let message = delivery::prepare(raw, now).await?;
            delivery::deliver(
                store,
                id,
                Some(LocalDelivery { message, accounts }),
                None,
                wait,
            )
            .await?;
        }
        Resolved::Local { .. } | Resolved::UnknownLocal => {
            tracing::warn!(to, "report for a local sender who no longer exists dropped");
        }
        Resolved::Remote => {
            let message = delivery::prepare(report, now).await?;
            let request = OutboundRequest {
                message,
                sender: String::new(),
                recipients: vec![OutboundRecipient {
                    address: to.to_string(),
                    notify: Some(Notify::NEVER),
                    orcpt: None,
                }],
                submitted_by: None,
                envelope: OutboundEnvelope::default(),
            };
            delivery::deliver(store, id, None, Some(request), wait).await?;
            runner.core.queue_wake.notify_one();
        }
    }
    Ok(())
}
