//! SELECT and EXAMINE (RFC 9051 §6.3.2, §6.3.3), with CONDSTORE and QRESYNC parameters
//! (RFC 7162 §3.1.8, §3.2.5).

use trimaran_core::delivery::retry;
use trimaran_core::store::flags;

use crate::parser::{MailboxArg, Qresync, SeqSet};
use crate::session::{flag_list, uid_set, Flow, IfMissing, Selected, Session};

impl Session {
    pub(crate) async fn select(
        &mut self,
        tag: &str,
        mailbox: MailboxArg,
        read_only: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    ) -> Flow {
        if qresync.is_some() && !self.qresync {
            self.bad(tag, "QRESYNC must be enabled first (RFC 7162 §3.2.3)");
            return Flow::Continue;
        }
        if self.selected.take().is_some() && (self.qresync || self.rev2) {
            // RFC 7162 §3.2.11, RFC 9051 §7.1: the previous mailbox is closed.
            self.untagged("OK [CLOSED] Previous mailbox closed");
        }
        if condstore {
            self.condstore = true;
        }
        let Some((_, target)) = self
            .named_mailbox(tag, &mailbox, IfMissing::Nonexistent)
            .await
        else {
            return Flow::Continue;
        };
        if !self.require(tag, &target, 'r') {
            return Flow::Continue;
        }
        let rights = target.rights;
        // RFC 4314 §4: without a right to change anything the mailbox is read-only.
        let read_only = read_only || !"swte".chars().any(|r| rights.has(r));
        let record = target.record;
        let meta = self.server.core.store.meta();
        let messages = match self.server.mailbox_cache.get(&record) {
            Some(list) => Vec::clone(&list),
            None => match retry(self.wait(), || meta.mailbox_entries(record.id)).await {
                Ok(m) => {
                    self.server
                        .mailbox_cache
                        .put(&record, std::sync::Arc::new(m.clone()));
                    m
                }
                Err(e) => {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            },
        };
        let mut keywords: Vec<&str> = Vec::new();
        for m in &messages {
            for k in &m.keywords {
                if !keywords.contains(&k.as_str()) {
                    keywords.push(k);
                }
            }
        }
        let flags_line = format!(
            "FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{}{})",
            if keywords.is_empty() { "" } else { " " },
            keywords.join(" ")
        );
        let first_unseen = messages.iter().position(|m| m.flags & flags::SEEN == 0);
        self.untagged(&flags_line);
        if read_only {
            self.untagged("OK [PERMANENTFLAGS ()] Read-only");
        } else {
            // RFC 4314 §4: \Seen needs "s", \Deleted "t", every other flag "w".
            let mut permitted = Vec::new();
            if rights.has('w') {
                permitted.extend(["\\Answered", "\\Flagged"]);
            }
            if rights.has('t') {
                permitted.push("\\Deleted");
            }
            if rights.has('s') {
                permitted.push("\\Seen");
            }
            if rights.has('w') {
                permitted.extend(["\\Draft", "\\*"]);
            }
            self.untagged(&format!(
                "OK [PERMANENTFLAGS ({})] Flags permitted",
                permitted.join(" ")
            ));
        }
        self.untagged(&format!("{} EXISTS", messages.len()));
        if !self.rev2 {
            // IMAP4rev1 requires RECENT (RFC 3501 §6.3.1); no session claims \Recent here.
            self.untagged("0 RECENT");
            if let Some(i) = first_unseen {
                self.untagged(&format!("OK [UNSEEN {}] First unseen", i + 1));
            }
        }
        self.untagged(&format!(
            "OK [UIDVALIDITY {}] UIDs valid",
            record.uidvalidity
        ));
        self.untagged(&format!(
            "OK [UIDNEXT {}] Predicted next UID",
            record.uidnext
        ));
        self.untagged(&format!(
            "OK [HIGHESTMODSEQ {}] Highest",
            record.highestmodseq
        ));
        self.untagged(&format!("OK [MAILBOXID (F{})] Ok", record.id));
        let mut selected = Selected {
            owner: target.owner,
            rights,
            shared: target.shared_by.is_some(),
            modseq: record.highestmodseq,
            mailbox: record,
            read_only,
            messages,
            pending_expunges: Vec::new(),
        };
        if let Some(q) = qresync.filter(|q| q.uidvalidity == selected.mailbox.uidvalidity) {
            if let Err(e) = self.resynchronise(&mut selected, &q).await {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        }
        self.selected = Some(selected);
        let mode = if read_only { "READ-ONLY" } else { "READ-WRITE" };
        self.ok(tag, &format!("[{mode}] Selected"));
        Flow::Continue
    }

    /// QRESYNC (RFC 7162 §3.2.5.1): what vanished and what changed since the client's MODSEQ.
    async fn resynchronise(
        &mut self,
        sel: &mut Selected,
        q: &Qresync,
    ) -> Result<(), trimaran_core::store::StoreError> {
        let (account, mailbox) = (sel.owner, sel.mailbox.id);
        let meta = self.server.core.store.meta();
        let delta = retry(self.wait(), || {
            meta.mailbox_delta(account, mailbox, q.modseq)
        })
        .await?;
        let known = |uid: u32| match &q.known_uids {
            Some(SeqSet::Ranges(r)) => SeqSet::contains(r, uid, u32::MAX),
            _ => true,
        };
        let vanished: Vec<u32> = delta
            .expunged
            .iter()
            .copied()
            .filter(|&u| known(u) && sel.position(u).is_none())
            .collect();
        if !vanished.is_empty() {
            self.untagged(&format!("VANISHED (EARLIER) {}", uid_set(&vanished)));
        }
        for e in delta.changed {
            if let Some(i) = sel.position(e.uid) {
                let m = &sel.messages[i];
                self.untagged(&format!(
                    "{} FETCH (UID {} FLAGS ({}) MODSEQ ({}))",
                    i + 1,
                    m.uid,
                    flag_list(m.flags, &m.keywords),
                    m.modseq
                ));
            }
        }
        Ok(())
    }
}
