//! FETCH data items (RFC 9051 §6.4.5), BINARY (RFC 3516), MODSEQ (RFC 7162), EMAILID and
//! THREADID (RFC 8474).

use super::lexer::{Lexer, Result};
use super::ParseError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

/// `[part.part...][.text]`; an empty `part` means the whole message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchAtt {
    Envelope,
    Flags,
    InternalDate,
    Rfc822,
    Rfc822Header,
    Rfc822Size,
    Rfc822Text,
    /// BODY without a section: BODYSTRUCTURE without extension data.
    Body,
    BodyStructure,
    Uid,
    BodySection {
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
    Binary {
        peek: bool,
        part: Vec<u32>,
        partial: Option<(u32, u32)>,
    },
    BinarySize(Vec<u32>),
    ModSeq,
    EmailId,
    ThreadId,
}

impl FetchAtt {
    /// Whether fetching this sets \Seen (RFC 9051 §6.4.5).
    pub fn sets_seen(&self) -> bool {
        matches!(
            self,
            FetchAtt::Rfc822
                | FetchAtt::Rfc822Text
                | FetchAtt::BodySection { peek: false, .. }
                | FetchAtt::Binary { peek: false, .. }
        )
    }
}

fn bad(msg: &str) -> ParseError {
    ParseError::Syntax(msg.to_string())
}

/// `ALL` / `FAST` / `FULL` / one item / a parenthesised list.
pub fn fetch_items(lx: &mut Lexer<'_>) -> Result<Vec<FetchAtt>> {
    use FetchAtt::*;
    if lx.peek() == Some(b'(') {
        return lx.list(fetch_att);
    }
    if lx.keyword("ALL") {
        return Ok(vec![Flags, InternalDate, Rfc822Size, Envelope]);
    }
    if lx.keyword("FAST") {
        return Ok(vec![Flags, InternalDate, Rfc822Size]);
    }
    if lx.keyword("FULL") {
        return Ok(vec![Flags, InternalDate, Rfc822Size, Envelope, Body]);
    }
    Ok(vec![fetch_att(lx)?])
}

fn fetch_att(lx: &mut Lexer<'_>) -> Result<FetchAtt> {
    let name = lx.word();
    Ok(match name.as_str() {
        "ENVELOPE" => FetchAtt::Envelope,
        "FLAGS" => FetchAtt::Flags,
        "INTERNALDATE" => FetchAtt::InternalDate,
        "RFC822" => FetchAtt::Rfc822,
        "RFC822.HEADER" => FetchAtt::Rfc822Header,
        "RFC822.SIZE" => FetchAtt::Rfc822Size,
        "RFC822.TEXT" => FetchAtt::Rfc822Text,
        "BODYSTRUCTURE" => FetchAtt::BodyStructure,
        "UID" => FetchAtt::Uid,
        "MODSEQ" => FetchAtt::ModSeq,
        "EMAILID" => FetchAtt::EmailId,
        "THREADID" => FetchAtt::ThreadId,
        "BODY" | "BODY.PEEK" => {
            if lx.peek() != Some(b'[') {
                if name == "BODY" {
                    return Ok(FetchAtt::Body);
                }
                return Err(bad("BODY.PEEK needs a section"));
            }
            let section = section(lx)?;
            FetchAtt::BodySection {
                peek: name == "BODY.PEEK",
                section,
                partial: partial(lx)?,
            }
        }
        "BINARY" | "BINARY.PEEK" => {
            let part = section_binary(lx)?;
            FetchAtt::Binary {
                peek: name == "BINARY.PEEK",
                part,
                partial: partial(lx)?,
            }
        }
        "BINARY.SIZE" => FetchAtt::BinarySize(section_binary(lx)?),
        "" => return Err(bad("expected a FETCH item")),
        other => return Err(ParseError::Syntax(format!("unknown FETCH item {other}"))),
    })
}

/// RFC 9051 §9 `section`.
pub fn section(lx: &mut Lexer<'_>) -> Result<Section> {
    lx.expect(b'[')?;
    let mut s = Section::default();
    if lx.eat(b']') {
        return Ok(s);
    }
    loop {
        if lx.peek().is_some_and(|b| b.is_ascii_digit()) {
            s.part.push(lx.nz_number()?);
            if lx.eat(b'.') {
                continue;
            }
            break;
        }
        let word = lx.word();
        s.text = Some(match word.as_str() {
            "HEADER" => SectionText::Header,
            "TEXT" => SectionText::Text,
            "MIME" if !s.part.is_empty() => SectionText::Mime,
            "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                lx.sp()?;
                let fields = lx.list(|lx| {
                    let f = lx.astring()?;
                    String::from_utf8(f).map_err(|_| bad("header field names are ASCII"))
                })?;
                if fields.is_empty() {
                    return Err(bad("empty header field list"));
                }
                if word == "HEADER.FIELDS" {
                    SectionText::HeaderFields(fields)
                } else {
                    SectionText::HeaderFieldsNot(fields)
                }
            }
            _ => return Err(bad("bad section")),
        });
        break;
    }
    lx.expect(b']')?;
    Ok(s)
}

/// RFC 3516 `section-binary`: `[` [part *("." part)] `]`.
fn section_binary(lx: &mut Lexer<'_>) -> Result<Vec<u32>> {
    lx.expect(b'[')?;
    let mut part = Vec::new();
    if !lx.eat(b']') {
        loop {
            part.push(lx.nz_number()?);
            if !lx.eat(b'.') {
                break;
            }
        }
        lx.expect(b']')?;
    }
    Ok(part)
}

/// `<offset.length>` (RFC 9051 §6.4.5 partial).
fn partial(lx: &mut Lexer<'_>) -> Result<Option<(u32, u32)>> {
    if !lx.eat(b'<') {
        return Ok(None);
    }
    let offset = u32::try_from(lx.number()?).map_err(|_| bad("offset too large"))?;
    lx.expect(b'.')?;
    let len = lx.nz_number()?;
    lx.expect(b'>')?;
    Ok(Some((offset, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items() {
        let mut lx = Lexer::new(
            b"(UID FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From \"To\")]<0.100> BODY[] BINARY[1] RFC822.SIZE)",
        );
        let items = fetch_items(&mut lx).unwrap();
        assert_eq!(items.len(), 6);
        assert_eq!(
            items[2],
            FetchAtt::BodySection {
                peek: true,
                section: Section {
                    part: vec![1, 2],
                    text: Some(SectionText::HeaderFields(vec!["From".into(), "To".into()]))
                },
                partial: Some((0, 100))
            }
        );
        assert!(fetch_items(&mut Lexer::new(b"BODY[MIME]")).is_err());
        assert!(fetch_items(&mut Lexer::new(b"(BOGUS)")).is_err());
    }
}
