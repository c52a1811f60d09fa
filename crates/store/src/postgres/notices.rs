//! Change notices between Trimaran processes on one PostgreSQL (LISTEN/NOTIFY), so that IMAP
//! IDLE in any process wakes when another process changes an account's mail.
//!
//! The notices are sent after the writing transaction commits, from one connection of their
//! own, not by the writing transaction: PostgreSQL serialises the commits of all transactions
//! that NOTIFY under one database-wide lock held through their WAL flush, which would take
//! group commit away from every write (measured: 2.5× fewer commits per second).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use crate::types::AccountId;

/// The channel every Trimaran process LISTENs on; the payload is an account id.
const CHANGE_CHANNEL: &str = "trimaran_changes";

/// How long a writer waits for its notice to go out. The change is committed either way;
/// past this, other processes learn of it from their next look at the mailbox instead.
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// Holds one connection that LISTENs for change notices and passes them on; reconnects after
/// a failure (a failover, a restart) and then announces that anything may have changed.
pub(super) async fn change_feed(
    config: tokio_postgres::Config,
    feed: tokio::sync::broadcast::WeakSender<AccountId>,
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
                let _ = feed.send(crate::ALL_ACCOUNTS);
                while let Some(payload) = received.recv().await {
                    if let Ok(account) = payload.parse() {
                        let _ = feed.send(account);
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
    requests: mpsc::UnboundedSender<(Vec<AccountId>, oneshot::Sender<()>)>,
}

impl Notifier {
    /// Starts the sending task; it ends when the notifier is dropped.
    pub(super) fn start(config: tokio_postgres::Config) -> Notifier {
        let (requests, received) = mpsc::unbounded_channel();
        tokio::spawn(send_notices(config, received));
        Notifier { requests }
    }

    /// Tells the other processes that these accounts' mail changed.
    pub(super) async fn announce(&self, accounts: &[AccountId]) {
        if accounts.is_empty() {
            return;
        }
        let (done, sent) = oneshot::channel();
        if self.requests.send((accounts.to_vec(), done)).is_err() {
            return;
        }
        let _ = tokio::time::timeout(ANNOUNCE_WAIT, sent).await;
    }
}

async fn send_notices(
    config: tokio_postgres::Config,
    mut received: mpsc::UnboundedReceiver<(Vec<AccountId>, oneshot::Sender<()>)>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    while let Some(first) = received.recv().await {
        // Everything queued meanwhile goes in the same statement.
        let mut batch = vec![first];
        while let Ok(more) = received.try_recv() {
            batch.push(more);
        }
        let accounts: Vec<AccountId> = batch
            .iter()
            .flat_map(|(a, _)| a.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect(&config).await;
        }
        if let Some(c) = &client {
            let sent = c
                .execute(
                    "SELECT pg_notify($1, a::TEXT) FROM unnest($2::BIGINT[]) AS a",
                    &[&CHANGE_CHANNEL, &accounts],
                )
                .await;
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

async fn connect(config: &tokio_postgres::Config) -> Option<tokio_postgres::Client> {
    match config.connect(NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            // A notice needs no durability, and a NOTIFY transaction holds the database-wide
            // notify lock until its commit returns: not waiting for a WAL flush keeps that
            // short. (Every other connection keeps `synchronous_commit = on`.)
            match client.batch_execute("SET synchronous_commit = off").await {
                Ok(()) => Some(client),
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
