//! SEARCH (RFC 9051 §6.4.4) with ESEARCH (RFC 4731), SEARCHRES (RFC 5182), MODSEQ
//! (RFC 7162 §3.1.5) and EMAILID (RFC 8474). Text keys match case-insensitively as substrings
//! of decoded text: encoded-words and body charsets are decoded by mail-parser first.

use std::collections::{BTreeSet, HashMap, HashSet};

use trimaran_core::delivery::retry;
use trimaran_core::store::search::query_grams;
use trimaran_core::store::{BlobHash, MessageEntry, SearchText, StoreError};

use crate::parser::{SearchKey, SearchReturn, SeqSet};
use crate::session::{uid_set, Flow, Session};

/// What a message's text keys look at.
struct Content {
    /// Date: header, for the SENT* keys.
    date: Option<i64>,
    /// For the THREADID key (RFC 8474 §6).
    thread: Option<String>,
    /// (lower-cased field name, lower-cased decoded value)
    headers: Vec<(String, String)>,
    body: String,
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

impl Content {
    fn from_text(text: SearchText, date: Option<i64>, thread: Option<String>) -> Content {
        let headers = text
            .header
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Content {
            date,
            thread,
            headers,
            body: text.body,
        }
    }
}

/// What the keys need: (text of headers or body, the Date: field).
fn needs_content(key: &SearchKey) -> (bool, bool) {
    use SearchKey::*;
    match key {
        Header(..) | Body(_) | Text(_) => (true, false),
        SentBefore(_) | SentOn(_) | SentSince(_) | ThreadId(_) => (false, true),
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

/// Strings every match must contain, for the index to narrow the search: text keys that all
/// matches must satisfy (not under OR or NOT).
fn required_needles(key: &SearchKey, out: &mut Vec<String>) {
    match key {
        SearchKey::And(keys) => keys.iter().for_each(|k| required_needles(k, out)),
        SearchKey::Body(s) | SearchKey::Text(s) | SearchKey::Header(_, s) if !s.is_empty() => {
            out.push(lower(s))
        }
        _ => {}
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
    let sent = || c.and_then(|c| c.date).map(|d| d - d.rem_euclid(DAY));
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
            c.is_some_and(|c| c.body.contains(&s))
        }
        Text(s) => {
            let s = lower(s);
            c.is_some_and(|c| {
                c.headers
                    .iter()
                    .any(|(n, v)| n.contains(&s) || v.contains(&s))
                    || c.body.contains(&s)
            })
        }
        ModSeq(n) => m.modseq >= *n,
        EmailId(id) => crate::commands::fetch::email_id(m) == *id,
        ThreadId(id) => c.and_then(|c| c.thread.as_deref()) == Some(id.as_str()),
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

/// A message a search matched: (sequence number, UID, MODSEQ).
pub(crate) type Found = (u32, u32, u64);

impl Session {
    /// The messages of the selected mailbox that match `key`, in mailbox order; None when the
    /// store failed, which has then been answered.
    pub(crate) async fn matching(&mut self, tag: &str, key: &SearchKey) -> Option<Vec<Found>> {
        let (text_keys, date_keys) = needs_content(key);
        let sel = self.selected.as_ref()?;
        let mailbox = sel.mailbox.id;
        let messages = sel.messages.clone();
        let max_uid = messages.last().map_or(0, |m| m.uid);
        let store = self.server.core.store.clone();
        let wait = self.wait();
        // The index narrows the messages to look at; the stored text decides (exact substring).
        let mut needles = Vec::new();
        required_needles(key, &mut needles);
        let grams: Vec<String> = needles
            .iter()
            .flat_map(|n| query_grams(n))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let candidates: Option<HashSet<u32>> = if grams.is_empty() {
            None
        } else {
            match retry(wait, || store.meta().search_candidates(mailbox, &grams)).await {
                Ok(uids) => Some(uids.into_iter().collect()),
                Err(e) => {
                    self.store_failed(tag, &e);
                    return None;
                }
            }
        };
        let looked_at: Vec<(usize, &MessageEntry)> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| candidates.as_ref().is_none_or(|c| c.contains(&m.uid)))
            .collect();
        let mut found: Vec<Found> = Vec::new();
        for chunk in looked_at.chunks(500) {
            let contents = if text_keys || date_keys {
                match load_contents(&store, wait, chunk, text_keys, date_keys).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.store_failed(tag, &e);
                        return None;
                    }
                }
            } else {
                Vec::new()
            };
            for (n, (i, m)) in chunk.iter().enumerate() {
                let ctx = Ctx {
                    seq: *i as u32 + 1,
                    max_seq: messages.len() as u32,
                    max_uid,
                    saved: &self.saved,
                };
                if matches(key, m, contents.get(n), &ctx) {
                    found.push((*i as u32 + 1, m.uid, m.modseq));
                }
            }
        }
        Some(found)
    }

    pub(crate) async fn search(
        &mut self,
        tag: &str,
        uid: bool,
        key: SearchKey,
        returns: Option<Vec<SearchReturn>>,
    ) -> Flow {
        let Some(found) = self.matching(tag, &key).await else {
            return Flow::Continue;
        };
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

/// Search content for a chunk of messages, in order: stored search text where there is one,
/// the body itself (decoded now) for messages stored before the index existed.
async fn load_contents(
    store: &std::sync::Arc<trimaran_core::store::Store>,
    wait: std::time::Duration,
    chunk: &[(usize, &MessageEntry)],
    text: bool,
    date: bool,
) -> Result<Vec<Content>, StoreError> {
    let hashes: Vec<BlobHash> = chunk.iter().map(|(_, m)| m.hash).collect();
    let mut texts: HashMap<BlobHash, SearchText> = if text {
        retry(wait, || store.meta().search_texts(&hashes))
            .await?
            .into_iter()
            .collect()
    } else {
        HashMap::new()
    };
    let mut out = Vec::with_capacity(chunk.len());
    for (_, m) in chunk {
        let (sent, thread) = if date {
            let meta = retry(wait, || store.meta().message_meta(&m.hash))
                .await?
                .unwrap_or_default();
            (meta.date, Some(crate::commands::fetch::thread_id(&meta, m)))
        } else {
            (None, None)
        };
        let text = match texts.remove(&m.hash) {
            Some(t) => t,
            None if text => {
                let raw = retry(wait, || store.read_blob(&m.hash)).await?;
                tokio::task::spawn_blocking(move || trimaran_core::message::search_text(&raw))
                    .await
                    .map_err(|e| StoreError::Internal(e.to_string()))?
            }
            None => SearchText::default(),
        };
        out.push(Content::from_text(text, sent, thread));
    }
    Ok(out)
}
