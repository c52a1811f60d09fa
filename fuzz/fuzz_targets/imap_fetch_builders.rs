//! What FETCH builds from a stored message, on arbitrary message bytes: the part tree that
//! `trimaran_core::message::parse` records at delivery, BODY/BODYSTRUCTURE, ENVELOPE, and
//! BODY[section] / BINARY[section] for every part path the message has (and a few it has not).
//!
//! Checked, beyond "no panic": the part tree's offsets stay inside the message and nest, and it
//! is a tree; BODYSTRUCTURE and ENVELOPE are well-formed IMAP data of the shape RFC 9051 §9
//! gives (read back by an independent reader), with 8-bit text only in literals unless UTF8 is
//! enabled; BODY[] is the message; every other section is bytes of the message between offsets
//! the parser recorded (HEADER.FIELDS: lines of the header, in order); a path that names no part
//! is refused the same way by every builder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trimaran_core::store::MessageMeta;
use trimaran_fuzz::imap_wire;
use trimaran_imap::fetch::section::{self, SectionError};
use trimaran_imap::fetch::{self, envelope, structure};
use trimaran_imap::parser::{Section, SectionText};

fuzz_target!(|raw: &[u8]| {
    let meta = trimaran_core::message::parse(raw);
    check_tree(&meta, raw);
    let _ = structure::needs_raw(&meta);

    for rev2 in [false, true] {
        // What a FETCH in such a session describes: IMAP4rev1 sees message/global as a leaf.
        let session = fetch::for_session(&meta, raw, rev2);
        for extended in [false, true] {
            for utf8 in [false, true] {
                let mut out = Vec::new();
                let form = structure::Form {
                    extended,
                    utf8,
                    rev2,
                };
                structure::write(&mut out, &session, raw, form);
                let v = imap_wire::read(&out, utf8)
                    .unwrap_or_else(|e| panic!("BODYSTRUCTURE is not IMAP data: {e}"));
                imap_wire::check_body(&v, extended, rev2)
                    .unwrap_or_else(|e| panic!("BODYSTRUCTURE has a wrong shape: {e}"));
            }
        }
    }
    let header = section::message_header(&meta, raw);
    assert!(raw.starts_with(header), "message header is not the start");
    for utf8 in [false, true] {
        let mut out = Vec::new();
        envelope::write(&mut out, header, utf8);
        let v = imap_wire::read(&out, utf8)
            .unwrap_or_else(|e| panic!("ENVELOPE is not IMAP data: {e}"));
        imap_wire::check_envelope(&v).unwrap_or_else(|e| panic!("ENVELOPE has a wrong shape: {e}"));
    }

    assert_eq!(
        section::body_section(&meta, raw, &Section::default()).as_deref(),
        Ok(raw),
        "BODY[] is not the message"
    );
    assert_eq!(
        section::binary_section(&meta, raw, &[]).as_deref(),
        Ok(raw),
        "BINARY[] is not the message"
    );

    let offsets = offsets(&meta, raw);
    let mut names = vec!["From".to_string(), "subject".to_string()];
    if let Some(first) = section::top_fields(&meta, raw)
        .first()
        .and_then(|(n, _)| std::str::from_utf8(n).ok())
    {
        names.push(first.to_string());
    }
    let texts = [
        None,
        Some(SectionText::Header),
        Some(SectionText::Text),
        Some(SectionText::Mime),
        Some(SectionText::HeaderFields(names.clone())),
        Some(SectionText::HeaderFieldsNot(names)),
    ];
    for path in paths(&meta) {
        let resolved = section::resolve(&meta, &path);
        for text in &texts {
            let s = Section {
                part: path.clone(),
                text: text.clone(),
            };
            let got = section::body_section(&meta, raw, &s);
            if resolved.is_err() {
                assert_eq!(got, Err(SectionError::NoSuchPart), "{s:?}");
                continue;
            }
            let Ok(bytes) = got else {
                continue;
            };
            match text {
                None | Some(SectionText::Header | SectionText::Text | SectionText::Mime) => {
                    assert!(
                        between_offsets(raw, &offsets, &bytes),
                        "{s:?} is not bytes of the message between part offsets"
                    );
                }
                Some(SectionText::HeaderFields(_) | SectionText::HeaderFieldsNot(_)) => {
                    let mut whole = s.clone();
                    whole.text = Some(SectionText::Header);
                    let header = section::body_section(&meta, raw, &whole)
                        .expect("HEADER exists where HEADER.FIELDS does");
                    check_header_fields(&header, &bytes);
                }
            }
        }
        let binary = section::binary_section(&meta, raw, &path);
        match (&resolved, &binary) {
            (Err(_), _) => assert_eq!(binary, Err(SectionError::NoSuchPart), "{path:?}"),
            (Ok(None), _) => assert_eq!(binary.as_deref(), Ok(raw)),
            (Ok(Some(i)), Ok(bytes)) => {
                let p = &meta.parts[*i];
                let body_len = p.offset_end.saturating_sub(p.offset_body) as usize;
                // A multipart with parts has no transfer encoding of its own (RFC 2045 §6.4);
                // one without parts is opaque data, decoded like any leaf.
                let container =
                    p.content_type.eq_ignore_ascii_case("multipart") && !p.children.is_empty();
                // Encoding names are case-insensitive (RFC 2045 §6.1).
                match p
                    .encoding
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    Some("base64") if !container => assert!(
                        bytes.len() <= body_len / 4 * 3 + 3,
                        "base64 decoded to more than it encodes"
                    ),
                    Some("quoted-printable") if !container => assert!(
                        bytes.len() <= body_len,
                        "quoted-printable decoded to more than its input"
                    ),
                    _ => assert!(
                        between_offsets(raw, &offsets, bytes),
                        "BINARY{path:?} of an unencoded part is not its bytes"
                    ),
                }
            }
            (Ok(Some(_)), Err(e)) => assert_eq!(*e, SectionError::UnknownEncoding, "{path:?}"),
        }
    }
});

/// Offsets and links of the part tree.
fn check_tree(meta: &MessageMeta, raw: &[u8]) {
    let len = raw.len() as u64;
    assert_eq!(meta.size, len, "size");
    assert!(meta.header_size <= len, "header larger than the message");
    for (i, p) in meta.parts.iter().enumerate() {
        assert!(
            p.offset_header <= p.offset_body
                && p.offset_body <= p.offset_end
                && p.offset_end <= len,
            "part {i} offsets out of order or outside the message: {} {} {} of {len}",
            p.offset_header,
            p.offset_body,
            p.offset_end
        );
        for &c in &p.children {
            assert!(
                c > i && c < meta.parts.len(),
                "part {i} has child {c}: not a tree"
            );
            let child = &meta.parts[c];
            assert!(
                child.offset_header >= p.offset_body && child.offset_end <= p.offset_end,
                "part {c} is not inside the body of its parent {i}"
            );
        }
    }
}

/// Every offset the part tree records, sorted.
fn offsets(meta: &MessageMeta, raw: &[u8]) -> Vec<usize> {
    let mut o = vec![0, raw.len(), meta.header_size as usize];
    for p in &meta.parts {
        o.extend([p.offset_header, p.offset_body, p.offset_end].map(|x| x as usize));
    }
    o.sort_unstable();
    o.dedup();
    o
}

fn between_offsets(raw: &[u8], offsets: &[usize], bytes: &[u8]) -> bool {
    bytes.is_empty()
        || offsets.iter().any(|&a| {
            raw.get(a..a + bytes.len()) == Some(bytes)
                && offsets.binary_search(&(a + bytes.len())).is_ok()
        })
}

/// HEADER.FIELDS(.NOT): lines of `header`, in order, then the blank line if the header has one.
fn check_header_fields(header: &[u8], out: &[u8]) {
    let ended = header
        .split_inclusive(|&b| b == b'\n')
        .any(|l| l == b"\r\n" || l == b"\n");
    let body = if ended {
        out.strip_suffix(b"\r\n")
            .expect("HEADER.FIELDS does not end with the blank line")
    } else {
        out
    };
    let mut lines = header.split_inclusive(|&b| b == b'\n');
    for line in body.split_inclusive(|&b| b == b'\n') {
        let found = lines
            .any(|h| h == line || (!h.ends_with(b"\n") && line.strip_suffix(b"\r\n") == Some(h)));
        assert!(
            found,
            "HEADER.FIELDS line {line:?} is not a header line in order"
        );
    }
}

/// Part paths to ask for: each that resolves, up to three levels, and the first that does not
/// at each level.
fn paths(meta: &MessageMeta) -> Vec<Vec<u32>> {
    const MOST: usize = 48;
    let mut out = vec![vec![u32::MAX]];
    let mut frontier = vec![Vec::new()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for p in &frontier {
            for n in 1..=6u32 {
                let mut q = p.clone();
                q.push(n);
                let ok = section::resolve(meta, &q).is_ok();
                out.push(q.clone());
                if out.len() >= MOST {
                    return out;
                }
                if !ok {
                    break;
                }
                next.push(q);
            }
        }
        frontier = next;
    }
    out
}
