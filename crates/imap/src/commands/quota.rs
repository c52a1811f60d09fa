//! GETQUOTA and GETQUOTAROOT (RFC 9208 §4.2, §4.3): one quota root per account, named "",
//! with the STORAGE (KiB) and MESSAGE resources. SETQUOTA is refused: limits are set with
//! `trimaran account quota`.

use trimaran_core::delivery::retry;
use trimaran_core::store::Quota;

use crate::parser::MailboxArg;
use crate::session::{Flow, Session};

fn resources(q: &Quota) -> String {
    let mut parts = Vec::new();
    if let Some(limit) = q.storage_limit {
        parts.push(format!(
            "STORAGE {} {}",
            q.storage_used.div_ceil(1024),
            limit / 1024
        ));
    }
    if let Some(limit) = q.message_limit {
        parts.push(format!("MESSAGE {} {limit}", q.messages_used));
    }
    parts.join(" ")
}

impl Session {
    async fn load_quota(&mut self, tag: &str) -> Option<Quota> {
        let account = self.account_id();
        let meta = self.server.core.store.meta();
        match retry(self.wait(), || meta.quota(account)).await {
            Ok(q) => Some(q),
            Err(e) => {
                self.store_failed(tag, &e);
                None
            }
        }
    }

    pub(crate) async fn get_quota(&mut self, tag: &str, root: Vec<u8>) -> Flow {
        if !root.is_empty() {
            self.no(tag, "[NONEXISTENT] No such quota root");
            return Flow::Continue;
        }
        let Some(q) = self.load_quota(tag).await else {
            return Flow::Continue;
        };
        self.untagged(&format!("QUOTA \"\" ({})", resources(&q)));
        self.ok(tag, "GETQUOTA completed");
        Flow::Continue
    }

    pub(crate) async fn get_quota_root(&mut self, tag: &str, raw: MailboxArg) -> Flow {
        let name = match self.mailbox_name(&raw) {
            Ok(n) => n,
            Err(why) => {
                self.no(tag, why);
                return Flow::Continue;
            }
        };
        match self.resolve_mailbox(&name).await {
            Ok(Some(t)) if t.shared_by.is_some() => {
                // Another account's quota is not this account's business: no root shown.
                self.conn.queue(b"* QUOTAROOT ");
                self.write_mailbox(&name);
                self.conn.queue(b"\r\n");
                self.ok(tag, "GETQUOTAROOT completed");
                return Flow::Continue;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                self.no(tag, "[NONEXISTENT] No such mailbox");
                return Flow::Continue;
            }
            Err(e) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        }
        let Some(q) = self.load_quota(tag).await else {
            return Flow::Continue;
        };
        let limited = q.storage_limit.is_some() || q.message_limit.is_some();
        // A mailbox with no limits has no quota root (RFC 9208 §4.3).
        self.conn.queue(b"* QUOTAROOT ");
        self.write_mailbox(&name);
        self.conn
            .queue(if limited { &b" \"\"\r\n"[..] } else { b"\r\n" });
        if limited {
            self.untagged(&format!("QUOTA \"\" ({})", resources(&q)));
        }
        self.ok(tag, "GETQUOTAROOT completed");
        Flow::Continue
    }
}
