//! SEARCH (RFC 9051 §6.4.4) with ESEARCH (RFC 4731), SEARCHRES (RFC 5182), MODSEQ
//! (RFC 7162 §3.1.5) and EMAILID (RFC 8474). Text keys match case-insensitively as substrings
//! of decoded text: encoded-words and body charsets are decoded by mail-parser first.

use mail_parser::{HeaderValue, MessageParser, PartType};
use trimaran_core::delivery::retry;
use trimaran_core::store::{MessageEntry, MessageMeta, StoreError};

use crate::parser::{SearchKey, SearchReturn, SeqSet};
use crate::session::{uid_set, Flow, Session};

/// What a message's text keys look at, decoded once per message per search.
struct Content {
    meta: MessageMeta,
    /// (lower-cased field name, lower-cased decoded value)
    headers: Vec<(String, String)>,
    body: Option<String>,
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

fn header_text(v: &HeaderValue<'_>) -> String {
    match v {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(" "),
        HeaderValue::Address(a) => a
            .iter()
            .map(|a| {
                format!(
                    "{} <{}>",
                    a.name().unwrap_or_default(),
                    a.address().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        HeaderValue::DateTime(d) => d.to_rfc822(),
        HeaderValue::ContentType(c) => format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default()),
        HeaderValue::Received(_) | HeaderValue::Empty => String::new(),
    }
}

fn decode_content(raw: &[u8], meta: MessageMeta, with_body: bool) -> Content {
    let parsed = MessageParser::default().parse(raw);
    let mut headers = Vec::new();
    let mut body = None;
    if let Some(msg) = &parsed {
        if let Some(root) = msg.parts.first() {
            for h in root.headers.iter() {
                headers.push((lower(h.name.as_str()), lower(&header_text(&h.value))));
            }
        }
        if with_body {
            let mut text = String::new();
            for part in &msg.parts {
                match &part.body {
                    PartType::Text(t) | PartType::Html(t) => {
                        text.push_str(&lower(t));
                        text.push('\n');
                    }
                    _ => {}
                }
            }
            body = Some(text);
        }
    } else if with_body {
        body = Some(lower(&String::from_utf8_lossy(raw)));
    }
    Content {
        meta,
        headers,
        body,
    }
}

fn needs_content(key: &SearchKey) -> (bool, bool) {
    use SearchKey::*;
    match key {
        Header(..) | SentBefore(_) | SentOn(_) | SentSince(_) => (true, false),
        Body(_) | Text(_) => (true, true),
        And(keys) => keys
            .iter()
            .map(needs_content)
            .fold((false, false), |a, b| (a.0 || b.0, a.1 || b.1)),
        Or(a, b) => {
            let (x, y) = (needs_content(a), needs_content(b));
            (x.0 || y.0, x.1 || y.1)
        }
        Not(k) => needs_content(k),
        _ => (false, false),
    }
}

const DAY: i64 = 86_400;

struct Ctx<'a> {
    seq: u32,
    max_seq: u32,
    max_uid: u32,
    saved: &'a [u32],
}

fn matches(key: &SearchKey, m: &MessageEntry, c: Option<&Content>, ctx: &Ctx<'_>) -> bool {
    use SearchKey::*;
    let sent = || c.and_then(|c| c.meta.date).map(|d| d - d.rem_euclid(DAY));
    match key {
        All => true,
        And(keys) => keys.iter().all(|k| matches(k, m, c, ctx)),
        Or(a, b) => matches(a, m, c, ctx) || matches(b, m, c, ctx),
        Not(k) => !matches(k, m, c, ctx),
        Seq(SeqSet::Ranges(r)) => SeqSet::contains(r, ctx.seq, ctx.max_seq),
        Seq(SeqSet::Saved) | Uid(SeqSet::Saved) => ctx.saved.contains(&m.uid),
        Uid(SeqSet::Ranges(r)) => SeqSet::contains(r, m.uid, ctx.max_uid),
        Flag { bit, set } => (m.flags & bit != 0) == *set,
        Keyword { name, set } => m.keywords.iter().any(|k| k.eq_ignore_ascii_case(name)) == *set,
        Recent | New => false,
        Old => true,
        Larger(n) => m.size > *n,
        Smaller(n) => m.size < *n,
        Before(d) => m.internal_date < *d,
        On(d) => (*d..*d + DAY).contains(&m.internal_date),
        Since(d) => m.internal_date >= *d,
        SentBefore(d) => sent().is_some_and(|s| s < *d),
        SentOn(d) => sent().is_some_and(|s| s == *d),
        SentSince(d) => sent().is_some_and(|s| s >= *d),
        Header(name, value) => {
            let (name, value) = (lower(name), lower(value));
            c.is_some_and(|c| {
                c.headers
                    .iter()
                    .any(|(n, v)| *n == name && (value.is_empty() || v.contains(&value)))
            })
        }
        Body(s) => {
            let s = lower(s);
            c.and_then(|c| c.body.as_ref())
                .is_some_and(|b| b.contains(&s))
        }
        Text(s) => {
            let s = lower(s);
            c.is_some_and(|c| {
                c.headers
                    .iter()
                    .any(|(n, v)| n.contains(&s) || v.contains(&s))
                    || c.body.as_ref().is_some_and(|b| b.contains(&s))
            })
        }
        ModSeq(n) => m.modseq >= *n,
        EmailId(id) => crate::commands::fetch::email_id(m) == *id,
        ThreadId(_) => false,
    }
}

fn has_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq(_) => true,
        SearchKey::And(k) => k.iter().any(has_modseq),
        SearchKey::Or(a, b) => has_modseq(a) || has_modseq(b),
        SearchKey::Not(k) => has_modseq(k),
        _ => false,
    }
}

impl Session {
    pub(crate) async fn search(
        &mut self,
        tag: &str,
        uid: bool,
        key: SearchKey,
        returns: Option<Vec<SearchReturn>>,
    ) -> Flow {
        let (header_keys, body_keys) = needs_content(&key);
        let Some(sel) = &self.selected else {
            return Flow::Continue;
        };
        let messages = sel.messages.clone();
        let max_uid = messages.last().map_or(0, |m| m.uid);
        let store = self.server.core.store.clone();
        let wait = self.wait();
        let mut found: Vec<(u32, u32, u64)> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let content = if header_keys {
                match load_content(&store, wait, m, body_keys).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        self.store_failed(tag, &e);
                        return Flow::Continue;
                    }
                }
            } else {
                None
            };
            let ctx = Ctx {
                seq: i as u32 + 1,
                max_seq: messages.len() as u32,
                max_uid,
                saved: &self.saved,
            };
            if matches(&key, m, content.as_ref(), &ctx) {
                found.push((i as u32 + 1, m.uid, m.modseq));
            }
        }
        let modseq = has_modseq(&key).then(|| found.iter().map(|f| f.2).max().unwrap_or(0));
        if has_modseq(&key) {
            self.condstore = true;
        }
        let numbers: Vec<u32> = found.iter().map(|f| if uid { f.1 } else { f.0 }).collect();
        let esearch = returns.is_some() || self.rev2;
        let returns = returns.unwrap_or_else(|| vec![SearchReturn::All]);
        if returns.contains(&SearchReturn::Save) {
            self.saved = found.iter().map(|f| f.1).collect();
        }
        if esearch {
            // RFC 4731 §3.1 / RFC 9051 §7.3.4.
            let mut line = format!("ESEARCH (TAG \"{tag}\")");
            if uid {
                line.push_str(" UID");
            }
            let only_save = returns.iter().all(|r| *r == SearchReturn::Save);
            if !numbers.is_empty() {
                for r in &returns {
                    match r {
                        SearchReturn::Min => line.push_str(&format!(" MIN {}", numbers[0])),
                        SearchReturn::Max => {
                            line.push_str(&format!(" MAX {}", numbers[numbers.len() - 1]))
                        }
                        SearchReturn::All => line.push_str(&format!(" ALL {}", uid_set(&numbers))),
                        SearchReturn::Count | SearchReturn::Save => {}
                    }
                }
            }
            if returns.contains(&SearchReturn::Count) {
                line.push_str(&format!(" COUNT {}", numbers.len()));
            }
            if let (Some(m), false) = (modseq, numbers.is_empty()) {
                line.push_str(&format!(" MODSEQ {m}"));
            }
            if !only_save {
                self.untagged(&line);
            }
        } else {
            let mut line = String::from("SEARCH");
            for n in &numbers {
                line.push_str(&format!(" {n}"));
            }
            if let (Some(m), false) = (modseq, numbers.is_empty()) {
                line.push_str(&format!(" (MODSEQ {m})"));
            }
            self.untagged(&line);
        }
        let _ = self.sync(false, uid).await;
        self.ok(tag, "SEARCH completed");
        Flow::Continue
    }
}

async fn load_content(
    store: &std::sync::Arc<trimaran_core::store::Store>,
    wait: std::time::Duration,
    m: &MessageEntry,
    with_body: bool,
) -> Result<Content, StoreError> {
    let raw = retry(wait, || store.read_blob(&m.hash)).await?;
    let meta = retry(wait, || store.meta().message_meta(&m.hash))
        .await?
        .unwrap_or_default();
    tokio::task::spawn_blocking(move || decode_content(&raw, meta, with_body))
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))
}
