//! APPEND (RFC 9051 §6.3.12) with MULTIAPPEND (RFC 3502: all or none), UIDPLUS's APPENDUID
//! (RFC 4315) and APPENDLIMIT (RFC 7889). The reply comes after the store committed (G1).

use std::sync::Arc;

use trimaran_core::delivery::{prepare, retry};
use trimaran_core::store::{now_unix, AppendRequest};

use crate::parser::{AppendMessage, MailboxArg};
use crate::session::{uid_set, Flow, Session};

impl Session {
    pub(crate) async fn append(
        &mut self,
        tag: &str,
        raw: MailboxArg,
        messages: Vec<AppendMessage>,
    ) -> Flow {
        let name = match self.mailbox_name(&raw) {
            Ok(n) => n,
            Err(why) => {
                self.no(tag, why);
                return Flow::Continue;
            }
        };
        let record = match self.find_mailbox(&name).await {
            Ok(Some(r)) => r,
            // RFC 9051 §6.3.12: TRYCREATE tells the client it may create it and retry.
            Ok(None) => {
                self.no(tag, "[TRYCREATE] No such mailbox");
                return Flow::Continue;
            }
            Err(e) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        };
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
                Ok(f) => f,
                Err(why) => {
                    self.bad(tag, why);
                    return Flow::Continue;
                }
            };
            let message = match prepare(m.data, m.date.unwrap_or_else(now_unix)).await {
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
        let (account, store) = (self.account_id(), self.server.core.store.clone());
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
