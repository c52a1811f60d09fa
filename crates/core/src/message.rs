//! Parses a message once, at delivery, into the metadata the store keeps: the header fields
//! clients list and the MIME tree with byte offsets (RFC 5322, RFC 2045–2049). Readers later
//! slice the stored bytes with these offsets instead of parsing again.

use mail_parser::{Address, HeaderValue, MessageParser, PartType};
use trimaran_store::{HeaderAddress, MessageMeta, SearchText, MESSAGE_META_VERSION};

use crate::mime::{self, MAX_DEPTH};

/// Parses `raw`. Never fails: mail that does not parse is still mail, and is stored with as much
/// structure as could be found (`well_formed = false`).
///
/// The MIME structure comes from our own parser ([`mime`]), which keeps offsets and field
/// values exactly as the message has them; mail-parser decodes the top-level header fields
/// (encoded-words, dates, addresses) that SORT and SEARCH compare.
pub fn parse(raw: &[u8]) -> MessageMeta {
    let structure = mime::parse(raw);
    let mut meta = MessageMeta {
        version: MESSAGE_META_VERSION,
        size: raw.len() as u64,
        well_formed: structure.well_formed,
        header_size: structure.parts.first().map_or(0, |p| p.offset_body),
        parts: structure.parts,
        ..MessageMeta::default()
    };
    let header = &raw[..meta.header_size as usize];
    let Some(message) = MessageParser::default().parse_headers(header) else {
        meta.well_formed = false;
        return meta;
    };
    meta.subject = message.subject().map(str::to_string);
    meta.date = message.date().map(|d| d.to_timestamp());
    meta.raw_date = message.header_raw("Date").map(|d| d.trim().to_string());
    meta.from = addresses(message.from());
    meta.sender = addresses(message.sender());
    meta.reply_to = addresses(message.reply_to());
    meta.to = addresses(message.to());
    meta.cc = addresses(message.cc());
    meta.bcc = addresses(message.bcc());
    meta.message_id = message.message_id().map(str::to_string);
    meta.in_reply_to = text_list(message.in_reply_to()).into_iter().next();
    meta.references = text_list(message.references());
    meta
}

/// `raw` as it should be stored: lines ending in CRLF (RFC 5322 §2.3), see
/// [`mime::normalize_line_endings`].
pub fn normalize(raw: Vec<u8>) -> Vec<u8> {
    mime::normalize_line_endings(raw)
}

/// The header section of stored (CRLF) bytes with the blank line that ends it; all of them
/// when there is no body.
pub fn header_section(raw: &[u8]) -> &[u8] {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &raw[..i + 4],
        None => raw,
    }
}

/// Longest decoded body text kept for SEARCH, in bytes; the rest of a huge text is not
/// searchable, which bounds the index a single message can take.
const MAX_SEARCH_TEXT: usize = 1024 * 1024;

/// The decoded, lower-cased text SEARCH looks at (RFC 9051 §6.4.4): header fields with
/// encoded-words decoded (RFC 2047), and text parts decoded from their transfer encoding and
/// charset (EUC-KR, ISO-2022-JP, ISO-8859-x, Windows-125x... through mail-parser), including
/// those of attached messages.
pub fn search_text(raw: &[u8]) -> SearchText {
    let mut text = SearchText::default();
    let Some(message) = MessageParser::default().parse(raw) else {
        text.body = String::from_utf8_lossy(raw).to_lowercase();
        text.body
            .truncate(floor_char_boundary(&text.body, MAX_SEARCH_TEXT));
        return text;
    };
    if let Some(root) = message.parts.first() {
        for h in root.headers.iter() {
            text.header.push_str(&h.name.as_str().to_lowercase());
            text.header.push_str(": ");
            text.header.push_str(&header_text(&h.value).to_lowercase());
            text.header.push('\n');
        }
    }
    body_text(&message, &mut text.body, 0);
    text
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

fn body_text(message: &mail_parser::Message<'_>, out: &mut String, depth: usize) {
    for part in &message.parts {
        if out.len() >= MAX_SEARCH_TEXT {
            return;
        }
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => {
                let lower = t.to_lowercase();
                let room = MAX_SEARCH_TEXT - out.len();
                out.push_str(&lower[..floor_char_boundary(&lower, room)]);
                out.push('\n');
            }
            PartType::Message(nested) if depth < MAX_DEPTH => body_text(nested, out, depth + 1),
            _ => {}
        }
    }
}

/// A header value as text: decoded words, addresses as "name <address>".
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
        HeaderValue::ContentType(c) => {
            format!("{}/{}", c.ctype(), c.subtype().unwrap_or_default())
        }
        HeaderValue::Received(_) | HeaderValue::Empty => String::new(),
    }
}

fn addresses(addr: Option<&Address<'_>>) -> Vec<HeaderAddress> {
    let Some(addr) = addr else { return Vec::new() };
    addr.iter()
        .map(|a| HeaderAddress {
            name: a.name().map(str::to_string),
            address: a.address().map(str::to_string),
        })
        .collect()
}

fn text_list(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::MAX_PARTS;
    use trimaran_store::PartMeta;

    const NESTED: &[u8] = b"From: Alice <alice@example.test>\r\n\
To: bob@example.test, Carol <carol@example.test>\r\n\
Subject: =?UTF-8?B?7JWI64WV?= nested\r\n\
Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <m1@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
preamble\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
first part\r\n\
line two\r\n\
--b1\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Subject: inner\r\n\
Content-Type: multipart/alternative; boundary=\"b2\"\r\n\
\r\n\
--b2\r\n\
Content-Type: text/plain\r\n\
\r\n\
inner text\r\n\
--b2\r\n\
Content-Type: text/html\r\n\
\r\n\
<p>inner html</p>\r\n\
--b2--\r\n\
\r\n\
--b1--\r\n";

    fn body<'a>(raw: &'a [u8], p: &PartMeta) -> &'a [u8] {
        &raw[p.offset_body as usize..p.offset_end as usize]
    }

    #[test]
    fn header_fields() {
        let m = parse(NESTED);
        assert_eq!(m.subject.as_deref(), Some("안녕 nested"));
        assert_eq!(m.from[0].address.as_deref(), Some("alice@example.test"));
        assert_eq!(m.from[0].name.as_deref(), Some("Alice"));
        assert_eq!(m.to.len(), 2);
        assert_eq!(m.message_id.as_deref(), Some("m1@example.test"));
        assert_eq!(m.date, Some(1795514400));
        assert!(m.well_formed);
    }

    #[test]
    fn nested_offsets_point_at_the_right_bytes() {
        let m = parse(NESTED);
        let root = &m.parts[0];
        assert_eq!(
            (root.content_type.as_str(), root.content_subtype.as_str()),
            ("multipart", "mixed")
        );
        assert_eq!(root.children.len(), 2);
        let text = &m.parts[root.children[0]];
        assert!(body(NESTED, text).starts_with(b"first part\r\nline two"));
        let rfc822 = &m.parts[root.children[1]];
        assert_eq!(rfc822.content_subtype, "rfc822");
        assert!(body(NESTED, rfc822).starts_with(b"Subject: inner\r\n"));
        let inner_root = &m.parts[rfc822.children[0]];
        assert_eq!(inner_root.content_subtype, "alternative");
        let html = &m.parts[inner_root.children[1]];
        assert_eq!(html.content_subtype, "html");
        assert!(body(NESTED, html).starts_with(b"<p>inner html</p>"));
    }

    #[test]
    fn garbage_is_still_described() {
        for raw in [
            &b""[..],
            b"\xff\xfe\x00garbage",
            b"Subject: x\r\n\r\n",
            b"no header at all",
        ] {
            let m = parse(raw);
            assert_eq!(m.size, raw.len() as u64);
            assert!(!m.parts.is_empty() || raw.is_empty());
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut raw = Vec::new();
        for i in 0..200 {
            raw.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nleaf\r\n");
        let m = parse(&raw);
        assert!(m.parts.len() <= MAX_PARTS);
    }
}
