//! COPY (RFC 9051 §6.4.7) and MOVE (RFC 6851), with COPYUID (RFC 4315 §3).

use trimaran_core::delivery::retry;
use trimaran_core::store::{flags, FlagChange, FlagOp};

use crate::parser::{MailboxArg, SeqSet};
use crate::session::{uid_set, Flow, IfMissing, Session};

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
        let Some((_, target)) = self.named_mailbox(tag, &raw, IfMissing::TryCreate).await else {
            return Flow::Continue;
        };
        // RFC 4314 §4: "i" on the target; MOVE also "t" and "e" on the source (RFC 6851 §3.3).
        if !self.require(tag, &target, 'i') {
            return Flow::Continue;
        }
        if remove
            && self
                .selected
                .as_ref()
                .is_some_and(|s| !s.rights.has('t') || !s.rights.has('e'))
        {
            self.no(
                tag,
                "[NOPERM] Rights 't' and 'e' are needed to move (RFC 4314)",
            );
            return Flow::Continue;
        }
        let Some(sel) = &self.selected else {
            return Flow::Continue;
        };
        let uids: Vec<u32> = positions.iter().map(|&i| sel.messages[i].uid).collect();
        let (source, source_owner) = (sel.mailbox.id, sel.owner);
        // Flags the account may not set on the target are taken off the copies.
        let mut keywords: Vec<String> = Vec::new();
        for &i in &positions {
            for k in &sel.messages[i].keywords {
                if !keywords.contains(k) {
                    keywords.push(k.clone());
                }
            }
        }
        let (kept, kept_keywords) =
            crate::commands::append::permitted_flags(target.rights, !0, keywords.clone());
        let strip = FlagChange {
            op: FlagOp::Remove,
            flags: !kept
                & (flags::SEEN | flags::ANSWERED | flags::FLAGGED | flags::DELETED | flags::DRAFT),
            keywords: if kept_keywords.is_empty() {
                keywords
            } else {
                Vec::new()
            },
            unchanged_since: None,
        };
        let (owner, target) = (target.owner, target.record);
        if uids.is_empty() {
            self.ok(tag, "Nothing to do");
            return Flow::Continue;
        }
        let meta = self.server.core.store.meta();
        let outcome = match retry(self.wait(), || {
            meta.copy_messages((source_owner, source), &uids, (owner, target.id), remove)
        })
        .await
        {
            Ok(o) => o,
            Err(e) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        };
        if strip.flags != 0 || !strip.keywords.is_empty() {
            let copies: Vec<u32> = outcome.pairs.iter().map(|p| p.1).collect();
            if let Err(e) = retry(self.wait(), || {
                meta.update_flags(owner, target.id, &copies, &strip)
            })
            .await
            {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        }
        self.server.core.store.changed(owner);
        if source_owner != owner {
            self.server.core.store.changed(source_owner);
        }
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
