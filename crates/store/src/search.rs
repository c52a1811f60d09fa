//! The text index behind IMAP SEARCH: each message's decoded, lower-cased text, and an
//! inverted index that answers substring searches (RFC 9051 §6.4.4) without reading bodies.
//!
//! Word indexes cannot answer substring searches: "uarterl" must find "quarterly", and a
//! two-syllable Korean query must find the word inside longer words. But a needle without
//! separators (only letters and digits) can only occur inside one word, and then it is the
//! start of one of that word's suffixes. So the index holds, per field (body, Subject, From,
//! To, Cc, Bcc, any other header), every suffix of at least two characters of every distinct
//! word, cut to [`MAX_SUFFIX`] characters; a needle is looked up as a *prefix* query. For such
//! a needle of up to [`MAX_SUFFIX`] characters the answer is exact and no text is read. For a
//! needle with separators ("lo wo", "kim@example") each word-part must be found and the
//! candidates are checked against the stored text.
//!
//! Tokens are ASCII (a field letter, then the UTF-8 bytes in hex), so that neither SQLite's
//! FTS5 tokenizer nor PostgreSQL's text search configuration changes them, and a prefix of a
//! needle's bytes is a prefix of the token.

use std::collections::BTreeSet;

/// Decoded, lower-cased text of one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchText {
    /// One "name: value" line per top-level header field, names and values lower-cased.
    pub header: String,
    /// The text of every text part, decoded from its transfer encoding and charset.
    pub body: String,
}

impl SearchText {
    /// (name, value) of each header field, as the lines of [`SearchText::header`] hold them.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.header.lines().filter_map(|l| l.split_once(": "))
    }
}

/// Which parts of the stored text a search needs to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextParts {
    pub header: bool,
    pub body: bool,
}

/// A message's search text with its index tokens, computed before the write transaction so that
/// the single SQLite writer does not spend its time on them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexedText {
    pub text: SearchText,
    /// None when the text has too many to index: it is then always checked against its text.
    pub tokens: Option<Vec<String>>,
    /// Left to the background indexer (`tokens` is then None): the text is stored now, and
    /// searched by its text until it is indexed.
    pub deferred: bool,
}

impl IndexedText {
    /// The text with all its tokens, as the background indexer makes them.
    pub fn new(text: SearchText) -> IndexedText {
        let tokens = index_tokens(&text, MAX_TOKENS);
        IndexedText {
            text,
            tokens,
            deferred: false,
        }
    }

    /// The text of a message being delivered: indexed with it when it has at most
    /// [`INLINE_TOKENS`] tokens, otherwise deferred. The sender waits for the delivery's
    /// commit, and the index of a long or random text costs far more than storing the message
    /// (measured: 3000 deliveries of random text/plain bodies went from 1656 to 15 messages a
    /// second when all were indexed inline).
    pub fn for_delivery(text: SearchText) -> IndexedText {
        match index_tokens(&text, INLINE_TOKENS) {
            Some(tokens) => IndexedText {
                text,
                tokens: Some(tokens),
                deferred: false,
            },
            None => IndexedText {
                text,
                tokens: None,
                deferred: true,
            },
        }
    }
}

/// Most tokens a delivery indexes before its sender is answered: a short note has a few
/// hundred (distinct words times their suffixes); longer texts are indexed seconds later. With
/// 4000, 6000 deliveries of random text ran at 195 messages a second on SQLite; with 1000, at
/// 328 (`bench/smtp-delivery --targets sqlite --messages 6000`).
pub const INLINE_TOKENS: usize = 1_000;

/// Most tokens indexed for one message; a text with more is not indexed but always checked
/// against its stored text.
pub const MAX_TOKENS: usize = 50_000;

/// Longest suffix indexed, in characters: needles up to this long are answered exactly.
pub const MAX_SUFFIX: usize = 24;

/// How the index names a message: the first 8 bytes of its hash. A hit then needs no lookup
/// to find its message; the store keeps a second message with the same key out of the index
/// (and always checks it against its text), so a key names one indexed message.
pub fn index_key(hash: &crate::BlobHash) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.0[..8]);
    i64::from_be_bytes(first)
}

/// Where a search key looks (RFC 9051 §6.4.4), one index field each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Body,
    Subject,
    From,
    To,
    Cc,
    Bcc,
    /// Every other header field's value, and the names of all fields (TEXT matches names).
    OtherHeader,
}

impl Field {
    const ALL: [Field; 7] = [
        Field::Body,
        Field::Subject,
        Field::From,
        Field::To,
        Field::Cc,
        Field::Bcc,
        Field::OtherHeader,
    ];

    /// Every field: TEXT matches header names, header values and the body.
    pub fn all() -> &'static [Field] {
        &Field::ALL
    }

    fn letter(self) -> char {
        match self {
            Field::Body => 'b',
            Field::Subject => 's',
            Field::From => 'f',
            Field::To => 'o',
            Field::Cc => 'c',
            Field::Bcc => 'k',
            Field::OtherHeader => 'h',
        }
    }

    /// The field a header of this (lower-case) name is indexed under.
    pub fn of_header(name: &str) -> Field {
        match name {
            "subject" => Field::Subject,
            "from" => Field::From,
            "to" => Field::To,
            "cc" => Field::Cc,
            "bcc" => Field::Bcc,
            _ => Field::OtherHeader,
        }
    }
}

/// The words of a text: maximal runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

fn token(field: Field, text: &str) -> String {
    let mut s = String::with_capacity(1 + text.len() * 2);
    s.push(field.letter());
    for b in text.bytes() {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    s
}

/// Most bytes of tokens indexed for one message. PostgreSQL's tsvector addresses its lexemes
/// with 20-bit offsets: past 1 MiB of lexeme text, `array_to_tsvector` does not refuse but
/// corrupts the lexemes after it, and searches then miss the message (seen with a 1.4 MB token
/// list). Both back ends keep the same rule, so that they answer alike.
pub const MAX_TOKEN_BYTES: usize = 1_000_000;

/// Tokens being collected, up to a count and [`MAX_TOKEN_BYTES`].
struct Collector {
    tokens: BTreeSet<String>,
    bytes: usize,
    limit: usize,
}

impl Collector {
    fn full(&self) -> bool {
        self.tokens.len() > self.limit || self.bytes > MAX_TOKEN_BYTES
    }

    /// Adds the suffix tokens of `text`; false (stopped) once over a limit, so that a text
    /// with too many costs no more than the limit (random text in a text/plain part has a new
    /// word every few characters).
    fn add_suffixes(&mut self, field: Field, text: &str) -> bool {
        let distinct: BTreeSet<&str> = words(text).collect();
        for word in distinct {
            if self.full() {
                return false;
            }
            let starts: Vec<usize> = word.char_indices().map(|(i, _)| i).collect();
            // Suffixes of two characters or more: a one-character needle narrows nothing.
            for (n, &start) in starts
                .iter()
                .enumerate()
                .take(starts.len().saturating_sub(1))
            {
                let end = starts.get(n + MAX_SUFFIX).copied().unwrap_or(word.len());
                let token = token(field, &word[start..end]);
                let len = token.len();
                if self.tokens.insert(token) {
                    self.bytes += len;
                }
            }
        }
        !self.full()
    }
}

/// The index tokens of a message's text; None when there are more than `limit`, or more than
/// [`MAX_TOKEN_BYTES`] of them.
pub fn index_tokens(text: &SearchText, limit: usize) -> Option<Vec<String>> {
    let mut c = Collector {
        tokens: BTreeSet::new(),
        bytes: 0,
        limit,
    };
    for (name, value) in text.fields() {
        if !c.add_suffixes(Field::OtherHeader, name)
            || !c.add_suffixes(Field::of_header(name), value)
        {
            return None;
        }
    }
    if !c.add_suffixes(Field::Body, &text.body) {
        return None;
    }
    Some(c.tokens.into_iter().collect())
}

/// One needle (already lower-cased) looked up in the index, in the fields a key looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextQuery {
    /// For each word-part of the needle, its token prefix in each field.
    parts: Vec<Vec<String>>,
    exact: bool,
}

impl TextQuery {
    /// None when the index cannot narrow the needle down (no word-part of two characters).
    pub fn new(needle: &str, fields: &[Field]) -> Option<TextQuery> {
        let fields: BTreeSet<Field> = fields.iter().copied().collect();
        let parts: Vec<&str> = words(needle)
            .filter(|w| w.chars().nth(1).is_some())
            .collect();
        if parts.is_empty() || fields.is_empty() {
            return None;
        }
        // Exact when the needle is one word-part the index holds in full: then a message
        // has the needle if and only if one of its suffixes starts with it.
        let exact = parts.len() == 1
            && parts[0].len() == needle.len()
            && needle.chars().count() <= MAX_SUFFIX;
        // Candidates only, then: the two longest parts narrow about as well as all of them
        // (a short part such as "no" is in most messages) at a fraction of the lookup's cost.
        let mut parts = parts;
        parts.sort_by_key(|p| std::cmp::Reverse(p.chars().count()));
        parts.truncate(2);
        let parts = parts
            .iter()
            .map(|p| {
                let end = p.char_indices().nth(MAX_SUFFIX).map_or(p.len(), |(i, _)| i);
                fields.iter().map(|f| token(*f, &p[..end])).collect()
            })
            .collect();
        Some(TextQuery { parts, exact })
    }

    /// The same lookup, taken as candidates only (for a field shared by several headers).
    pub fn candidates_only(mut self) -> TextQuery {
        self.exact = false;
        self
    }

    /// Whether the index's answer is the answer: every message it gives contains the needle
    /// and no other indexed message does. Otherwise it gives candidates to check.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// For each word-part of the needle, the token prefixes of which a message must have one.
    pub fn parts(&self) -> &[Vec<String>] {
        &self.parts
    }

    fn render(&self, and: &str, or: &str, prefix: &str) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|tokens| {
                let alts: Vec<String> = tokens.iter().map(|t| format!("{t}{prefix}")).collect();
                format!("({})", alts.join(or))
            })
            .collect();
        parts.join(and)
    }

    /// In SQLite FTS5 syntax: tokens are letters and digits, safe as they are.
    pub fn fts5(&self) -> String {
        self.render(" AND ", " OR ", "*")
    }

    /// In PostgreSQL tsquery syntax.
    pub fn tsquery(&self) -> String {
        self.render(" & ", " | ", ":*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the index answers for a needle, emulating a prefix query over `index`.
    fn lookup(index: &BTreeSet<String>, needle: &str, fields: &[Field]) -> Option<(bool, bool)> {
        let q = TextQuery::new(needle, fields)?;
        let found = q.parts.iter().all(|alts| {
            alts.iter()
                .any(|p| index.iter().any(|t| t.starts_with(p.as_str())))
        });
        Some((found, q.is_exact()))
    }

    #[test]
    fn token_lists_stay_under_the_tsvector_limit() {
        // 1500 random 30-character words: about 43,000 tokens (under MAX_TOKENS) but 1.4 MB.
        let mut x: u64 = 7;
        let body: String = (0..1500)
            .map(|_| {
                (0..30)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[(x >> 33) as usize % 36])
                    })
                    .collect::<String>()
                    + " "
            })
            .collect();
        let text = SearchText {
            header: String::new(),
            body,
        };
        assert_eq!(index_tokens(&text, MAX_TOKENS), None);
        let half = SearchText {
            header: String::new(),
            body: text.body[..text.body.len() / 2].to_string(),
        };
        let tokens = index_tokens(&half, MAX_TOKENS).unwrap();
        assert!(tokens.iter().map(String::len).sum::<usize>() <= MAX_TOKEN_BYTES);
    }

    #[test]
    fn suffixes_answer_substrings_per_field() {
        let text = SearchText {
            header: "subject: 한글로된 제목\nfrom: kim <kim@example.kr>\nx-mailer: foo\n".into(),
            body: "hello world, quarterly report".into(),
        };
        let index: BTreeSet<String> = index_tokens(&text, MAX_TOKENS)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            lookup(&index, "글로", &[Field::Subject]),
            Some((true, true))
        );
        assert_eq!(lookup(&index, "글로", &[Field::Body]), Some((false, true)));
        assert_eq!(
            lookup(&index, "uarterl", &[Field::Body]),
            Some((true, true))
        );
        assert_eq!(lookup(&index, "ell", &[Field::Body]), Some((true, true)));
        assert_eq!(
            lookup(&index, "ell", &[Field::Subject, Field::From]),
            Some((false, true))
        );
        assert_eq!(
            lookup(&index, "worlds", &[Field::Body]),
            Some((false, true))
        );
        // Separators: every part must be there, and the text decides.
        assert_eq!(lookup(&index, "lo wo", &[Field::Body]), Some((true, false)));
        assert_eq!(
            lookup(&index, "kim@ex", &[Field::From]),
            Some((true, false))
        );
        assert_eq!(lookup(&index, "mailer", Field::all()), Some((true, true)));
        assert_eq!(
            lookup(&index, "foo", &[Field::OtherHeader]),
            Some((true, true))
        );
        assert_eq!(lookup(&index, "xyz", Field::all()), Some((false, true)));
        // Nothing to look up: one character, or separators only.
        assert_eq!(lookup(&index, "h", &[Field::Body]), None);
        assert_eq!(lookup(&index, " @ ", &[Field::Body]), None);
    }

    #[test]
    fn long_words_are_cut_and_long_needles_checked() {
        let word = "a".repeat(10) + &"b".repeat(30);
        let text = SearchText {
            header: String::new(),
            body: word.clone(),
        };
        let index: BTreeSet<String> = index_tokens(&text, MAX_TOKENS)
            .unwrap()
            .into_iter()
            .collect();
        assert!(index.iter().all(|t| t.len() <= 1 + 2 * MAX_SUFFIX));
        // Every substring up to MAX_SUFFIX characters is found exactly...
        assert_eq!(
            lookup(&index, &word[5..29], &[Field::Body]),
            Some((true, true))
        );
        assert_eq!(
            lookup(&index, &word[20..40], &[Field::Body]),
            Some((true, true))
        );
        // ...and a longer one is a candidate.
        assert_eq!(
            lookup(&index, &word[2..40], &[Field::Body]),
            Some((true, false))
        );
    }

    #[test]
    fn query_syntax() {
        let q = TextQuery::new("ab-c d", &[Field::Body, Field::Subject]).unwrap();
        assert!(!q.is_exact());
        assert_eq!(q.fts5(), "(b6162* OR s6162*)");
        let q = TextQuery::new("no such phrase", &[Field::Body]).unwrap();
        assert_eq!(q.fts5(), "(b706872617365*) AND (b73756368*)");
        let q = TextQuery::new("abc", &[Field::From]).unwrap();
        assert!(q.is_exact());
        assert_eq!(q.tsquery(), "(f616263:*)");
    }
}
