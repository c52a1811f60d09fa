//! Building FETCH answers from what was stored at delivery: the parsed part tree with byte
//! offsets (BODYSTRUCTURE, sections) and the verified body bytes.

pub mod envelope;
pub mod section;
pub mod structure;

use std::borrow::Cow;

use trimaran_core::store::{MessageMeta, MESSAGE_META_VERSION};

/// The part tree FETCH answers for one session are built from.
///
/// Metadata stored by an older parser is parsed again from `raw` (which
/// [`structure::needs_raw`] asks for): its offsets and field values may be wrong.
///
/// message/global (RFC 6532 §3.7) is an encapsulated message only for IMAP4rev2 sessions
/// (RFC 9051 §7.5.2 body-type-msg); RFC 3501's grammar has envelope, body and lines for
/// MESSAGE/RFC822 alone, so an IMAP4rev1 session sees message/global as a leaf.
pub fn for_session<'m>(meta: &'m MessageMeta, raw: &[u8], rev2: bool) -> Cow<'m, MessageMeta> {
    // Version 0 is no metadata at all (nothing asked for it), not an old parse.
    let stale = meta.version != 0 && meta.version < MESSAGE_META_VERSION && !raw.is_empty();
    let mut meta = if stale {
        Cow::Owned(trimaran_core::message::parse(raw))
    } else {
        Cow::Borrowed(meta)
    };
    if !rev2
        && meta
            .parts
            .iter()
            .any(|p| is_global(p) && !p.children.is_empty())
    {
        for p in meta.to_mut().parts.iter_mut().filter(|p| is_global(p)) {
            p.children.clear();
        }
    }
    meta
}

fn is_global(p: &trimaran_core::store::PartMeta) -> bool {
    p.content_type.eq_ignore_ascii_case("message")
        && p.content_subtype.eq_ignore_ascii_case("global")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{Section, SectionText};

    const GLOBAL: &[u8] = b"Subject: outer\r\n\
Content-Type: multipart/report; boundary=r\r\n\
\r\n\
--r\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Action: failed\r\n\
--r\r\n\
Content-Type: message/global\r\n\
\r\n\
Subject: inner\r\n\
\r\n\
hello\r\n\
--r--\r\n";

    fn section(meta: &MessageMeta, part: &[u32], text: Option<SectionText>) -> Vec<u8> {
        let s = Section {
            part: part.to_vec(),
            text,
        };
        section::body_section(meta, GLOBAL, &s).unwrap_or_default()
    }

    fn structure(meta: &MessageMeta, raw: &[u8], rev2: bool) -> String {
        let mut out = Vec::new();
        let form = structure::Form {
            rev2,
            ..Default::default()
        };
        structure::write(&mut out, meta, raw, form);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn message_global_is_a_message_only_for_imap4rev2() {
        let stored = trimaran_core::message::parse(GLOBAL);
        let rev1 = for_session(&stored, GLOBAL, false);
        let rev2 = for_session(&stored, GLOBAL, true);
        assert!(matches!(rev2, Cow::Borrowed(_)));
        let r1 = structure(&rev1, GLOBAL, false);
        assert!(
            r1.contains("(\"message\" \"global\" NIL NIL NIL \"7bit\" 23)"),
            "{r1}"
        );
        assert!(structure(&rev2, GLOBAL, true).contains("\"7bit\" 23 (NIL \"inner\""));
        assert_eq!(
            section(&rev1, &[2, 1], None),
            b"Subject: inner\r\n\r\nhello"
        );
        assert_eq!(section(&rev2, &[2, 1], None), b"hello");
        assert_eq!(section(&rev1, &[2], Some(SectionText::Header)), b"");
        assert_eq!(
            section(&rev2, &[2], Some(SectionText::Header)),
            b"Subject: inner\r\n\r\n"
        );
    }

    /// An empty message/global has no parts to describe, but IMAP4rev2's body-type-msg still
    /// needs an envelope and a body after its size (RFC 9051 §9), as message/rfc822 does; for
    /// IMAP4rev1 it stays a leaf. Found by the imap_fetch_builders fuzz target
    /// (fuzz/regressions/imap_fetch_builders/empty-message-global).
    #[test]
    fn empty_message_global_is_still_a_message_for_imap4rev2() {
        let raw = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n\
--o\r\nContent-Type: message/global\r\n\r\n\
--o\r\nContent-Type: text/plain\r\n\r\nhi\r\n--o--\r\n";
        let stored = trimaran_core::message::parse(raw);
        let rev2 = structure(&for_session(&stored, raw, true), raw, true);
        assert!(
            rev2.starts_with(
                "((\"message\" \"global\" NIL NIL NIL \"7bit\" 0 \
                 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) \
                 (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) 0)"
            ),
            "{rev2}"
        );
        let rev1 = structure(&for_session(&stored, raw, false), raw, false);
        assert!(
            rev1.starts_with("((\"message\" \"global\" NIL NIL NIL \"7bit\" 0)"),
            "{rev1}"
        );
    }

    #[test]
    fn delivery_status_is_a_leaf() {
        let meta = trimaran_core::message::parse(GLOBAL);
        assert_eq!(section(&meta, &[1, 1], None), b"Action: failed");
        assert_eq!(
            section(&meta, &[1, 1], Some(SectionText::Mime)),
            b"Content-Type: message/delivery-status\r\n\r\n"
        );
        assert_eq!(section(&meta, &[1], Some(SectionText::Header)), b"");
    }

    #[test]
    fn metadata_of_an_older_parser_is_parsed_again() {
        let mut old = trimaran_core::message::parse(GLOBAL);
        old.version = 1;
        old.parts[0].content_subtype = "wrong".into();
        assert!(structure::needs_raw(&old));
        let now = for_session(&old, GLOBAL, true);
        assert_eq!(now.version, MESSAGE_META_VERSION);
        assert_eq!(now.parts[0].content_subtype, "report");
        // No metadata asked for, nothing to parse.
        let none = MessageMeta::default();
        assert!(matches!(for_session(&none, GLOBAL, true), Cow::Borrowed(_)));
    }

    #[test]
    fn header_only_message_has_no_blank_line_to_add() {
        let h = b"From: a\r\nSubject: s\r\n";
        assert_eq!(
            section::header_fields(h, &["subject".into()], true),
            b"Subject: s\r\n"
        );
    }
}
