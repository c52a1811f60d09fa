//! SEARCH keys (RFC 9051 §6.4.4), MODSEQ (RFC 7162 §3.1.5), EMAILID/THREADID (RFC 8474),
//! and ESEARCH return options (RFC 4731, RFC 5182 SAVE).

use super::lexer::{Lexer, Result};
use super::sequence::SeqSet;
use super::{date, ParseError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchKey {
    All,
    And(Vec<SearchKey>),
    Or(Box<SearchKey>, Box<SearchKey>),
    Not(Box<SearchKey>),
    /// Messages by sequence number.
    Seq(SeqSet),
    Uid(SeqSet),
    /// A system flag bit that must be set (or clear, for the UN- keys).
    Flag {
        bit: i64,
        set: bool,
    },
    Keyword {
        name: String,
        set: bool,
    },
    /// \Recent is always empty here: RFC 9051 dropped it and no session claims messages.
    Recent,
    New,
    Old,
    Larger(u64),
    Smaller(u64),
    /// INTERNALDATE comparisons, on dates in UTC seconds: [start of day, end of day).
    Before(i64),
    On(i64),
    Since(i64),
    SentBefore(i64),
    SentOn(i64),
    SentSince(i64),
    /// A header field containing a string (empty string: the field exists).
    Header(String, String),
    Body(String),
    Text(String),
    ModSeq(u64),
    EmailId(String),
    ThreadId(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchReturn {
    Min,
    Max,
    All,
    Count,
    Save,
}

fn bad(msg: &str) -> ParseError {
    ParseError::Syntax(msg.to_string())
}

/// Deepest nesting of parentheses, NOT and OR accepted.
const MAX_DEPTH: usize = 32;
/// Most keys in one search.
const MAX_KEYS: usize = 1000;

pub struct SearchParser {
    keys: usize,
    /// Strings are decoded with this charset (RFC 9051 §6.4.4: US-ASCII and UTF-8 required).
    pub utf8: bool,
}

impl SearchParser {
    pub fn new() -> SearchParser {
        SearchParser {
            keys: 0,
            utf8: true,
        }
    }

    /// One or more keys separated by SP, to the end of the command or a closing parenthesis.
    pub fn keys(&mut self, lx: &mut Lexer<'_>, depth: usize) -> Result<SearchKey> {
        let mut keys = vec![self.key(lx, depth)?];
        while lx.peek() == Some(b' ') {
            lx.sp()?;
            keys.push(self.key(lx, depth)?);
        }
        Ok(if keys.len() == 1 {
            keys.pop().expect("one key")
        } else {
            SearchKey::And(keys)
        })
    }

    fn string(&self, lx: &mut Lexer<'_>) -> Result<String> {
        let raw = lx.astring()?;
        String::from_utf8(raw).map_err(|_| ParseError::BadCharset)
    }

    fn key(&mut self, lx: &mut Lexer<'_>, depth: usize) -> Result<SearchKey> {
        use SearchKey::*;
        self.keys += 1;
        if depth > MAX_DEPTH || self.keys > MAX_KEYS {
            return Err(bad("search too complex"));
        }
        if lx.eat(b'(') {
            let inner = self.keys(lx, depth + 1)?;
            lx.expect(b')')?;
            return Ok(inner);
        }
        if lx
            .peek()
            .is_some_and(|b| b.is_ascii_digit() || b == b'*' || b == b'$')
        {
            return Ok(Seq(SeqSet::parse(lx)?));
        }
        let word = lx.atom()?.to_ascii_uppercase();
        let flag = |bit, set| Ok(Flag { bit, set });
        use trimaran_core::store::flags as f;
        match word.as_str() {
            "ALL" => Ok(All),
            "ANSWERED" => flag(f::ANSWERED, true),
            "DELETED" => flag(f::DELETED, true),
            "DRAFT" => flag(f::DRAFT, true),
            "FLAGGED" => flag(f::FLAGGED, true),
            "SEEN" => flag(f::SEEN, true),
            "UNANSWERED" => flag(f::ANSWERED, false),
            "UNDELETED" => flag(f::DELETED, false),
            "UNDRAFT" => flag(f::DRAFT, false),
            "UNFLAGGED" => flag(f::FLAGGED, false),
            "UNSEEN" => flag(f::SEEN, false),
            "RECENT" => Ok(Recent),
            "NEW" => Ok(New),
            "OLD" => Ok(Old),
            "KEYWORD" | "UNKEYWORD" => {
                lx.sp()?;
                Ok(Keyword {
                    name: lx.atom()?,
                    set: word == "KEYWORD",
                })
            }
            "LARGER" | "SMALLER" => {
                lx.sp()?;
                let n = lx.number()?;
                Ok(if word == "LARGER" {
                    Larger(n)
                } else {
                    Smaller(n)
                })
            }
            "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" => {
                lx.sp()?;
                let d = search_date(lx)?;
                Ok(match word.as_str() {
                    "BEFORE" => Before(d),
                    "ON" => On(d),
                    "SINCE" => Since(d),
                    "SENTBEFORE" => SentBefore(d),
                    "SENTON" => SentOn(d),
                    _ => SentSince(d),
                })
            }
            "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => {
                lx.sp()?;
                let name = match word.as_str() {
                    "SUBJECT" => "Subject",
                    "FROM" => "From",
                    "TO" => "To",
                    "CC" => "Cc",
                    _ => "Bcc",
                };
                Ok(Header(name.into(), self.string(lx)?))
            }
            "HEADER" => {
                lx.sp()?;
                let name = self.string(lx)?;
                lx.sp()?;
                Ok(Header(name, self.string(lx)?))
            }
            "BODY" => {
                lx.sp()?;
                Ok(Body(self.string(lx)?))
            }
            "TEXT" => {
                lx.sp()?;
                Ok(Text(self.string(lx)?))
            }
            "UID" => {
                lx.sp()?;
                Ok(Uid(SeqSet::parse(lx)?))
            }
            "NOT" => {
                lx.sp()?;
                Ok(Not(Box::new(self.key(lx, depth + 1)?)))
            }
            "OR" => {
                lx.sp()?;
                let a = self.key(lx, depth + 1)?;
                lx.sp()?;
                let b = self.key(lx, depth + 1)?;
                Ok(Or(Box::new(a), Box::new(b)))
            }
            "MODSEQ" => {
                lx.sp()?;
                // Optional entry name and type (RFC 7162 §3.1.5); we keep one MODSEQ per
                // message, so they do not change the answer.
                if lx.peek() == Some(b'"') {
                    lx.quoted()?;
                    lx.sp()?;
                    lx.atom()?;
                    lx.sp()?;
                }
                Ok(ModSeq(lx.number()?))
            }
            "EMAILID" => {
                lx.sp()?;
                Ok(EmailId(lx.atom()?))
            }
            "THREADID" => {
                lx.sp()?;
                Ok(ThreadId(lx.atom()?))
            }
            other => Err(ParseError::Syntax(format!("unknown search key {other}"))),
        }
    }
}

impl Default for SearchParser {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 9051 §9 `date`: date-text or DQUOTE date-text DQUOTE; returned as the UTC midnight.
fn search_date(lx: &mut Lexer<'_>) -> Result<i64> {
    let raw = if lx.peek() == Some(b'"') {
        lx.quoted()?
    } else {
        lx.atom()?.into_bytes()
    };
    let text = std::str::from_utf8(&raw).map_err(|_| bad("bad date"))?;
    date::parse_date(text).ok_or_else(|| bad("bad date, expected d-Mon-yyyy"))
}

/// `RETURN (...)` of ESEARCH (RFC 4731 §3.1).
pub fn return_options(lx: &mut Lexer<'_>) -> Result<Vec<SearchReturn>> {
    lx.list(|lx| {
        let w = lx.atom()?.to_ascii_uppercase();
        Ok(match w.as_str() {
            "MIN" => SearchReturn::Min,
            "MAX" => SearchReturn::Max,
            "ALL" => SearchReturn::All,
            "COUNT" => SearchReturn::Count,
            "SAVE" => SearchReturn::Save,
            _ => return Err(ParseError::Syntax(format!("unknown RETURN option {w}"))),
        })
    })
}
