//! EXPUNGE (RFC 9051 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1).

use trimaran_core::delivery::retry;
use trimaran_core::store::flags;

use crate::parser::SeqSet;
use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn expunge(&mut self, tag: &str, uids: Option<SeqSet>) -> Flow {
        if self.selected.as_ref().is_some_and(|s| s.read_only) {
            self.no(tag, "[READ-ONLY] Mailbox is read-only");
            return Flow::Continue;
        }
        // RFC 4314 §4: EXPUNGE needs "e".
        if self.selected.as_ref().is_some_and(|s| !s.rights.has('e')) {
            self.no(tag, "[NOPERM] Right 'e' is needed to expunge (RFC 4314)");
            return Flow::Continue;
        }
        // Flags as they are now, including \Deleted set by other sessions.
        if let Err(e) = self.sync(true, true).await {
            self.store_failed(tag, &e);
            return Flow::Continue;
        }
        let within = match &uids {
            Some(set) => match self.resolve(set, true) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.bad(tag, why);
                    return Flow::Continue;
                }
            },
            None => None,
        };
        let Some(sel) = &self.selected else {
            return Flow::Continue;
        };
        let targets: Vec<u32> = sel
            .messages
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                m.flags & flags::DELETED != 0
                    && within.as_ref().is_none_or(|w| w.binary_search(i).is_ok())
            })
            .map(|(_, m)| m.uid)
            .collect();
        if !targets.is_empty() {
            let (account, mailbox) = (sel.owner, sel.mailbox.id);
            let meta = self.server.core.store.meta();
            match retry(self.wait(), || meta.expunge(account, mailbox, &targets)).await {
                Ok(_) => self.server.core.store.changed(account),
                Err(e) => {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            }
            if let Err(e) = self.sync(true, true).await {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        }
        let modseq = self.selected.as_ref().map_or(0, |s| s.modseq);
        if self.condstore {
            self.ok(tag, &format!("[HIGHESTMODSEQ {modseq}] EXPUNGE completed"));
        } else {
            self.ok(tag, "EXPUNGE completed");
        }
        Flow::Continue
    }
}
