//! QUIT (RFC 1939 §6): in TRANSACTION, enters UPDATE and removes the messages marked deleted.

use trimaran_core::delivery::retry;

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn quit(&mut self) -> Flow {
        let Some(drop) = self.maildrop.take() else {
            self.ok("Bye");
            return Flow::Close;
        };
        let uids: Vec<u32> = drop
            .messages
            .iter()
            .filter(|m| m.deleted)
            .map(|m| m.uid)
            .collect();
        if uids.is_empty() {
            self.ok("Bye");
            return Flow::Close;
        }
        let core = self.server.core.clone();
        let meta = core.store.meta();
        match retry(core.config.store_wait(), || {
            meta.expunge(drop.account, drop.inbox, &uids)
        })
        .await
        {
            Ok(removed) => {
                core.store.changed(drop.account);
                tracing::info!(user = %drop.address, removed = removed.len(), "POP3 update");
                self.ok(&format!("Bye, {} messages removed", uids.len()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "POP3 update failed");
                // RFC 1939 §6: the client learns that its deletions did not happen.
                self.err("[SYS/TEMP] Some deleted messages not removed");
            }
        }
        Flow::Close
    }
}
