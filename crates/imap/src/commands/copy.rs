//! COPY (RFC 9051 §6.4.7) and MOVE (RFC 6851), with COPYUID (RFC 4315 §3).

use trimaran_core::delivery::retry;

use crate::parser::{MailboxArg, SeqSet};
use crate::session::{uid_set, Flow, Session};

impl Session {
    pub(crate) async fn copy(
        &mut self,
        tag: &str,
        uid: bool,
        set: SeqSet,
        raw: MailboxArg,
        remove: bool,
    ) -> Flow {
        if remove && self.selected.as_ref().is_some_and(|s| s.read_only) {
            self.no(tag, "[READ-ONLY] Mailbox is read-only");
            return Flow::Continue;
        }
        let positions = match self.resolve(&set, uid) {
            Ok(p) => p,
            Err(why) => {
                self.bad(tag, why);
                return Flow::Continue;
            }
        };
        let name = match self.mailbox_name(&raw) {
            Ok(n) => n,
            Err(why) => {
                self.no(tag, why);
                return Flow::Continue;
            }
        };
        let target = match self.find_mailbox(&name).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.no(tag, "[TRYCREATE] No such mailbox");
                return Flow::Continue;
            }
            Err(e) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        };
        let Some(sel) = &self.selected else {
            return Flow::Continue;
        };
        let uids: Vec<u32> = positions.iter().map(|&i| sel.messages[i].uid).collect();
        let source = sel.mailbox.id;
        if uids.is_empty() {
            self.ok(tag, "Nothing to do");
            return Flow::Continue;
        }
        let account = self.account_id();
        let meta = self.server.core.store.meta();
        let outcome = match retry(self.wait(), || {
            meta.copy_messages(account, source, &uids, target.id, remove)
        })
        .await
        {
            Ok(o) => o,
            Err(e) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        };
        self.server.core.store.changed(account);
        let from: Vec<u32> = outcome.pairs.iter().map(|p| p.0).collect();
        let to: Vec<u32> = outcome.pairs.iter().map(|p| p.1).collect();
        let copyuid = if from.is_empty() {
            String::new()
        } else {
            format!(
                "[COPYUID {} {} {}] ",
                outcome.uidvalidity,
                uid_list(&from),
                uid_list(&to)
            )
        };
        if remove {
            // RFC 6851 §4.3: COPYUID in an untagged OK, then the expunges, then the tagged OK.
            if !copyuid.is_empty() {
                self.untagged(&format!("OK {copyuid}Moved"));
            }
            if let Some(sel) = &mut self.selected {
                for uid in &from {
                    if !sel.pending_expunges.contains(uid) {
                        sel.pending_expunges.push(*uid);
                    }
                }
            }
            if let Err(e) = self.sync(true, true).await {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
            self.ok(tag, "MOVE completed");
        } else {
            if self
                .selected
                .as_ref()
                .is_some_and(|s| s.mailbox.id == target.id)
            {
                let _ = self.sync(true, false).await;
            }
            self.ok(tag, &format!("{copyuid}COPY completed"));
        }
        Flow::Continue
    }
}

/// UIDs in order, as a set where that keeps the order (RFC 4315 uid-set pairs by position).
fn uid_list(uids: &[u32]) -> String {
    if uids.windows(2).all(|w| w[0] < w[1]) {
        uid_set(uids)
    } else {
        uids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}
