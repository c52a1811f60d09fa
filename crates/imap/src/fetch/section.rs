//! BODY[section] and BINARY[section] (RFC 9051 §6.4.5, RFC 3516): part numbers resolved on the
//! stored part tree, bytes sliced from the stored message by offset.

use trimaran_core::store::{MessageMeta, PartMeta};

use super::envelope;
use crate::parser::{Section, SectionText};

#[derive(Debug, PartialEq, Eq)]
pub enum SectionError {
    /// No such part: answered with empty content, as RFC 9051 §6.4.5 permits.
    NoSuchPart,
    /// BINARY of a part whose Content-Transfer-Encoding we cannot decode (RFC 3516 UNKNOWN-CTE).
    UnknownEncoding,
}

fn is(value: &str, name: &str) -> bool {
    value.eq_ignore_ascii_case(name)
}

fn is_multipart(p: &PartMeta) -> bool {
    is(&p.content_type, "multipart") && !p.children.is_empty()
}

/// An encapsulated message with its parts. Only message/rfc822 and message/global are
/// (RFC 9051 §6.4.5); every other message/* type, such as message/delivery-status
/// (RFC 3464), is a leaf whose body is data.
fn is_message(p: &PartMeta) -> bool {
    is(&p.content_type, "message") && !p.children.is_empty()
}

/// A message/rfc822 whose parts could not be read (base64 or quoted-printable, which
/// RFC 2046 §5.2.1 forbids): it has no parts to number.
fn is_unreadable_message(p: &PartMeta) -> bool {
    is(&p.content_type, "message") && is(&p.content_subtype, "rfc822") && p.children.is_empty()
}

/// The part numbered `n` below `index` (RFC 9051 §6.4.5 part specifiers). `message_node`:
/// `index` is the top of a message, whose part 1 is its body when it is not multipart.
/// `was_self`: `index` was reached by such a self-reference, which cannot repeat.
fn subpart(
    meta: &MessageMeta,
    index: usize,
    n: u32,
    message_node: bool,
    was_self: bool,
) -> Option<(usize, bool)> {
    let p = &meta.parts[index];
    if is_multipart(p) {
        return p.children.get(n as usize - 1).map(|&c| (c, false));
    }
    if is_message(p) && !message_node {
        return subpart(meta, p.children[0], n, true, false);
    }
    if is_unreadable_message(p) && !message_node {
        return None;
    }
    // A message's only part, or a leaf's part 1, is the same body; once (as Dovecot answers).
    (n == 1 && !was_self).then_some((index, true))
}

/// The part a part path names; None for the path of the whole message.
pub fn resolve(meta: &MessageMeta, path: &[u32]) -> Result<Option<usize>, SectionError> {
    if meta.parts.is_empty() {
        return if path.is_empty() || path == [1] {
            Ok(None)
        } else {
            Err(SectionError::NoSuchPart)
        };
    }
    let (mut node, mut message_node, mut was_self) = (0, true, false);
    for &n in path {
        (node, was_self) =
            subpart(meta, node, n, message_node, was_self).ok_or(SectionError::NoSuchPart)?;
        message_node = false;
    }
    Ok((!path.is_empty()).then_some(node))
}

/// The bytes of a section.
pub fn body_section(
    meta: &MessageMeta,
    raw: &[u8],
    section: &Section,
) -> Result<Vec<u8>, SectionError> {
    let slice = |a: u64, b: u64| -> Vec<u8> {
        raw.get(a as usize..(b as usize).min(raw.len()))
            .unwrap_or_default()
            .to_vec()
    };
    let node = resolve(meta, &section.part)?;
    // The header and text of the message the section is about: the whole message, or the
    // message encapsulated in a message/rfc822 part.
    let message_bounds = |node: Option<usize>| -> Option<(u64, u64, u64)> {
        match node {
            None => {
                let body = meta
                    .parts
                    .first()
                    .map_or(meta.header_size, |p| p.offset_body);
                Some((0, body, raw.len() as u64))
            }
            Some(i) => {
                let p = &meta.parts[i];
                if !is_message(p) {
                    return None;
                }
                let inner = &meta.parts[p.children[0]];
                Some((inner.offset_header, inner.offset_body, p.offset_end))
            }
        }
    };
    match (&section.text, node) {
        (None, None) => Ok(raw.to_vec()),
        (None, Some(i)) => {
            let p = &meta.parts[i];
            Ok(slice(p.offset_body, p.offset_end))
        }
        (Some(SectionText::Mime), Some(i)) => {
            let p = &meta.parts[i];
            Ok(slice(p.offset_header, p.offset_body))
        }
        (Some(SectionText::Mime), None) => Err(SectionError::NoSuchPart),
        (Some(text), node) => {
            let (h, b, e) = message_bounds(node).ok_or(SectionError::NoSuchPart)?;
            let header = slice(h, b);
            Ok(match text {
                SectionText::Header => header,
                SectionText::Text => slice(b, e),
                SectionText::HeaderFields(names) => header_fields(&header, names, true),
                SectionText::HeaderFieldsNot(names) => header_fields(&header, names, false),
                SectionText::Mime => unreachable!("handled above"),
            })
        }
    }
}

/// The header lines whose names are (or are not) in `names`, folding kept, with the blank
/// line that ends a header (RFC 9051 §6.4.5) when the header has one: a message that is only
/// a header, without the blank line, has none to include.
pub fn header_fields(header: &[u8], names: &[String], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut taking = false;
    let mut blank = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            blank = true;
            break;
        }
        if !matches!(line.first(), Some(b' ') | Some(b'\t')) {
            let name = line
                .iter()
                .position(|&b| b == b':')
                .map(|c| &line[..c])
                .unwrap_or(b"");
            let listed = names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()));
            taking = listed == keep && !name.is_empty();
        }
        if taking {
            out.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    if blank {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// BINARY[part]: the part's content with its transfer encoding removed (RFC 3516 §4.2).
pub fn binary_section(
    meta: &MessageMeta,
    raw: &[u8],
    path: &[u32],
) -> Result<Vec<u8>, SectionError> {
    let Some(i) = resolve(meta, path)? else {
        return Ok(raw.to_vec());
    };
    let p = &meta.parts[i];
    let body = raw
        .get(p.offset_body as usize..(p.offset_end as usize).min(raw.len()))
        .unwrap_or_default();
    if is_multipart(p) {
        // A multipart has no transfer encoding of its own: its body as it is.
        return Ok(body.to_vec());
    }
    // Encoding names are not case sensitive (RFC 2045 §6.1); they are stored as written.
    let encoding = p.encoding.as_deref().unwrap_or("7bit").to_ascii_lowercase();
    match encoding.as_str() {
        "7bit" | "8bit" | "binary" => Ok(body.to_vec()),
        "base64" => Ok(decode_base64(body)),
        "quoted-printable" => Ok(decode_qp(body)),
        _ => Err(SectionError::UnknownEncoding),
    }
}

fn decode_base64(body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    // A dangling single character cannot encode anything; drop it rather than fail.
    let usable = clean.len() - clean.len() % 4
        + if clean.len() % 4 >= 2 {
            clean.len() % 4
        } else {
            0
        };
    engine.decode(&clean[..usable]).unwrap_or_default()
}

/// RFC 2045 §6.7 quoted-printable, leniently: a malformed escape is kept as it is.
fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            if body[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if body[i + 1..].starts_with(b"\n") {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                body.get(i + 1).and_then(|&c| hex(c)),
                body.get(i + 2).and_then(|&c| hex(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The header block of the whole message, for ENVELOPE.
pub fn message_header<'a>(meta: &MessageMeta, raw: &'a [u8]) -> &'a [u8] {
    raw.get(..meta.header_end() as usize).unwrap_or(raw)
}

/// For tests and SEARCH: header fields of the whole message.
pub fn top_fields<'a>(meta: &MessageMeta, raw: &'a [u8]) -> Vec<(&'a [u8], Vec<u8>)> {
    envelope::fields(message_header(meta, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qp_and_base64() {
        assert_eq!(decode_qp(b"caf=C3=A9 =\r\nx=ZZ"), "café x=ZZ".as_bytes());
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\r\n"), b"hello");
    }

    #[test]
    fn fields_subset() {
        let h = b"From: a\r\nTo: b,\r\n c\r\nSubject: s\r\n\r\n";
        assert_eq!(
            header_fields(h, &["to".into()], true),
            b"To: b,\r\n c\r\n\r\n"
        );
        assert_eq!(
            header_fields(h, &["TO".into(), "from".into()], false),
            b"Subject: s\r\n\r\n"
        );
    }
}
