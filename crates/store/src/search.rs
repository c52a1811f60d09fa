//! The text index behind IMAP SEARCH: each message's decoded, lower-cased text, and the
//! character n-grams that find candidates for a substring without reading any body.
//!
//! Substring search (RFC 9051 §6.4.4) cannot use word indexes: "ell" must find "hello", and a
//! two-syllable Korean query must find the word inside longer words. So the index holds every
//! distinct bigram and trigram of the text, as hex tokens (plain ASCII, so that neither SQLite's
//! FTS5 tokenizer nor PostgreSQL's locale changes them). A query's grams select candidates;
//! candidates are then checked against the stored text, so answers are exact.

use std::collections::BTreeSet;

/// Decoded, lower-cased text of one message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchText {
    /// One "name: value" line per top-level header field, names and values lower-cased.
    pub header: String,
    /// The text of every text part, decoded from its transfer encoding and charset.
    pub body: String,
}

/// A message's search text with its grams, computed before the write transaction so that
/// the single SQLite writer does not spend its time on them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexedText {
    pub text: SearchText,
    pub grams: Vec<String>,
}

impl IndexedText {
    pub fn new(text: SearchText) -> IndexedText {
        let grams = index_grams(&text);
        IndexedText { text, grams }
    }
}

/// Most grams indexed for one message; a longer text is marked [`EVERYTHING`] instead, so it
/// is always a candidate and checked against its stored text.
pub const MAX_GRAMS: usize = 50_000;

/// The token of a message whose grams were not all indexed.
pub const EVERYTHING: &str = "zzall";

fn token(kind: char, chars: &[char]) -> String {
    let mut s = String::with_capacity(1 + chars.len() * 8);
    s.push(kind);
    let mut buf = [0u8; 4];
    for c in chars {
        for b in c.encode_utf8(&mut buf).bytes() {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}

/// Every distinct bigram and trigram of the text, as index tokens.
pub fn index_grams(text: &SearchText) -> Vec<String> {
    let mut grams = BTreeSet::new();
    for part in [&text.header, &text.body] {
        let chars: Vec<char> = part.chars().collect();
        for w in chars.windows(2) {
            grams.insert(token('b', w));
        }
        for w in chars.windows(3) {
            grams.insert(token('t', w));
        }
        if grams.len() > MAX_GRAMS {
            return vec![EVERYTHING.to_string()];
        }
    }
    grams.into_iter().collect()
}

/// The grams every text containing `needle` (already lower-cased) must have; empty when the
/// needle is too short to narrow anything down.
pub fn query_grams(needle: &str) -> Vec<String> {
    let chars: Vec<char> = needle.chars().collect();
    let grams: BTreeSet<String> = if chars.len() >= 3 {
        chars.windows(3).map(|w| token('t', w)).collect()
    } else if chars.len() == 2 {
        [token('b', &chars)].into()
    } else {
        BTreeSet::new()
    };
    grams.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_cover_substrings() {
        let text = SearchText {
            header: "subject: 한글로된 제목".into(),
            body: "hello world".into(),
        };
        let index: BTreeSet<String> = index_grams(&text).into_iter().collect();
        for needle in ["글로", "ell", "lo wo", "subject: 한"] {
            assert!(
                query_grams(needle).iter().all(|g| index.contains(g)),
                "{needle}"
            );
        }
        assert!(!query_grams("xyz").iter().all(|g| index.contains(g)));
        assert!(query_grams("h").is_empty());
    }
}
