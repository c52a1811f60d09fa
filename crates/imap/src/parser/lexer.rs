//! The lexical layer of IMAP commands (RFC 9051 §4 data formats, §9 formal syntax): atoms,
//! numbers, quoted strings, literals, lists. Literals arrive inlined: the session has already
//! read `{n}\r\n` and the n octets that follow into the same buffer.

use super::ParseError;

pub struct Lexer<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// RFC 9051 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials /
/// resp-specials.
fn is_atom_char(b: u8) -> bool {
    !(b <= 0x1f
        || b >= 0x7f
        || matches!(
            b,
            b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']'
        ))
}

/// ASTRING-CHAR = ATOM-CHAR / resp-specials
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// list-char = ATOM-CHAR / list-wildcards / resp-specials
fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

pub type Result<T> = std::result::Result<T, ParseError>;

fn bad(msg: &str) -> ParseError {
    ParseError::Syntax(msg.to_string())
}

impl<'a> Lexer<'a> {
    pub fn new(buf: &'a [u8]) -> Lexer<'a> {
        Lexer { buf, pos: 0 }
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn at_end(&self) -> bool {
        matches!(self.rest(), b"" | b"\r\n" | b"\n")
    }

    /// The command must end here (CRLF, RFC 9051 §2.2.1).
    pub fn end(&mut self) -> Result<()> {
        if self.at_end() {
            self.pos = self.buf.len();
            Ok(())
        } else {
            Err(bad("unexpected characters at the end of the command"))
        }
    }

    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn expect(&mut self, b: u8) -> Result<()> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(ParseError::Syntax(format!("expected {:?}", b as char)))
        }
    }

    pub fn sp(&mut self) -> Result<()> {
        self.expect(b' ')
    }

    /// Case-insensitive keyword followed by a non-atom character.
    pub fn keyword(&mut self, word: &str) -> bool {
        let w = word.as_bytes();
        let rest = self.rest();
        if rest.len() >= w.len()
            && rest[..w.len()].eq_ignore_ascii_case(w)
            && rest
                .get(w.len())
                .is_none_or(|&b| !is_atom_char(b) || b == b'[')
        {
            self.pos += w.len();
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    pub fn atom(&mut self) -> Result<String> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err(bad("expected an atom"));
        }
        Ok(String::from_utf8_lossy(a).into_owned())
    }

    /// Characters valid in a FETCH attribute or section name: letters, digits, '.', '-'.
    pub fn word(&mut self) -> String {
        let w = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        String::from_utf8_lossy(w).to_ascii_uppercase()
    }

    pub fn number(&mut self) -> Result<u64> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() || digits.len() > 20 {
            return Err(bad("expected a number"));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| bad("number out of range"))
    }

    /// nz-number that fits a u32 (sequence numbers, UIDs, RFC 9051 §9).
    pub fn nz_number(&mut self) -> Result<u32> {
        match self.number()? {
            n @ 1..=0xffff_ffff => Ok(n as u32),
            _ => Err(bad("expected a non-zero 32-bit number")),
        }
    }

    pub fn quoted(&mut self) -> Result<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err(bad("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err(bad("bad escape in quoted string")),
                    }
                }
                Some(0) => return Err(bad("NUL in quoted string")),
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `{n}` / `{n+}` / `{n-}` CRLF then n octets; `~{n}` (RFC 3516 literal8) when `binary`.
    pub fn literal(&mut self, binary: bool) -> Result<Vec<u8>> {
        if binary {
            self.eat(b'~');
        }
        self.expect(b'{')?;
        let n = self.number()? as usize;
        let _ = self.eat(b'+') || self.eat(b'-');
        self.expect(b'}')?;
        if !self.rest().starts_with(b"\r\n") {
            return Err(bad("literal length must end the line"));
        }
        self.pos += 2;
        if self.rest().len() < n {
            return Err(bad("truncated literal"));
        }
        let data = self.rest()[..n].to_vec();
        self.pos += n;
        if !binary && data.contains(&0) {
            return Err(bad("NUL in literal; use a literal8"));
        }
        Ok(data)
    }

    pub fn string(&mut self) -> Result<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(false),
            _ => Err(bad("expected a string")),
        }
    }

    pub fn astring(&mut self) -> Result<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    return Err(bad("expected an atom or string"));
                }
                Ok(a.to_vec())
            }
        }
    }

    /// list-mailbox (RFC 9051 §9): wildcards allowed.
    pub fn list_mailbox(&mut self) -> Result<Vec<u8>> {
        match self.peek() {
            Some(b'"') | Some(b'{') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    return Err(bad("expected a mailbox pattern"));
                }
                Ok(a.to_vec())
            }
        }
    }

    pub fn nstring(&mut self) -> Result<Option<Vec<u8>>> {
        if self.keyword("NIL") {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A flag: `\Word` or a keyword atom.
    pub fn flag(&mut self) -> Result<String> {
        if self.eat(b'\\') {
            if self.eat(b'*') {
                return Ok("\\*".into());
            }
            return Ok(format!("\\{}", self.atom()?));
        }
        self.atom()
    }

    /// `(` items separated by SP `)`; `item` parses one element.
    pub fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }
}
