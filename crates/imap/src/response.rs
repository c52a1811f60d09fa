//! Writing IMAP data (RFC 9051 §4): strings as quoted strings when they can be, literals
//! otherwise; mailbox names in the session's encoding.

/// Longest string sent quoted; longer ones go as literals, which need no escaping.
const MAX_QUOTED: usize = 1024;

/// A string (RFC 9051 §4.3). 8-bit text is quoted only for UTF-8-enabled sessions.
pub fn string(out: &mut Vec<u8>, s: &[u8], utf8: bool) {
    let quotable = s.len() <= MAX_QUOTED
        && s.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && (b < 0x80 || utf8));
    if quotable && (!utf8 || std::str::from_utf8(s).is_ok()) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    // RFC 3516 §4.3: content with NUL must go as a literal8.
    if s.contains(&0) {
        out.push(b'~');
    }
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>, utf8: bool) {
    match s {
        Some(s) => string(out, s, utf8),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name: UTF-8 for UTF-8 sessions, modified UTF-7 otherwise (RFC 9051 §5.1).
pub fn mailbox(out: &mut Vec<u8>, name: &str, utf8: bool) {
    if utf8 {
        string(out, name.as_bytes(), true);
    } else {
        string(out, crate::utf7::encode(name).as_bytes(), false);
    }
}

/// A quoted string for text known to be short ASCII-safe, e.g. parameter names.
pub fn quoted(s: &str) -> String {
    let mut out = Vec::new();
    string(&mut out, s.as_bytes(), true);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut o = Vec::new();
        string(&mut o, b"a \"b\" \\c", false);
        assert_eq!(o, b"\"a \\\"b\\\" \\\\c\"");
        let mut o = Vec::new();
        string(&mut o, "한글".as_bytes(), false);
        assert_eq!(o, "{6}\r\n한글".as_bytes());
        let mut o = Vec::new();
        string(&mut o, "한글".as_bytes(), true);
        assert_eq!(o, "\"한글\"".as_bytes());
        let mut o = Vec::new();
        string(&mut o, b"a\r\nb", true);
        assert_eq!(o, b"{4}\r\na\r\nb");
    }
}
