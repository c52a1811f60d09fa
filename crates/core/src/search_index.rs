//! Keeps the SEARCH text index whole: messages stored before the index existed or before its
//! current form, and delivered messages whose text is too long to index before the sender is
//! answered, wait in the store's backlog; this indexes them in the background. Until then every
//! search treats them as candidates and checks their text, so answers stay exact.

use std::sync::Arc;
use std::time::Duration;

use trimaran_store::{IndexedText, SearchText, Store, StoreError};

use crate::message;

const BATCH: usize = 200;

/// How long an empty backlog is left alone before it is looked at again.
const IDLE: Duration = Duration::from_secs(2);

/// Indexes the backlog, a batch at a time, for as long as the server runs; waits and tries
/// again when the store is unavailable.
pub async fn index_backlog(store: Arc<Store>) {
    let mut indexed = 0u64;
    let mut tidy_failing = false;
    loop {
        let batch = match store.meta().search_backlog(BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading the search index backlog failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if indexed > 0 {
                tracing::info!(messages = indexed, "search index backlog done");
                indexed = 0;
            }
            // Deliveries index their messages too, so this runs at every idle turn, not only
            // after the backlog's own work.
            match store.meta().tidy_search_index().await {
                Ok(()) => tidy_failing = false,
                // Once per spell of failures (an outage, a standby, a missing privilege):
                // searches stay correct, only slower.
                Err(e) if !tidy_failing => {
                    tidy_failing = true;
                    tracing::warn!(error = %e, "tidying the search index failed");
                }
                Err(_) => {}
            }
            tokio::time::sleep(IDLE).await;
            continue;
        }
        for (hash, text) in batch {
            let started = std::time::Instant::now();
            let text = match text {
                Some(t) => t,
                None => match store.read_blob(&hash).await {
                    Ok(raw) => {
                        match tokio::task::spawn_blocking(move || message::search_text(&raw)).await
                        {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::error!(%hash, error = %e, "extracting search text failed");
                                SearchText::default()
                            }
                        }
                    }
                    // Unreadable (and already reported by read_blob): nothing in it can be
                    // found, and it must not make every search of its mailbox fail.
                    Err(StoreError::Corrupt { .. }) => SearchText::default(),
                    Err(e) => {
                        tracing::warn!(%hash, error = %e, "reading a body to index failed");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        continue;
                    }
                },
            };
            let text = tokio::task::spawn_blocking(move || IndexedText::new(text))
                .await
                .unwrap_or_default();
            match store.meta().index_backlogged(&hash, &text).await {
                Ok(()) => {
                    indexed += 1;
                    // Deliveries first: they have senders waiting on the same writer and
                    // cores. Resting as long as the message took keeps the indexer to about
                    // half of one core and of the store's writer while mail keeps arriving.
                    tokio::time::sleep(started.elapsed()).await;
                }
                Err(e) => {
                    tracing::warn!(%hash, error = %e, "indexing a message failed; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}
