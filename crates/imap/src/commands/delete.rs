//! DELETE (RFC 9051 §6.3.5). A mailbox with children is refused with HASCHILDREN rather than
//! turned into a \Noselect name, which RFC 9051 permits and keeps the hierarchy simple.

use trimaran_core::delivery::retry;
use trimaran_core::store::{StoreError, INBOX};

use crate::parser::MailboxArg;
use crate::rights::split_shared;
use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn delete(&mut self, tag: &str, raw: MailboxArg) -> Flow {
        let name = match self.mailbox_name(&raw) {
            Ok(n) => n,
            Err(why) => {
                self.no(tag, why);
                return Flow::Continue;
            }
        };
        if name == INBOX {
            self.no(tag, "[CANNOT] INBOX cannot be deleted");
            return Flow::Continue;
        }
        let (account, own_name) = if split_shared(&name).is_some() {
            // RFC 4314 §4: deleting another account's mailbox needs "x".
            match self.resolve_mailbox(&name).await {
                Ok(Some(t)) => {
                    if !self.require(tag, &t, 'x') {
                        return Flow::Continue;
                    }
                    (t.owner, t.record.name)
                }
                Ok(None) => {
                    self.no(tag, "[NONEXISTENT] No such mailbox");
                    return Flow::Continue;
                }
                Err(e) => {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            }
        } else {
            (self.account_id(), name.clone())
        };
        let meta = self.server.core.store.meta();
        match retry(self.wait(), || meta.delete_mailbox(account, &own_name)).await {
            Ok(()) => {
                if self
                    .selected
                    .as_ref()
                    .is_some_and(|s| s.owner == account && s.mailbox.name == own_name)
                {
                    self.selected = None;
                }
                self.server.core.store.changed(account);
                self.ok(tag, "DELETE completed");
            }
            Err(StoreError::Invalid(_)) => {
                self.no(tag, "[HASCHILDREN] Delete the mailboxes inside it first")
            }
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }
}
