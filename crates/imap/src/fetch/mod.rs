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
