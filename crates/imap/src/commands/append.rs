//! APPEND (RFC 9051 §6.3.12) with MULTIAPPEND (RFC 3502: all or none), UIDPLUS's APPENDUID
//! (RFC 4315) and APPENDLIMIT (RFC 7889). The reply comes after the store committed (G1).

use std::sync::Arc;

use trimaran_core::delivery::{prepare_normalized, retry};
use trimaran_core::store::{now_unix, AppendRequest};

use crate::parser::{AppendMessage, MailboxArg};
use crate::rights::Rights;
use crate::session::{uid_set, Flow, IfMissing, Session};

/// The flags of a request that `rights` allow setting: \Seen with "s", \Deleted with "t",
/// the rest with "w" (RFC 4314 §4).
pub(crate) fn permitted_flags(
    rights: Rights,
    mut bits: i64,
    mut keywords: Vec<String>,
) -> (i64, Vec<String>) {
    use trimaran_core::store::flags;
    if !rights.has('s') {
        bits &= !flags::SEEN;
    }
    if !rights.has('t') {
        bits &= !flags::DELETED;
    }
    if !rights.has('w') {
        bits &= flags::SEEN | flags::DELETED;
        keywords.clear();
    }
    (bits, keywords)
}

impl Session {
    pub(crate) async fn append(
        &mut self,
        tag: &str,
        raw: MailboxArg,
        messages: Vec<AppendMessage>,
    ) -> Flow {
        let Some((_, target)) = self.named_mailbox(tag, &raw, IfMissing::TryCreate).await else {
            return Flow::Continue;
        };
        // RFC 4314 §4: APPEND needs "i".
        if !self.require(tag, &target, 'i') {
            return Flow::Continue;
        }
        let record = target.record;
        let mut requests = Vec::with_capacity(messages.len());
        for m in messages {
            if m.data.is_empty() {
                self.no(tag, "[CANNOT] Empty message");
                return Flow::Continue;
            }
            if m.data.len() > self.server.core.config.imap.max_message_size {
                self.no(tag, "[TOOBIG] Message larger than APPENDLIMIT");
                return Flow::Continue;
            }
            let (bits, keywords) = match self.parse_flags(&m.flags) {
                // Flags the account may not set are dropped (RFC 4314 §4 APPEND).
                Ok((bits, keywords)) => permitted_flags(target.rights, bits, keywords),
                Err(why) => {
                    self.bad(tag, why);
                    return Flow::Continue;
                }
            };
            let message = match prepare_normalized(m.data, m.date.unwrap_or_else(now_unix)).await {
                Ok(p) => p,
                Err(e) => {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            };
            requests.push(AppendRequest {
                message,
                flags: bits,
                keywords,
            });
        }
        let requests = Arc::new(requests);
        let (account, store) = (target.owner, self.server.core.store.clone());
        match retry(self.wait(), || {
            store.append(account, record.id, requests.clone())
        })
        .await
        {
            Ok(done) => {
                let uids: Vec<u32> = done.iter().map(|a| a.uid).collect();
                let validity = done.first().map_or(record.uidvalidity, |a| a.uidvalidity);
                if self
                    .selected
                    .as_ref()
                    .is_some_and(|s| s.mailbox.id == record.id)
                {
                    let _ = self.sync(true, true).await;
                }
                self.ok(
                    tag,
                    &format!("[APPENDUID {validity} {}] APPEND completed", uid_set(&uids)),
                );
            }
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }

    /// System flags as bits and keywords as a list; \Recent cannot be set (RFC 9051 §2.3.2).
    pub(crate) fn parse_flags(&self, list: &[String]) -> Result<(i64, Vec<String>), &'static str> {
        let mut bits = 0;
        let mut keywords: Vec<String> = Vec::new();
        for f in list {
            if let Some(system) = f.strip_prefix('\\') {
                let bit = crate::session::SYSTEM_FLAGS
                    .iter()
                    .find(|(_, n)| n[1..].eq_ignore_ascii_case(system))
                    .map(|(b, _)| *b);
                match bit {
                    Some(b) => bits |= b,
                    None if system.eq_ignore_ascii_case("Recent") => {}
                    None => return Err("Unknown system flag"),
                }
            } else if f.len() > 100 {
                return Err("Keyword too long");
            } else if !keywords.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                keywords.push(f.clone());
            }
        }
        if keywords.len() > 100 {
            return Err("Too many keywords");
        }
        Ok((bits, keywords))
    }
}
