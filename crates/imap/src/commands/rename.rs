//! RENAME (RFC 9051 §6.3.6): children move with their parent; renaming INBOX moves its
//! messages to a new mailbox and leaves INBOX empty.

use trimaran_core::delivery::retry;
use trimaran_core::store::{StoreError, INBOX};

use crate::parser::MailboxArg;
use crate::rights::in_shared_namespace;
use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn rename(&mut self, tag: &str, from: MailboxArg, to: MailboxArg) -> Flow {
        let (from, to) = match (self.mailbox_name(&from), self.mailbox_name(&to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(why), _) | (_, Err(why)) => {
                self.no(tag, why);
                return Flow::Continue;
            }
        };
        if in_shared_namespace(&from) || in_shared_namespace(&to) {
            self.no(tag, "[CANNOT] Shared mailboxes are renamed by their owner");
            return Flow::Continue;
        }
        if to == INBOX {
            self.no(tag, "[ALREADYEXISTS] INBOX always exists");
            return Flow::Continue;
        }
        if to.starts_with(&format!("{from}/")) {
            self.no(tag, "[CANNOT] Cannot move a mailbox into itself");
            return Flow::Continue;
        }
        let account = self.account_id();
        let meta = self.server.core.store.meta();
        // Superior names of the new name are created as for CREATE.
        let parts: Vec<&str> = to.split('/').collect();
        for depth in 1..parts.len() {
            let parent = parts[..depth].join("/");
            if parent == from {
                continue;
            }
            match retry(self.wait(), || meta.create_mailbox(account, &parent, None)).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            }
        }
        let result = if from == INBOX {
            self.rename_inbox(&to).await
        } else {
            retry(self.wait(), || meta.rename_mailbox(account, &from, &to)).await
        };
        match result {
            Ok(()) => {
                if let Some(sel) = &mut self.selected {
                    if sel.mailbox.name == from {
                        sel.mailbox.name = to.clone();
                    }
                }
                self.server.core.store.changed(account);
                self.ok(tag, "RENAME completed");
            }
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }

    async fn rename_inbox(&mut self, to: &str) -> Result<(), StoreError> {
        let account = self.account_id();
        let meta = self.server.core.store.meta();
        let inbox = self
            .find_mailbox(INBOX)
            .await?
            .ok_or_else(|| StoreError::NotFound("INBOX".into()))?;
        let target = retry(self.wait(), || meta.create_mailbox(account, to, None)).await?;
        let uids: Vec<u32> = retry(self.wait(), || meta.mailbox_entries(inbox.id))
            .await?
            .iter()
            .map(|e| e.uid)
            .collect();
        retry(self.wait(), || {
            meta.copy_messages((account, inbox.id), &uids, (account, target.id), true)
        })
        .await?;
        Ok(())
    }
}
