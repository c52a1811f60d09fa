//! An independent reader for the data the IMAP server writes (RFC 9051 §4 and §9: atoms,
//! numbers, NIL, quoted strings, literals and parenthesised lists), with shape checks for
//! ENVELOPE and BODY/BODYSTRUCTURE (RFC 9051 §7.5.2). A client parses what we send with rules
//! like these; anything they refuse would desynchronise it.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Nil,
    Number(u64),
    Atom(Vec<u8>),
    /// A quoted string or a literal, unescaped.
    Str(Vec<u8>),
    List(Vec<Value>),
}

/// Deeper than this is refused by the checker itself (it recurses).
const MAX_NESTING: usize = 256;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    utf8: bool,
}

/// RFC 9051 §9 ATOM-CHAR.
fn atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

impl Reader<'_> {
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at offset {}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_NESTING {
            return self.err("nesting too deep");
        }
        match self.peek() {
            None => self.err("expected a value, found the end"),
            Some(b'(') => self.list(depth),
            Some(b'"') => self.quoted(),
            Some(b'{') | Some(b'~') => self.literal(),
            Some(b) if b.is_ascii_digit() => {
                let start = self.pos;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.buf[start..self.pos]).expect("digits");
                match text.parse() {
                    Ok(n) if self.peek().is_none_or(|b| !atom_char(b) || b == b']') => {
                        Ok(Value::Number(n))
                    }
                    _ => self.err("bad number"),
                }
            }
            Some(b) if atom_char(b) => {
                let start = self.pos;
                while self.peek().is_some_and(atom_char) {
                    self.pos += 1;
                }
                let atom = &self.buf[start..self.pos];
                Ok(if atom == b"NIL" {
                    Value::Nil
                } else {
                    Value::Atom(atom.to_vec())
                })
            }
            Some(_) => self.err("unexpected byte"),
        }
    }

    fn list(&mut self, depth: usize) -> Result<Value, String> {
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek() == Some(b')') {
            self.pos += 1;
            return Ok(Value::List(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b')') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                Some(b' ') => {
                    self.pos += 1;
                }
                // body-type-mpart (RFC 9051 §9): `1*body SP media-subtype`, bodies adjacent.
                Some(b'(') if matches!(items.last(), Some(Value::List(_))) => {}
                _ => return self.err("expected SP or ')' in a list"),
            }
        }
    }

    fn quoted(&mut self) -> Result<Value, String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return self.err("unterminated quoted string");
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => match self.peek() {
                    Some(c @ (b'"' | b'\\')) => {
                        self.pos += 1;
                        out.push(c);
                    }
                    _ => return self.err("bad escape in a quoted string"),
                },
                0 | b'\r' | b'\n' => return self.err("NUL, CR or LF in a quoted string"),
                0x80.. if !self.utf8 => {
                    return self.err("8-bit byte in a quoted string without UTF8=ACCEPT")
                }
                _ => out.push(b),
            }
        }
        if self.utf8 && std::str::from_utf8(&out).is_err() {
            return self.err("quoted string is not UTF-8");
        }
        Ok(Value::Str(out))
    }

    fn literal(&mut self) -> Result<Value, String> {
        let binary = self.peek() == Some(b'~');
        if binary {
            self.pos += 1;
        }
        if self.peek() != Some(b'{') {
            return self.err("expected '{'");
        }
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let n: usize = match std::str::from_utf8(&self.buf[start..self.pos])
            .ok()
            .and_then(|d| d.parse().ok())
        {
            Some(n) => n,
            None => return self.err("bad literal length"),
        };
        if !self.buf[self.pos..].starts_with(b"}\r\n") {
            return self.err("literal length not followed by }CRLF");
        }
        self.pos += 3;
        let Some(data) = self.buf.get(self.pos..self.pos + n) else {
            return self.err("literal longer than the data");
        };
        if !binary && data.contains(&0) {
            return self.err("NUL in a literal that is not a literal8");
        }
        self.pos += n;
        Ok(Value::Str(data.to_vec()))
    }
}

/// Reads exactly one value that spans all of `buf`. `utf8`: the session enabled UTF8=ACCEPT,
/// so quoted strings may carry UTF-8 (and nothing else 8-bit).
pub fn read(buf: &[u8], utf8: bool) -> Result<Value, String> {
    let mut r = Reader { buf, pos: 0, utf8 };
    let v = r.value(0)?;
    if r.pos != buf.len() {
        return r.err("trailing bytes after the value");
    }
    Ok(v)
}

fn nstring(v: &Value, what: &str) -> Result<(), String> {
    match v {
        Value::Nil | Value::Str(_) => Ok(()),
        other => Err(format!("{what}: expected nstring, got {other:?}")),
    }
}

fn string<'a>(v: &'a Value, what: &str) -> Result<&'a [u8], String> {
    match v {
        Value::Str(s) => Ok(s),
        other => Err(format!("{what}: expected string, got {other:?}")),
    }
}

fn number(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => Ok(*n),
        other => Err(format!("{what}: expected number, got {other:?}")),
    }
}

fn list<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], String> {
    match v {
        Value::List(items) => Ok(items),
        other => Err(format!("{what}: expected list, got {other:?}")),
    }
}

/// RFC 9051 §9 `envelope`: ten fields, addresses as lists of four nstrings.
pub fn check_envelope(v: &Value) -> Result<(), String> {
    let items = list(v, "envelope")?;
    if items.len() != 10 {
        return Err(format!("envelope has {} fields, not 10", items.len()));
    }
    nstring(&items[0], "env-date")?;
    nstring(&items[1], "env-subject")?;
    for (i, field) in items[2..8].iter().enumerate() {
        match field {
            Value::Nil => {}
            Value::List(addrs) if !addrs.is_empty() => {
                for a in addrs {
                    let parts = list(a, "address")?;
                    if parts.len() != 4 {
                        return Err(format!(
                            "address in field {} has {} parts",
                            i + 2,
                            parts.len()
                        ));
                    }
                    for p in parts {
                        nstring(p, "address part")?;
                    }
                }
            }
            other => return Err(format!("envelope address field {}: {other:?}", i + 2)),
        }
    }
    nstring(&items[8], "env-in-reply-to")?;
    nstring(&items[9], "env-message-id")
}

/// body-fld-param: NIL or a non-empty list of string pairs.
fn params(v: &Value) -> Result<(), String> {
    match v {
        Value::Nil => Ok(()),
        Value::List(items) if !items.is_empty() && items.len() % 2 == 0 => {
            for i in items {
                string(i, "body-fld-param")?;
            }
            Ok(())
        }
        other => Err(format!("body-fld-param: {other:?}")),
    }
}

/// body-fld-dsp, body-fld-lang, body-fld-loc (shared by both kinds of body extension).
fn dsp_lang_loc(items: &[Value]) -> Result<(), String> {
    match &items[0] {
        Value::Nil => {}
        Value::List(d) if d.len() == 2 => {
            string(&d[0], "disposition")?;
            params(&d[1])?;
        }
        other => return Err(format!("body-fld-dsp: {other:?}")),
    }
    match &items[1] {
        Value::Nil | Value::Str(_) => {}
        Value::List(l) if !l.is_empty() => {
            for s in l {
                string(s, "body-fld-lang")?;
            }
        }
        other => return Err(format!("body-fld-lang: {other:?}")),
    }
    nstring(&items[2], "body-fld-loc")
}

/// RFC 9051 §9 `body`, with extension data when `extended` (BODYSTRUCTURE) and without (BODY).
/// `rev2`: IMAP4rev2's grammar, where MESSAGE/GLOBAL is a body-type-msg; RFC 3501's has
/// MESSAGE/RFC822 alone.
pub fn check_body(v: &Value, extended: bool, rev2: bool) -> Result<(), String> {
    check_body_at(v, extended, rev2, 0)
}

fn check_body_at(v: &Value, extended: bool, rev2: bool, depth: usize) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err("body nesting too deep".into());
    }
    let items = list(v, "body")?;
    let bodies = items
        .iter()
        .take_while(|i| matches!(i, Value::List(_)))
        .count();
    if bodies > 0 {
        for b in &items[..bodies] {
            check_body_at(b, extended, rev2, depth + 1)?;
        }
        let rest = &items[bodies..];
        let want = if extended { 5 } else { 1 };
        if rest.len() != want {
            return Err(format!(
                "multipart body has {} fields after its parts, not {want}",
                rest.len()
            ));
        }
        string(&rest[0], "media-subtype")?;
        if extended {
            params(&rest[1])?;
            dsp_lang_loc(&rest[2..5])?;
        }
        return Ok(());
    }
    if items.len() < 7 {
        return Err(format!("one-part body has {} fields", items.len()));
    }
    let ctype = string(&items[0], "media type")?.to_ascii_lowercase();
    let csub = string(&items[1], "media subtype")?.to_ascii_lowercase();
    params(&items[2])?;
    nstring(&items[3], "body-fld-id")?;
    nstring(&items[4], "body-fld-desc")?;
    string(&items[5], "body-fld-enc")?;
    number(&items[6], "body-fld-octets")?;
    let mut i = 7;
    if ctype == b"message" && (csub == b"rfc822" || (rev2 && csub == b"global")) {
        let [env, body, lines] = items.get(7..10).ok_or("body-type-msg too short")? else {
            unreachable!()
        };
        check_envelope(env)?;
        check_body_at(body, extended, rev2, depth + 1)?;
        number(lines, "body-fld-lines")?;
        i = 10;
    } else if ctype == b"text" {
        number(
            items.get(7).ok_or("text body without lines")?,
            "body-fld-lines",
        )?;
        i = 8;
    }
    let want = if extended { i + 4 } else { i };
    if items.len() != want {
        return Err(format!(
            "{}/{} body has {} fields, not {want}",
            String::from_utf8_lossy(&ctype),
            String::from_utf8_lossy(&csub),
            items.len()
        ));
    }
    if extended {
        nstring(&items[i], "body-fld-md5")?;
        dsp_lang_loc(&items[i + 1..i + 4])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_servers_send() {
        let env = b"(NIL \"hi\" ((\"A\" NIL \"a\" \"x\")) NIL NIL NIL NIL NIL NIL {3}\r\n<1>)";
        check_envelope(&read(env, false).unwrap()).unwrap();
        let body = b"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1)(\"image\" \"png\" NIL NIL NIL \"base64\" 4) \"mixed\")";
        check_body(&read(body, false).unwrap(), false, true).unwrap();
        assert!(read(b"(\"a\"\"b\")", false).is_err());
        assert!(read(b"{5}\r\nab", false).is_err());
        assert!(read("\"é\"".as_bytes(), false).is_err());
        assert!(read("\"é\"".as_bytes(), true).is_ok());
    }
}
