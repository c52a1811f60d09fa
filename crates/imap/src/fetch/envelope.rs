//! ENVELOPE (RFC 9051 §7.5.2) from the raw header block: field values are sent as they
//! appear in the message (encoded-words included), which is what clients decode.

use crate::response::{nstring, string};

/// The header fields of a header block, unfolded (RFC 5322 §2.2.3), in order.
pub fn fields(header: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in header.split_inclusive(|&b| b == b'\n') {
        let trimmed = trim_eol(line);
        if trimmed.is_empty() {
            break;
        }
        if matches!(trimmed.first(), Some(b' ') | Some(b'\t')) {
            if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(trimmed);
            }
            continue;
        }
        if let Some(colon) = trimmed.iter().position(|&b| b == b':') {
            let name = trim(&trimmed[..colon]);
            out.push((name, trim(&trimmed[colon + 1..]).to_vec()));
        }
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

pub fn field<'a>(fields: &'a [(&[u8], Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

/// One ENVELOPE address (RFC 9051 §9 `address`); a group is marked by a start with only the
/// mailbox (the group name) and an end with every member NIL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addr {
    pub name: Option<Vec<u8>>,
    /// The obsolete source route, "@a,@b" (RFC 5322 §4.4 obs-route).
    pub adl: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Special(u8),
    /// A comment's text, without its outer parentheses.
    Comment(Vec<u8>),
}

fn tokens(s: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'(' => {
                // Comments nest (RFC 5322 §3.2.2); kept, since one after an addr-spec is the
                // only display name some mailers give ("user@host (Full Name)").
                let mut depth = 0;
                let mut text = Vec::new();
                while i < s.len() {
                    match s[i] {
                        b'\\' => {
                            i += 1;
                            if let Some(&c) = s.get(i) {
                                text.push(c);
                            }
                        }
                        b'(' => {
                            if depth > 0 {
                                text.push(b'(');
                            }
                            depth += 1;
                        }
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                            text.push(b')');
                        }
                        b'\r' | b'\n' => {}
                        c => text.push(c),
                    }
                    i += 1;
                }
                out.push(Tok::Comment(text));
            }
            b'"' => {
                let mut q = Vec::new();
                i += 1;
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    q.push(s[i]);
                    i += 1;
                }
                i += 1;
                out.push(Tok::Quoted(q));
            }
            c @ (b'<' | b'>' | b'@' | b',' | b':' | b';') => {
                out.push(Tok::Special(c));
                i += 1;
            }
            _ => {
                let start = i;
                while i < s.len() && !b" \t\r\n(\"<>@,:;".contains(&s[i]) {
                    i += 1;
                }
                out.push(Tok::Word(s[start..i].to_vec()));
            }
        }
    }
    out
}

fn word_bytes(t: &Tok) -> Option<&[u8]> {
    match t {
        Tok::Word(w) | Tok::Quoted(w) => Some(w),
        Tok::Special(_) | Tok::Comment(_) => None,
    }
}

/// Parses an address list (RFC 5322 §3.4) leniently: whatever cannot be understood is
/// skipped up to the next comma.
pub fn address_list(value: &[u8]) -> Vec<Addr> {
    let toks = tokens(value);
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_group = false;
    while i < toks.len() {
        // Collect everything up to the end of this address.
        let mut phrase: Vec<&[u8]> = Vec::new();
        let mut plain: Vec<&Tok> = Vec::new();
        let mut inside: Vec<&Tok> = Vec::new();
        let mut comment: Option<&[u8]> = None;
        let (mut angle, mut saw_angle) = (false, false);
        while i < toks.len() {
            match &toks[i] {
                Tok::Special(b',') if !angle => {
                    i += 1;
                    break;
                }
                Tok::Special(b';') if in_group && !angle => break,
                Tok::Special(b':') if !angle && !in_group => {
                    out.push(Addr {
                        mailbox: Some(phrase.join(&b' ')),
                        ..Addr::default()
                    });
                    in_group = true;
                    phrase.clear();
                    plain.clear();
                    comment = None;
                }
                Tok::Special(b'<') => {
                    angle = true;
                    saw_angle = true;
                    inside.clear();
                }
                Tok::Special(b'>') => angle = false,
                Tok::Comment(c) => comment = Some(c.trim_ascii()).filter(|c| !c.is_empty()),
                t if angle => inside.push(t),
                t => {
                    if let Some(w) = word_bytes(t) {
                        phrase.push(w);
                    }
                    plain.push(t);
                }
            }
            i += 1;
        }
        let (spec, name) = if saw_angle {
            (inside, (!phrase.is_empty()).then(|| phrase.join(&b' ')))
        } else {
            // A bare addr-spec has no phrase; a comment written with it, as in
            // "user@host (Full Name)", is the display name by the convention of RFC 822 era
            // mailers, and what clients show (Dovecot answers it as the name too).
            (plain, comment.map(<[u8]>::to_vec))
        };
        if !spec.is_empty() {
            let (route, spec): (Vec<&Tok>, Vec<&Tok>) =
                match spec.iter().position(|t| **t == Tok::Special(b':')) {
                    Some(colon) => (spec[..colon].to_vec(), spec[colon + 1..].to_vec()),
                    None => (Vec::new(), spec),
                };
            let adl = (!route.is_empty()).then(|| {
                route
                    .iter()
                    .flat_map(|t| match t {
                        Tok::Special(c) => vec![*c],
                        Tok::Word(w) | Tok::Quoted(w) => w.clone(),
                        Tok::Comment(_) => Vec::new(),
                    })
                    .collect::<Vec<u8>>()
            });
            let at = spec.iter().rposition(|t| **t == Tok::Special(b'@'));
            let (local, host) = match at {
                Some(at) => (&spec[..at], Some(&spec[at + 1..])),
                None => (&spec[..], None),
            };
            let join = |ts: &[&Tok]| -> Vec<u8> {
                ts.iter()
                    .filter_map(|t| word_bytes(t))
                    .flat_map(|w| w.to_vec())
                    .collect()
            };
            // A missing part gets a placeholder rather than NIL: a NIL host would read as
            // group syntax (RFC 9051 §7.5.2). Dovecot uses the same placeholders.
            let mailbox = Some(join(local)).filter(|m| !m.is_empty());
            let host = host.map(join).filter(|h| !h.is_empty());
            out.push(Addr {
                name,
                adl,
                mailbox: Some(mailbox.unwrap_or_else(|| b"MISSING_MAILBOX".to_vec())),
                host: Some(host.unwrap_or_else(|| b"MISSING_DOMAIN".to_vec())),
            });
        }
        if in_group && toks.get(i) == Some(&Tok::Special(b';')) {
            out.push(Addr::default());
            in_group = false;
            i += 1;
            if toks.get(i) == Some(&Tok::Special(b',')) {
                i += 1;
            }
        }
    }
    if in_group {
        out.push(Addr::default());
    }
    out
}

fn addresses(out: &mut Vec<u8>, list: &[Addr], utf8: bool) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(out, a.name.as_deref(), utf8);
        out.push(b' ');
        nstring(out, a.adl.as_deref(), utf8);
        out.push(b' ');
        nstring(out, a.mailbox.as_deref(), utf8);
        out.push(b' ');
        nstring(out, a.host.as_deref(), utf8);
        out.push(b')');
    }
    out.push(b')');
}

/// Writes `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
pub fn write(out: &mut Vec<u8>, header: &[u8], utf8: bool) {
    let f = fields(header);
    let text = |out: &mut Vec<u8>, name: &str| {
        nstring(out, field(&f, name).filter(|v| !v.is_empty()), utf8);
    };
    out.push(b'(');
    text(out, "Date");
    out.push(b' ');
    match field(&f, "Subject") {
        Some(s) => string(out, s, utf8),
        None => out.extend_from_slice(b"NIL"),
    }
    let from = field(&f, "From").map(address_list).unwrap_or_default();
    for name in ["From", "Sender", "Reply-To"] {
        out.push(b' ');
        let list = field(&f, name).map(address_list).unwrap_or_default();
        // RFC 9051 §7.5.2: an absent or empty Sender or Reply-To is given as From.
        addresses(out, if list.is_empty() { &from } else { &list }, utf8);
    }
    for name in ["To", "Cc", "Bcc"] {
        out.push(b' ');
        addresses(
            out,
            &field(&f, name).map(address_list).unwrap_or_default(),
            utf8,
        );
    }
    out.push(b' ');
    text(out, "In-Reply-To");
    out.push(b' ');
    text(out, "Message-ID");
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: Option<&str>, mailbox: &str, host: Option<&str>) -> Addr {
        Addr {
            name: name.map(|n| n.as_bytes().to_vec()),
            adl: None,
            mailbox: Some(mailbox.as_bytes().to_vec()),
            host: host.map(|h| h.as_bytes().to_vec()),
        }
    }

    #[test]
    fn address_lists() {
        assert_eq!(
            address_list(b"\"Doe, John\" <john@example.com>, jane@example.org (Jane)"),
            vec![
                a(Some("Doe, John"), "john", Some("example.com")),
                a(Some("Jane"), "jane", Some("example.org"))
            ]
        );
        assert_eq!(
            address_list(b"=?UTF-8?B?7JWI64WV?= <kim@example.kr>"),
            vec![a(Some("=?UTF-8?B?7JWI64WV?="), "kim", Some("example.kr"))]
        );
        let g = address_list(b"Team: a@x.test, B <b@y.test>;, c@z.test");
        assert_eq!(g.len(), 5, "{g:?}");
        assert_eq!(g[0].mailbox.as_deref(), Some(&b"Team"[..]));
        assert_eq!(g[0].host, None);
        assert_eq!(g[3], Addr::default());
        assert_eq!(g[4], a(None, "c", Some("z.test")));
        assert_eq!(address_list(b"undisclosed-recipients:;").len(), 2);
    }

    #[test]
    fn envelope() {
        let mut out = Vec::new();
        write(
            &mut out,
            b"Subject: hi\r\n there\r\nFrom: A <a@x.test>\r\nMessage-ID: <1@x>\r\n\r\n",
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "(NIL \"hi there\" ((\"A\" NIL \"a\" \"x.test\")) ((\"A\" NIL \"a\" \"x.test\")) ((\"A\" NIL \"a\" \"x.test\")) NIL NIL NIL NIL \"<1@x>\")"
        );
    }
}
