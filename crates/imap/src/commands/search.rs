//! SEARCH (RFC 9051 §6.4.4) with ESEARCH (RFC 4731), SEARCHRES (RFC 5182), MODSEQ
//! (RFC 7162 §3.1.5) and EMAILID (RFC 8474). Text keys match case-insensitively as substrings
//! of decoded text: encoded-words and body charsets are decoded by mail-parser first.

use std::collections::{HashMap, HashSet};

use trimaran_core::delivery::retry;
use trimaran_core::store::search::{index_key, Field};
use trimaran_core::store::{BlobHash, MessageEntry, SearchText, StoreError, TextParts, TextQuery};

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

/// What the keys need: (parts of the stored text, the Date: field).
fn needs_content(key: &SearchKey) -> (TextParts, bool) {
    use SearchKey::*;
    let either = |a: (TextParts, bool), b: (TextParts, bool)| {
        (
            TextParts {
                header: a.0.header || b.0.header,
                body: a.0.body || b.0.body,
            },
            a.1 || b.1,
        )
    };
    match key {
        Header(..) => (
            TextParts {
                header: true,
                body: false,
            },
            false,
        ),
        Body(_) => (
            TextParts {
                header: false,
                body: true,
            },
            false,
        ),
        Text(_) => (
            TextParts {
                header: true,
                body: true,
            },
            false,
        ),
        SentBefore(_) | SentOn(_) | SentSince(_) | ThreadId(_) => (TextParts::default(), true),
        And(keys) => keys
            .iter()
            .map(needs_content)
            .fold((TextParts::default(), false), either),
        Or(a, b) => either(needs_content(a), needs_content(b)),
        Not(k) => needs_content(k),
        _ => (TextParts::default(), false),
    }
}

/// The text keys of a search, wherever they are in it.
fn text_keys<'k>(key: &'k SearchKey, out: &mut Vec<&'k SearchKey>) {
    use SearchKey::*;
    match key {
        And(keys) => keys.iter().for_each(|k| text_keys(k, out)),
        Or(a, b) => {
            text_keys(a, out);
            text_keys(b, out);
        }
        Not(k) => text_keys(k, out),
        Header(..) | Body(_) | Text(_) => out.push(key),
        _ => {}
    }
}

/// How a text key is looked up in the index; None when the index cannot help.
fn index_query(key: &SearchKey) -> Option<TextQuery> {
    match key {
        SearchKey::Body(s) => TextQuery::new(&lower(s), &[Field::Body]),
        SearchKey::Text(s) => TextQuery::new(&lower(s), Field::all()),
        SearchKey::Header(name, s) => {
            let field = Field::of_header(&lower(name));
            let query = TextQuery::new(&lower(s), &[field])?;
            // Headers other than the five with a field of their own share one: a hit there
            // may be in another header.
            Some(if field == Field::OtherHeader {
                query.candidates_only()
            } else {
                query
            })
        }
        _ => None,
    }
}

fn key_id(key: &SearchKey) -> usize {
    key as *const SearchKey as usize
}

/// What the text index says about the text keys of one search.
#[derive(Default)]
struct IndexAnswers {
    /// Per text key (by its place in the key tree): the messages it gave (index keys, sorted),
    /// and whether exactly.
    keys: HashMap<usize, (Vec<i64>, bool)>,
    /// Messages the index cannot answer for.
    unindexed: HashSet<BlobHash>,
}

impl IndexAnswers {
    /// Whether `key` matches, from the index alone; None when only the text can tell.
    fn says(&self, key: &SearchKey, hash: &BlobHash) -> Option<bool> {
        let (hits, exact) = self.keys.get(&key_id(key))?;
        if self.unindexed.contains(hash) {
            return None;
        }
        let hit = hits.binary_search(&index_key(hash)).is_ok();
        (*exact || !hit).then_some(hit)
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

/// Whether the message matches without reading its text or metadata (three-valued: None when
/// a key that needs them decides).
fn decide(
    key: &SearchKey,
    m: &MessageEntry,
    answers: &IndexAnswers,
    ctx: &Ctx<'_>,
) -> Option<bool> {
    use SearchKey::*;
    match key {
        And(keys) => {
            let mut known = true;
            for k in keys {
                match decide(k, m, answers, ctx) {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => known = false,
                }
            }
            known.then_some(true)
        }
        Or(a, b) => match (decide(a, m, answers, ctx), decide(b, m, answers, ctx)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Not(k) => decide(k, m, answers, ctx).map(|v| !v),
        Header(..) | Body(_) | Text(_) => answers.says(key, &m.hash),
        SentBefore(_) | SentOn(_) | SentSince(_) | ThreadId(_) => None,
        _ => Some(matches(key, m, None, ctx)),
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
        let sel = self.selected.as_mut()?;
        // Borrowed out of the session for the search (a 100,000-message list is not copied)
        // and put back before anything else can look at it.
        let messages = std::mem::take(&mut sel.messages);
        let store = self.server.core.store.clone();
        let outcome = search_messages(&store, self.wait(), key, &messages, &self.saved).await;
        if let Some(sel) = self.selected.as_mut() {
            sel.messages = messages;
        }
        match outcome {
            Ok(found) => Some(found),
            Err(e) => {
                self.store_failed(tag, &e);
                None
            }
        }
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

/// The messages that match `key`, in mailbox order.
async fn search_messages(
    store: &std::sync::Arc<trimaran_core::store::Store>,
    wait: std::time::Duration,
    key: &SearchKey,
    messages: &[MessageEntry],
    saved: &[u32],
) -> Result<Vec<Found>, StoreError> {
    let (parts, date_keys) = needs_content(key);
    let max_uid = messages.last().map_or(0, |m| m.uid);
    // The index answers what it can; the stored text decides the rest (exact substring).
    let mut keys = Vec::new();
    text_keys(key, &mut keys);
    let mut answers = IndexAnswers::default();
    if !keys.is_empty() {
        answers.unindexed = retry(wait, || store.meta().search_unindexed())
            .await?
            .into_iter()
            .collect();
    }
    for k in keys {
        let Some(query) = index_query(k) else {
            continue;
        };
        let mut hits = retry(wait, || store.meta().search_index(&query)).await?;
        hits.sort_unstable();
        answers.keys.insert(key_id(k), (hits, query.is_exact()));
    }
    let ctx = |i: usize| Ctx {
        seq: i as u32 + 1,
        max_seq: messages.len() as u32,
        max_uid,
        saved,
    };
    let mut matched = vec![false; messages.len()];
    let mut undecided: Vec<(usize, &MessageEntry)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match decide(key, m, &answers, &ctx(i)) {
            Some(v) => matched[i] = v,
            None => undecided.push((i, m)),
        }
    }
    for chunk in undecided.chunks(500) {
        let contents = load_contents(store, wait, chunk, parts, date_keys).await?;
        for (n, (i, m)) in chunk.iter().enumerate() {
            matched[*i] = matches(key, m, contents.get(n), &ctx(*i));
        }
    }
    Ok(messages
        .iter()
        .enumerate()
        .filter(|(i, _)| matched[*i])
        .map(|(i, m)| (i as u32 + 1, m.uid, m.modseq))
        .collect())
}

/// Search content for a chunk of messages, in order: stored search text where there is one,
/// the body itself (decoded now) for messages stored before the index existed.
async fn load_contents(
    store: &std::sync::Arc<trimaran_core::store::Store>,
    wait: std::time::Duration,
    chunk: &[(usize, &MessageEntry)],
    parts: TextParts,
    date: bool,
) -> Result<Vec<Content>, StoreError> {
    let text = parts.header || parts.body;
    let hashes: Vec<BlobHash> = chunk.iter().map(|(_, m)| m.hash).collect();
    let mut texts: HashMap<BlobHash, SearchText> = if text {
        retry(wait, || store.meta().search_texts(&hashes, parts))
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
