//! BODY and BODYSTRUCTURE (RFC 9051 §7.5.2) from the stored part tree.

use trimaran_core::store::{MessageMeta, PartMeta, MESSAGE_META_VERSION};

use super::envelope;
use crate::response::{nstring, string};

/// Whether the structure needs the message bytes: for the envelopes of encapsulated messages,
/// and to parse again metadata stored by an older parser (see [`super::for_session`]).
pub fn needs_raw(meta: &MessageMeta) -> bool {
    meta.parts.iter().any(is_message) || meta.version < MESSAGE_META_VERSION
}

/// An encapsulated message with its parts: message/rfc822, or message/global (whose parts
/// [`super::for_session`] removes for IMAP4rev1 sessions).
fn is_message(p: &PartMeta) -> bool {
    is(&p.content_type, "message")
        && (is(&p.content_subtype, "rfc822") || is(&p.content_subtype, "global"))
        && !p.children.is_empty()
}

fn is(value: &str, name: &str) -> bool {
    value.eq_ignore_ascii_case(name)
}

/// How a session wants BODY / BODYSTRUCTURE written.
#[derive(Clone, Copy, Debug, Default)]
pub struct Form {
    /// BODYSTRUCTURE: with the extension data (RFC 9051 §7.5.2); BODY without.
    pub extended: bool,
    /// UTF8=ACCEPT (RFC 6855 §3): 8-bit strings may be quoted strings.
    pub utf8: bool,
    /// IMAP4rev2, where message/global is a body-type-msg like message/rfc822 (RFC 9051 §9
    /// media-message); IMAP4rev1 has MESSAGE/RFC822 alone.
    pub rev2: bool,
}

pub fn write(out: &mut Vec<u8>, meta: &MessageMeta, raw: &[u8], form: Form) {
    if meta.parts.is_empty() {
        // Nothing was understood: describe the whole as text/plain (RFC 2045 §5.2 default).
        out.extend_from_slice(
            format!(
                "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" {} {})",
                meta.size.saturating_sub(meta.header_size),
                0
            )
            .as_bytes(),
        );
        return;
    }
    part(out, meta, 0, raw, form, 0);
}

fn params(out: &mut Vec<u8>, params: &[(String, String)], utf8: bool) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.as_bytes(), utf8);
        out.push(b' ');
        string(out, v.as_bytes(), utf8);
    }
    out.push(b')');
}

fn opt(out: &mut Vec<u8>, s: &Option<String>, utf8: bool) {
    nstring(out, s.as_deref().map(str::as_bytes), utf8);
}

/// body-ext-1part / body-ext-mpart tail shared by both: disposition, language, location.
fn disposition_language_location(out: &mut Vec<u8>, p: &PartMeta, utf8: bool) {
    out.push(b' ');
    match &p.disposition {
        Some(d) => {
            out.push(b'(');
            string(out, d.as_bytes(), utf8);
            out.push(b' ');
            params(out, &p.disposition_params, utf8);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    // body-fld-lang as a list, the form that also holds several languages: Content-Language is
    // a comma-separated list of tags (RFC 3282 §2).
    let langs: Vec<&str> = p
        .language
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if langs.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, lang) in langs.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            string(out, lang.as_bytes(), utf8);
        }
        out.push(b')');
    }
    out.push(b' ');
    opt(out, &p.location, utf8);
}

const MAX_DEPTH: usize = 64;

fn part(out: &mut Vec<u8>, meta: &MessageMeta, index: usize, raw: &[u8], form: Form, depth: usize) {
    let Form {
        extended,
        utf8,
        rev2,
    } = form;
    let p = &meta.parts[index];
    if is(&p.content_type, "multipart") && !p.children.is_empty() && depth < MAX_DEPTH {
        out.push(b'(');
        for &c in &p.children {
            part(out, meta, c, raw, form, depth + 1);
        }
        out.push(b' ');
        string(out, p.content_subtype.as_bytes(), utf8);
        if extended {
            out.push(b' ');
            params(out, &p.params, utf8);
            disposition_language_location(out, p, utf8);
        }
        out.push(b')');
        return;
    }
    out.push(b'(');
    let (ctype, csub) = if is(&p.content_type, "multipart") {
        // A multipart without parts cannot be described as one (RFC 9051 §9 body-type-mpart
        // needs at least one body); present it as what it is in practice, opaque data.
        ("application", "octet-stream")
    } else {
        (p.content_type.as_str(), p.content_subtype.as_str())
    };
    string(out, ctype.as_bytes(), utf8);
    out.push(b' ');
    string(out, csub.as_bytes(), utf8);
    out.push(b' ');
    let mut ps = p.params.clone();
    if is(ctype, "text") && !ps.iter().any(|(k, _)| k.eq_ignore_ascii_case("charset")) {
        ps.push(("charset".into(), "us-ascii".into()));
    }
    params(out, &ps, utf8);
    out.push(b' ');
    // body-fld-id is the Content-ID field as sent, angle brackets included (RFC 2045 §7).
    opt(out, &p.content_id, utf8);
    out.push(b' ');
    opt(out, &p.description, utf8);
    out.push(b' ');
    let encoding = p.encoding.clone().unwrap_or_else(|| "7bit".into());
    string(out, encoding.as_bytes(), utf8);
    let size = p.offset_end.saturating_sub(p.offset_body);
    out.extend_from_slice(format!(" {size}").as_bytes());
    if is_message(p) && depth < MAX_DEPTH {
        // body-type-msg: envelope, body, lines of the encapsulated message.
        let inner = p.children[0];
        let ip = &meta.parts[inner];
        let header = raw
            .get(ip.offset_header as usize..ip.offset_body as usize)
            .unwrap_or_default();
        out.push(b' ');
        envelope::write(out, header, utf8);
        out.push(b' ');
        part(out, meta, inner, raw, form, depth + 1);
        out.extend_from_slice(format!(" {}", p.body_lines).as_bytes());
    } else if is(ctype, "message") && (is(csub, "rfc822") || (rev2 && is(csub, "global"))) {
        // body-type-msg needs an envelope and a body even when the encapsulated message could
        // not be read (empty, or encoded with base64, which RFC 2046 §5.2.1 forbids): empty
        // ones. Any other message/* without parts is body-type-basic (media-basic includes
        // MESSAGE).
        out.extend_from_slice(b" (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ");
        out.extend_from_slice(
            b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0",
        );
        if extended {
            out.extend_from_slice(b" NIL NIL NIL NIL");
        }
        out.extend_from_slice(format!(") {}", p.body_lines).as_bytes());
    } else if is(ctype, "text") {
        out.extend_from_slice(format!(" {}", p.body_lines).as_bytes());
    }
    if extended {
        out.extend_from_slice(b" NIL");
        disposition_language_location(out, p, utf8);
    }
    out.push(b')');
}
