//! Change notices between Trimaran processes on one PostgreSQL (LISTEN/NOTIFY), so that IMAP
//! IDLE in any process wakes when another process changes an account's mail.
//!
//! The notices are sent after the writing transaction commits, from one connection of their
//! own, not by the writing transaction: PostgreSQL serialises the commits of all transactions
//! that NOTIFY under one database-wide lock held through their WAL flush, which would take
//! group commit away from every write (measured: 2.5× fewer commits per second).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use crate::types::AccountId;
use crate::Change;

/// The channel every Trimaran process LISTENs on. The payload is an account id, then, when
/// the change committed under one account MODSEQ, a space and that MODSEQ (see
/// [`Change::modseq`]).
const CHANGE_CHANNEL: &str = "trimaran_changes";

/// How long a writer waits for its notice to go out. The change is committed either way;
/// past this, other processes learn of it from their next look at the mailbox instead.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// Holds one connection that LISTENs for change notices and passes them on; reconnects after
/// a failure (a failover, a restart) and then announces that anything may have changed.
pub(super) async fn change_feed(
    config: tokio_postgres::Config,
    feed: tokio::sync::broadcast::WeakSender<Change>,
) {
    // Weak: once the store is dropped there is nobody to tell, and the feed ends.
    while let Some(feed) = feed.upgrade() {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let (notices, mut received) = mpsc::unbounded_channel::<String>();
            let driver = tokio::spawn(async move {
                while let Some(Ok(message)) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    if let tokio_postgres::AsyncMessage::Notification(n) = message {
                        if notices.send(n.payload().to_string()).is_err() {
                            break;
                        }
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANGE_CHANNEL}"))
                .await
                .is_ok()
            {
                let _ = feed.send(Change::of(crate::ALL_ACCOUNTS));
                while let Some(payload) = received.recv().await {
                    if let Some(change) = parse_payload(&payload) {
                        let _ = feed.send(change);
                    }
                }
            }
            driver.abort();
            tracing::warn!("lost the PostgreSQL change feed; reconnecting");
        }
        drop(feed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sends change notices after commits. Writers that commit at the same time share one
/// statement, and each writer returns only once its notice is out (or given up on), so a
/// change is announced before the command that made it is answered, as a trigger did.
pub(super) struct Notifier {
    requests: mpsc::UnboundedSender<(Vec<Change>, oneshot::Sender<()>)>,
}

impl Notifier {
    /// Starts the sending task; it ends when the notifier is dropped.
    pub(super) fn start(config: tokio_postgres::Config) -> Notifier {
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(send_notices(config, received));
        Notifier { requests }
    }

    /// Tells the other processes that these accounts' mail changed.
    pub(super) async fn announce_accounts(&self, accounts: &[AccountId]) {
        let changes: Vec<Change> = accounts.iter().map(|&a| Change::of(a)).collect();
        self.announce(&changes).await
    }

    /// Tells the other processes of these changes.
    pub(super) async fn announce(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let (done, sent) = oneshot::channel();
        if self.requests.send((changes.to_vec(), done)).is_err() {
            return;
        }
        let _ = tokio::time::timeout(ANNOUNCE_WAIT, sent).await;
    }
}

async fn send_notices(
    config: tokio_postgres::Config,
    mut received: mpsc::UnboundedReceiver<(Vec<Change>, oneshot::Sender<()>)>,
) {
    let mut client: Option<(tokio_postgres::Client, tokio_postgres::Statement)> = None;
    while let Some(first) = received.recv().await {
        // Everything queued meanwhile goes in the same statement.
        let mut batch = vec![first];
        while let Ok(more) = received.try_recv() {
            batch.push(more);
        }
        let payloads = payloads(batch.iter().flat_map(|(c, _)| c.iter().copied()));
        if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            client = connect(&config).await;
        }
        if let Some((c, notify)) = &client {
            let sent = c.execute(notify, &[&CHANGE_CHANNEL, &payloads]).await;
            if let Err(e) = sent {
                tracing::warn!("could not send change notices: {e}");
                client = None;
            }
        }
        for (_, done) in batch {
            let _ = done.send(());
        }
    }
}

/// The notice connection and its statement, prepared once: a statement given as text is
/// prepared again at every execution, one more round trip per batch.
async fn connect(
    config: &tokio_postgres::Config,
) -> Option<(tokio_postgres::Client, tokio_postgres::Statement)> {
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            // A notice needs no durability, and a NOTIFY transaction holds the database-wide
            // notify lock until its commit returns: not waiting for a WAL flush keeps that
            // short. (Every other connection keeps `synchronous_commit = on`.)
            let ready = async {
                client.batch_execute("SET synchronous_commit = off").await?;
                client
                    .prepare("SELECT pg_notify($1, p) FROM unnest($2::TEXT[]) AS p")
                    .await
            };
            match ready.await {
                Ok(notify) => Some((client, notify)),
                Err(e) => {
                    tracing::warn!("could not set up the change notice connection: {e}");
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!("could not connect to send change notices: {e}");
            None
        }
    }
}

/// One payload per account: the latest MODSEQ among its changes, or none if one of them has
/// none (a receiver must then look whatever it has seen).
fn payloads(changes: impl Iterator<Item = Change>) -> Vec<String> {
    let mut latest: BTreeMap<AccountId, Option<u64>> = BTreeMap::new();
    for c in changes {
        latest
            .entry(c.account)
            .and_modify(|m| *m = m.zip(c.modseq).map(|(a, b)| a.max(b)))
            .or_insert(c.modseq);
    }
    latest
        .into_iter()
        .map(|(account, modseq)| match modseq {
            Some(m) => format!("{account} {m}"),
            None => account.to_string(),
        })
        .collect()
}

/// Reads a payload of [`payloads`]; a bare account id (also what a process of an older
/// version sends) has no MODSEQ.
fn parse_payload(payload: &str) -> Option<Change> {
    let mut words = payload.split(' ');
    let account = words.next()?.parse().ok()?;
    let modseq = match words.next() {
        Some(m) => Some(m.parse().ok()?),
        None => None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(Change { account, modseq })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_the_latest_modseq_and_lose_it_to_an_unknown_one() {
        let c = |account, modseq| Change { account, modseq };
        let p = payloads(
            [
                c(7, Some(3)),
                c(2, Some(9)),
                c(7, Some(5)),
                c(4, Some(1)),
                c(4, None),
            ]
            .into_iter(),
        );
        assert_eq!(p, ["2 9", "4", "7 5"]);
        for text in &p {
            let back = parse_payload(text).unwrap();
            assert_eq!(payloads([back].into_iter()), std::slice::from_ref(text));
        }
        assert_eq!(parse_payload("12"), Some(c(12, None)));
        assert_eq!(parse_payload("-1"), Some(c(crate::ALL_ACCOUNTS, None)));
        for bad in ["", "x", "1 x", "1 2 3", "1  2"] {
            assert_eq!(parse_payload(bad), None, "{bad:?}");
        }
    }
}
