//! CREATE (RFC 9051 §6.3.4): superior names that do not exist are created too.

use trimaran_core::delivery::retry;
use trimaran_core::store::{AccountId, StoreError, INBOX};

use crate::parser::MailboxArg;
use crate::rights::{in_shared_namespace, shared_name, split_shared};
use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn create(&mut self, tag: &str, raw: MailboxArg) -> Flow {
        let trimmed = raw.strip_suffix(b"/").unwrap_or(&raw).to_vec();
        let name = match self.mailbox_name(&trimmed) {
            Ok(n) => n,
            Err(why) => {
                self.no(tag, &format!("[CANNOT] {why}"));
                return Flow::Continue;
            }
        };
        if name == INBOX {
            self.no(tag, "[ALREADYEXISTS] INBOX always exists");
            return Flow::Continue;
        }
        let (account, name) = match self.creation_target(tag, &name).await {
            Some(t) => t,
            None => return Flow::Continue,
        };
        let meta = self.server.core.store.meta();
        let parts: Vec<&str> = name.split('/').collect();
        for depth in 1..parts.len() {
            let parent = parts[..depth].join("/");
            match retry(self.wait(), || meta.create_mailbox(account, &parent, None)).await {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            }
        }
        match retry(self.wait(), || meta.create_mailbox(account, &name, None)).await {
            Ok(record) => self.ok(
                tag,
                &format!("[MAILBOXID (F{})] CREATE completed", record.id),
            ),
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }

    /// Where a new mailbox of that name goes: (account, name in that account). A name in the
    /// Other Users namespace needs "k" on its parent there (RFC 4314 §4); None when refused
    /// (answered).
    pub(crate) async fn creation_target(
        &mut self,
        tag: &str,
        name: &str,
    ) -> Option<(AccountId, String)> {
        if !in_shared_namespace(name) {
            return Some((self.account_id(), name.to_string()));
        }
        let Some((owner, mailbox)) = split_shared(name) else {
            self.no(
                tag,
                "[CANNOT] That name is the namespace of shared mailboxes",
            );
            return None;
        };
        let Some((parent, _)) = mailbox.rsplit_once('/') else {
            self.no(tag, "[NOPERM] Only the owner creates mailboxes at the top");
            return None;
        };
        let parent = shared_name(owner, parent);
        match self.resolve_mailbox(&parent).await {
            Ok(Some(t)) => {
                if !self.require(tag, &t, 'k') {
                    return None;
                }
                Some((t.owner, mailbox.to_string()))
            }
            Ok(None) => {
                self.no(tag, "[NOPERM] No right to create mailboxes there");
                None
            }
            Err(e) => {
                self.store_failed(tag, &e);
                None
            }
        }
    }
}
