//! 8-bit to 7-bit conversion for peers without 8BITMIME (RFC 6152 §3, RFC 2045 §6): every
//! leaf part with 8-bit octets gets its body base64-encoded and its Content-Transfer-Encoding
//! changed; everything else stays byte for byte. Parts we cannot rewrite safely (8-bit octets
//! in a header, or inside an attached message) make the conversion fail instead. It runs
//! before DKIM signing, so the signature covers the bytes that are sent.

use base64::Engine;
use mail_parser::{MessageParser, PartType};

pub fn to_seven_bit(message: &[u8]) -> Option<Vec<u8>> {
    let parsed = MessageParser::new().parse(message)?;
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for (index, part) in parsed.parts.iter().enumerate() {
        let header = message.get(part.offset_header as usize..part.offset_body as usize)?;
        let body = message.get(part.offset_body as usize..part.offset_end as usize)?;
        if !header.is_ascii() {
            return None;
        }
        if body.is_ascii() {
            continue;
        }
        match &part.body {
            PartType::Multipart(_) => continue,
            PartType::Message(_) => return None,
            _ => {}
        }
        // Inside a multipart, the line break before the next boundary belongs to the boundary
        // (RFC 2046 §5.1.1), not to the part's content; in a single-part message it is content.
        let (content, tail) = match body.strip_suffix(b"\r\n").filter(|_| index > 0) {
            Some(c) => (c, &b"\r\n"[..]),
            None => (body, &b""[..]),
        };
        let mut encoded = Vec::with_capacity(content.len() * 4 / 3 + content.len() / 38 + 4);
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        for chunk in b64.as_bytes().chunks(76) {
            encoded.extend_from_slice(chunk);
            encoded.extend_from_slice(b"\r\n");
        }
        if tail.is_empty() && encoded.ends_with(b"\r\n") {
            encoded.truncate(encoded.len() - 2);
        }
        encoded.extend_from_slice(tail);
        // The Content-Transfer-Encoding field, replaced; or one added before the blank line.
        let cte = part.headers.iter().find(|h| {
            h.name
                .as_str()
                .eq_ignore_ascii_case("Content-Transfer-Encoding")
        });
        match cte {
            Some(h) => edits.push((
                h.offset_field as usize,
                h.offset_end as usize,
                b"Content-Transfer-Encoding: base64\r\n".to_vec(),
            )),
            None => {
                let at = header_blank_line(
                    message,
                    part.offset_header as usize,
                    part.offset_body as usize,
                )?;
                edits.push((at, at, b"Content-Transfer-Encoding: base64\r\n".to_vec()));
            }
        }
        edits.push((part.offset_body as usize, part.offset_end as usize, encoded));
    }
    edits.sort_by_key(|e| (e.0, e.1));
    let mut out = Vec::with_capacity(message.len() * 4 / 3);
    let mut at = 0;
    for (start, end, with) in edits {
        if start < at || end < start || end > message.len() {
            return None;
        }
        out.extend_from_slice(&message[at..start]);
        out.extend_from_slice(&with);
        at = end;
    }
    out.extend_from_slice(&message[at..]);
    out.is_ascii().then_some(out)
}

/// Where the blank line ending a part's header starts (so a field can go before it).
fn header_blank_line(message: &[u8], start: usize, body: usize) -> Option<usize> {
    let header = message.get(start..body)?;
    if header.ends_with(b"\r\n\r\n") {
        Some(body - 2)
    } else if header == b"\r\n" || header.is_empty() {
        Some(start)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(message: &[u8]) -> Vec<String> {
        let m = MessageParser::new().parse(message).unwrap();
        (0..m.text_body_count())
            .map(|i| m.body_text(i).unwrap().into_owned())
            .collect()
    }

    #[test]
    fn a_single_part_becomes_base64_with_the_same_text() {
        let m = "From: a@b\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\nzweite Zeile\r\n";
        let out = to_seven_bit(m.as_bytes()).unwrap();
        assert!(out.is_ascii());
        assert_eq!(texts(&out), texts(m.as_bytes()));
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Content-Transfer-Encoding: base64\r\n"));
        assert!(s.starts_with("From: a@b\r\nSubject: x\r\n"));
    }

    #[test]
    fn only_the_eight_bit_parts_of_a_multipart_change() {
        let m = "From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve café\r\n--XX--\r\n";
        let out = to_seven_bit(m.as_bytes()).unwrap();
        assert!(out.is_ascii());
        assert_eq!(texts(&out), texts(m.as_bytes()));
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("--XX\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--XX"));
        assert_eq!(s.matches("Content-Transfer-Encoding: base64").count(), 1);
    }

    #[test]
    fn eight_bit_headers_are_not_converted() {
        let m = "From: a@b\r\nSubject: Grüße\r\n\r\nGrüße\r\n";
        assert!(to_seven_bit(m.as_bytes()).is_none());
    }

    #[test]
    fn every_truncation_of_a_nested_message_converts_or_refuses_without_panic() {
        let m = "From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nñandú\r\n--i\r\nContent-Type: text/html\r\n\r\n<p>ü</p>\r\n--i--\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nöl\r\n--o--\r\n";
        let bytes = m.as_bytes();
        for end in 0..=bytes.len() {
            if let Some(out) = to_seven_bit(&bytes[..end]) {
                assert!(out.is_ascii(), "at {end}");
            }
        }
    }
}
