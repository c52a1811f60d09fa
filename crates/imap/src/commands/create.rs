//! CREATE (RFC 9051 §6.3.4): superior names that do not exist are created too.

use trimaran_core::delivery::retry;
use trimaran_core::store::{StoreError, INBOX};

use crate::parser::MailboxArg;
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
        let account = self.account_id();
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
}
