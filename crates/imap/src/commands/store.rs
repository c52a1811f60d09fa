//! STORE (RFC 9051 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3).

use trimaran_core::delivery::retry;
use trimaran_core::store::{flags, FlagChange, FlagOp};

use crate::parser::SeqSet;
use crate::session::{flag_list, uid_set, Flow, Session};

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store(
        &mut self,
        tag: &str,
        uid: bool,
        set: SeqSet,
        op: FlagOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    ) -> Flow {
        if self.selected.as_ref().is_some_and(|s| s.read_only) {
            self.no(tag, "[READ-ONLY] Mailbox is read-only");
            return Flow::Continue;
        }
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let positions = match self.resolve(&set, uid) {
            Ok(p) => p,
            Err(why) => {
                self.bad(tag, why);
                return Flow::Continue;
            }
        };
        let (bits, keywords) = match self.parse_flags(&flags) {
            Ok(f) => f,
            Err(why) => {
                self.bad(tag, why);
                return Flow::Continue;
            }
        };
        let Some(sel) = &self.selected else {
            return Flow::Continue;
        };
        // RFC 4314 §4: \Seen needs "s", \Deleted "t", any other flag "w"; replacing the
        // flags touches all of them.
        let rights = sel.rights;
        let needed: Vec<char> = if op == FlagOp::Replace {
            vec!['s', 't', 'w']
        } else {
            let mut n = Vec::new();
            if bits & flags::SEEN != 0 {
                n.push('s');
            }
            if bits & flags::DELETED != 0 {
                n.push('t');
            }
            if bits & !(flags::SEEN | flags::DELETED) != 0 || !keywords.is_empty() {
                n.push('w');
            }
            n
        };
        if let Some(missing) = needed.into_iter().find(|&r| !rights.has(r)) {
            self.no(
                tag,
                &format!("[NOPERM] Right '{missing}' is needed for these flags (RFC 4314)"),
            );
            return Flow::Continue;
        }
        let uids: Vec<u32> = positions.iter().map(|&i| sel.messages[i].uid).collect();
        let mailbox = sel.mailbox.id;
        let change = FlagChange {
            op,
            flags: bits,
            keywords,
            unchanged_since,
        };
        let account = sel.owner;
        let meta = self.server.core.store.meta();
        let outcome = match retry(self.wait(), || {
            meta.update_flags(account, mailbox, &uids, &change)
        })
        .await
        {
            Ok(o) => o,
            Err(e) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        };
        if let Some(change) = outcome.change(account) {
            self.server.core.store.announce(change);
        }
        let condstore = self.condstore;
        let mut lines = Vec::new();
        if let Some(sel) = &mut self.selected {
            // When this change took the account's next MODSEQs right after the HIGHESTMODSEQ
            // this session last read, nothing else changed the account in between, and what
            // the store returned is all there is to show: no need to ask for the changes.
            if outcome
                .modseqs
                .iter()
                .zip(sel.modseq + 1..)
                .all(|(&m, next)| m == next)
            {
                if let Some(&last) = outcome.modseqs.last() {
                    sel.modseq = last;
                }
            }
            for e in outcome.updated {
                let Some(i) = sel.position(e.uid) else {
                    continue;
                };
                let changed = sel.messages[i].modseq != e.modseq;
                sel.messages[i] = e;
                let m = &sel.messages[i];
                // RFC 7162 §3.1.3: with CONDSTORE, .SILENT still reports MODSEQ changes made.
                if !silent || (condstore && changed) {
                    let uid_part = if uid {
                        format!("UID {} ", m.uid)
                    } else {
                        String::new()
                    };
                    let modseq = if condstore {
                        format!(" MODSEQ ({})", m.modseq)
                    } else {
                        String::new()
                    };
                    let flags_part = if silent {
                        String::new()
                    } else {
                        format!("FLAGS ({})", flag_list(m.flags, &m.keywords))
                    };
                    let body = format!("{uid_part}{flags_part}{modseq}").trim().to_string();
                    lines.push(format!("{} FETCH ({body})", i + 1));
                }
            }
        }
        for l in lines {
            self.untagged(&l);
        }
        // RFC 9051 §7.4.1: no EXPUNGE during STORE; UID STORE may report them.
        let _ = self.sync(false, uid).await;
        if outcome.modified.is_empty() {
            self.ok(tag, "STORE completed");
        } else {
            let mut modified = outcome.modified;
            if !uid {
                let sel = self.selected.as_ref();
                modified = modified
                    .iter()
                    .filter_map(|u| sel.and_then(|s| s.position(*u)).map(|i| i as u32 + 1))
                    .collect();
            }
            modified.sort_unstable();
            self.ok(
                tag,
                &format!(
                    "[MODIFIED {}] Conditional STORE failed for some",
                    uid_set(&modified)
                ),
            );
        }
        Flow::Continue
    }
}
