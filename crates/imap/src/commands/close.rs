//! CLOSE (RFC 9051 §6.4.1: expunges silently) and UNSELECT (RFC 3691: does not).

use trimaran_core::delivery::retry;
use trimaran_core::store::flags;

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn close(&mut self, tag: &str, expunge: bool) -> Flow {
        let Some(sel) = self.selected.take() else {
            self.bad(tag, "No mailbox selected");
            return Flow::Continue;
        };
        // RFC 4314 §4: without "e" CLOSE closes without expunging.
        if expunge && !sel.read_only && sel.rights.has('e') {
            let uids: Vec<u32> = sel
                .messages
                .iter()
                .filter(|m| m.flags & flags::DELETED != 0)
                .map(|m| m.uid)
                .collect();
            if !uids.is_empty() {
                let (account, mailbox) = (sel.owner, sel.mailbox.id);
                let meta = self.server.core.store.meta();
                if let Err(e) = retry(self.wait(), || meta.expunge(account, mailbox, &uids)).await {
                    // The mailbox stays closed; the messages stay, still marked \Deleted.
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
                self.server.core.store.changed(account);
            }
        }
        self.ok(
            tag,
            if expunge {
                "CLOSE completed"
            } else {
                "UNSELECT completed"
            },
        );
        Flow::Continue
    }
}
