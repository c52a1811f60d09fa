//! MIME structure (RFC 2045, RFC 2046): where each part's header and body start and end, and
//! the Content-* fields IMAP's BODYSTRUCTURE reports, as the message has them (RFC 9051 §7.5.2
//! returns parameters and field values as sent, not decoded).
//!
//! Written for hostile input: any byte string parses, nesting and part counts are bounded, and
//! the work is linear in the size of the message times the nesting depth.

use trimaran_store::PartMeta;

/// Nesting deeper than this (multiparts in messages in multiparts...) is not described part by
/// part: the deeper entity is kept as one opaque leaf.
pub const MAX_DEPTH: usize = 32;
/// Most parts described for one message; the rest stays inside its parent's bytes.
pub const MAX_PARTS: usize = 2000;

/// The parts of a message, root first, and whether the structure was as RFC 2046 wants it.
#[derive(Debug)]
pub struct Structure {
    pub parts: Vec<PartMeta>,
    pub well_formed: bool,
}

/// Parses the MIME structure of `raw`. Lines may end in CRLF or in a bare LF.
pub fn parse(raw: &[u8]) -> Structure {
    let mut p = Parser {
        raw,
        stack: Vec::new(),
        parts: Vec::new(),
        well_formed: true,
    };
    p.entity(0, 0, false);
    Structure {
        parts: p.parts,
        well_formed: p.well_formed,
    }
}

/// A boundary delimiter line (RFC 2046 §5.1.1).
#[derive(Clone, Copy, Debug)]
struct Delim {
    /// Where the content before the delimiter ends: the CRLF that precedes the delimiter
    /// belongs to the delimiter, not to the part before it.
    cut: usize,
    /// Just after the delimiter line.
    next: usize,
    /// Index in the boundary stack of the multipart it belongs to.
    level: usize,
    close: bool,
}

/// Why an entity ended.
enum Stop {
    /// At the end of the message.
    End,
    /// At a delimiter of an enclosing multipart.
    Delim(Delim),
}

impl Stop {
    fn cut(&self, end: usize) -> usize {
        match self {
            Stop::End => end,
            Stop::Delim(d) => d.cut,
        }
    }
}

struct Parser<'r> {
    raw: &'r [u8],
    /// Boundaries of the enclosing multiparts, outermost first.
    stack: Vec<Vec<u8>>,
    parts: Vec<PartMeta>,
    well_formed: bool,
}

/// The Content-* fields of one header block, the first of each (RFC 2045 allows each once; the
/// first is also what ENVELOPE takes of a repeated field).
#[derive(Default)]
struct ContentFields {
    content_type: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    description: Option<Vec<u8>>,
    disposition: Option<Vec<u8>>,
    language: Option<Vec<u8>>,
    location: Option<Vec<u8>>,
}

impl Parser<'_> {
    /// Just after the line starting at `pos`.
    fn line_end(&self, pos: usize) -> usize {
        self.raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.raw.len(), |p| pos + p + 1)
    }

    /// The delimiter of an enclosing multipart that the line at `line` is, if any. Innermost
    /// boundaries are tried first, so that an inner boundary that extends an outer one (which
    /// RFC 2046 §5.1.1 tells composers to avoid) still belongs to the inner multipart.
    fn delimiter_at(&self, line: usize, content_start: usize) -> Option<Delim> {
        let rest = self.raw.get(line..)?.strip_prefix(b"--")?;
        // RFC 2046 §5.1.1 (note to implementors): the boundary need only appear in its entirety
        // at the start of the line; what follows it on the line is not looked at.
        let (level, b) = self
            .stack
            .iter()
            .enumerate()
            .rev()
            .find(|(_, b)| rest.starts_with(b))?;
        let close = rest[b.len()..].starts_with(b"--");
        let mut cut = line;
        if line > content_start && self.raw[line - 1] == b'\n' {
            cut -= 1;
            if cut > content_start && self.raw[cut - 1] == b'\r' {
                cut -= 1;
            }
        }
        Some(Delim {
            cut,
            next: self.line_end(line),
            level,
            close,
        })
    }

    /// The first delimiter of an enclosing multipart in content starting at `start`.
    fn next_delimiter(&self, start: usize) -> Option<Delim> {
        self.next_delimiter_after(start, start)
    }

    /// The first delimiter in lines from `start` on, whose preceding line ending may be taken
    /// back to `floor`.
    fn next_delimiter_after(&self, start: usize, floor: usize) -> Option<Delim> {
        if self.stack.is_empty() {
            return None;
        }
        let mut line = start;
        while line < self.raw.len() {
            if self.raw[line] == b'-' {
                if let Some(d) = self.delimiter_at(line, floor) {
                    return Some(d);
                }
            }
            line = self.line_end(line);
        }
        None
    }

    /// Describes the entity (header and body) starting at `start` and returns where it ended.
    /// `digest`: the entity is a part of a multipart/digest (RFC 2046 §5.1.5).
    fn entity(&mut self, start: usize, depth: usize, digest: bool) -> (Option<usize>, Stop) {
        let len = self.raw.len();
        if self.parts.len() >= MAX_PARTS {
            self.well_formed = false;
            let stop = self.next_delimiter(start).map_or(Stop::End, Stop::Delim);
            return (None, stop);
        }
        let (header_end, mut body_start, mut early) = self.header(start);
        let fields = content_fields(&self.raw[start..header_end]);
        let parsed = fields.content_type.as_deref().map(parse_content_type);
        let (ctype, csub, params) = match parsed {
            Some(Some(ct)) => ct,
            // RFC 2045 §5.2: no Content-Type means text/plain; charset=us-ascii, but
            // message/rfc822 in a digest (RFC 2046 §5.1.5). An invalid Content-Type means
            // text/plain too, its parameters with it.
            None if digest => ("message".into(), "rfc822".into(), Vec::new()),
            None | Some(None) => ("text".into(), "plain".into(), Vec::new()),
        };
        let encoding = fields.encoding.as_deref().and_then(|v| {
            let mut lex = Lex::new(v);
            lex.skip_cfws();
            let t = lex.token();
            (!t.is_empty()).then(|| text(t))
        });
        let (disposition, disposition_params) =
            match fields.disposition.as_deref().and_then(parse_disposition) {
                Some((d, p)) => (Some(d), p),
                None => (None, Vec::new()),
            };
        let boundary = is(&ctype, "multipart")
            .then(|| {
                params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                    .map(|(_, v)| v.as_bytes().to_vec())
            })
            .flatten()
            .filter(|b| !b.is_empty());
        if early.is_none() && body_start > start && body_start < len {
            // The CRLF of the blank line that ends the header belongs to an enclosing
            // multipart's delimiter when one follows at once (RFC 2046 §5.1.1): then the header
            // has no blank line and there is no body. This part's own boundary is tried first,
            // so that "--LL2" opening a multipart with boundary LL2 inside one with boundary LL
            // stays the start of its first part.
            let outer = self.stack.len();
            self.stack.extend(boundary.clone());
            let d = self.delimiter_at(body_start, start);
            self.stack.truncate(outer);
            if let Some(d) = d.filter(|d| d.level < outer) {
                (body_start, early) = (d.cut, Some(d));
            }
        }
        let slot = self.parts.len();
        self.parts.push(PartMeta {
            content_type: ctype,
            content_subtype: csub,
            params,
            content_id: fields.id.as_deref().map(text),
            description: fields.description.as_deref().map(text),
            encoding,
            disposition,
            disposition_params,
            language: fields.language.as_deref().map(text),
            location: fields.location.as_deref().map(text),
            offset_header: start as u64,
            offset_body: body_start as u64,
            offset_end: body_start as u64,
            body_lines: 0,
            children: Vec::new(),
        });
        let (stop, children) = if let Some(d) = early {
            // The header ran into a delimiter: no body at all.
            (Stop::Delim(d), Vec::new())
        } else {
            let part = &self.parts[slot];
            let encapsulated = is(&part.content_type, "message")
                && (is(&part.content_subtype, "rfc822") || is(&part.content_subtype, "global"))
                // RFC 2046 §5.2.1: only identity encodings are allowed; an encoded message's
                // parts have no offsets in the stored bytes, so it stays a leaf.
                && !part.encoding.as_deref().is_some_and(|e| {
                    e.eq_ignore_ascii_case("base64") || e.eq_ignore_ascii_case("quoted-printable")
                });
            let is_digest = is(&part.content_subtype, "digest");
            if depth >= MAX_DEPTH && (boundary.is_some() || encapsulated) {
                self.well_formed = false;
                (self.leaf_body(body_start), Vec::new())
            } else if let Some(b) = boundary {
                self.multipart(body_start, b, depth, is_digest)
            } else if encapsulated {
                let (child, stop) = self.entity(body_start, depth + 1, false);
                (stop, child.into_iter().collect())
            } else {
                (self.leaf_body(body_start), Vec::new())
            }
        };
        let end = stop.cut(len).max(body_start);
        let part = &mut self.parts[slot];
        part.offset_end = end as u64;
        part.body_lines = self.raw[body_start..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        part.children = children;
        (Some(slot), stop)
    }

    fn leaf_body(&self, start: usize) -> Stop {
        self.next_delimiter(start).map_or(Stop::End, Stop::Delim)
    }

    /// Finds the end of the header block starting at `start`: (end of header, start of body,
    /// delimiter met before any body).
    fn header(&self, start: usize) -> (usize, usize, Option<Delim>) {
        let len = self.raw.len();
        let mut line = start;
        while line < len {
            let next = self.line_end(line);
            if self.raw[line] == b'-' {
                if let Some(d) = self.delimiter_at(line, start) {
                    return (d.cut, d.cut, Some(d));
                }
            }
            if matches!(&self.raw[line..next], b"\r\n" | b"\n") {
                return (next, next, None);
            }
            line = next;
        }
        (len, len, None)
    }

    /// The parts of a multipart body starting at `start` with boundary `boundary`.
    fn multipart(
        &mut self,
        start: usize,
        boundary: Vec<u8>,
        depth: usize,
        digest: bool,
    ) -> (Stop, Vec<usize>) {
        let level = self.stack.len();
        self.stack.push(boundary);
        let mut children = Vec::new();
        // The preamble ends at the first delimiter (RFC 2046 §5.1.1).
        let mut found = self.next_delimiter(start);
        let stop = loop {
            let Some(d) = found else {
                // No close-delimiter: the multipart runs to the end of the message.
                self.well_formed = false;
                break Stop::End;
            };
            if d.level < level {
                // An enclosing multipart's delimiter ends this one even without its
                // close-delimiter.
                self.well_formed = false;
                break Stop::Delim(d);
            }
            if d.close {
                // The epilogue runs to the next delimiter of an enclosing multipart. When that
                // follows at once, the line ending of the close-delimiter line is the CRLF that
                // starts it (RFC 2046 §5.1.1), so this body ends with the close-delimiter.
                self.stack.truncate(level);
                let mut floor = d.next;
                if floor > 0 && self.raw[floor - 1] == b'\n' {
                    floor -= 1;
                    if floor > 0 && self.raw[floor - 1] == b'\r' {
                        floor -= 1;
                    }
                }
                break self
                    .next_delimiter_after(d.next, floor)
                    .map_or(Stop::End, Stop::Delim);
            }
            let (child, stop) = self.entity(d.next, depth + 1, digest);
            children.extend(child);
            match stop {
                Stop::Delim(next) => found = Some(next),
                Stop::End => {
                    self.well_formed = false;
                    break Stop::End;
                }
            }
        };
        self.stack.truncate(level);
        (stop, children)
    }
}

fn is(value: &str, name: &str) -> bool {
    value.eq_ignore_ascii_case(name)
}

/// Bytes of a header value as text; bytes that are not UTF-8 cannot be kept in the metadata.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The unfolded (RFC 5322 §2.2.3) Content-* field values of a header block.
fn content_fields(header: &[u8]) -> ContentFields {
    let mut out = ContentFields::default();
    let mut current: Option<(Vec<u8>, Vec<u8>)> = None;
    let finish = |field: Option<(Vec<u8>, Vec<u8>)>, out: &mut ContentFields| {
        let Some((name, value)) = field else { return };
        let slot = match name.to_ascii_lowercase().as_slice() {
            b"content-type" => &mut out.content_type,
            b"content-transfer-encoding" => &mut out.encoding,
            b"content-id" => &mut out.id,
            b"content-description" => &mut out.description,
            b"content-disposition" => &mut out.disposition,
            b"content-language" => &mut out.language,
            b"content-location" => &mut out.location,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value.trim_ascii().to_vec());
        }
    };
    for line in header.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some((_, value)) = current.as_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        finish(current.take(), &mut out);
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            current = Some((
                line[..colon].trim_ascii().to_vec(),
                line[colon + 1..].to_vec(),
            ));
        }
    }
    finish(current.take(), &mut out);
    out
}

/// A lexer for structured MIME field values (RFC 2045 §5.1, RFC 5322 §3.2.2 comments).
struct Lex<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lex<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lex { s, i: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_cfws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'(' => {
                    let mut depth = 0usize;
                    while let Some(c) = self.peek() {
                        self.i += 1;
                        match c {
                            b'\\' => self.i += 1,
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    self.i = self.i.min(self.s.len());
                }
                _ => break,
            }
        }
    }

    /// RFC 2045 §5.1 token; octets above 127 are taken as token characters, as mail has them.
    fn token(&mut self) -> &'a [u8] {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c <= b' ' || c == 0x7f || b"()<>@,;:\\\"/[]?=".contains(&c) {
                break;
            }
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// A quoted-string (the opening quote is next), unquoted; an unterminated one runs to the end.
    fn quoted(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(q) = self.peek() {
                        out.push(q);
                        self.i += 1;
                    }
                }
                // Folding inside a quoted string is not part of the value (RFC 5322 §3.2.4).
                b'\r' | b'\n' => {}
                _ => out.push(c),
            }
        }
        out
    }

    /// Skips what cannot be understood up to the next ';' outside quotes.
    fn skip_junk(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b';' => return,
                b'"' => {
                    self.quoted();
                }
                _ => self.i += 1,
            }
        }
    }
}

/// Parameters as (attribute, value), in the order written.
pub type Params = Vec<(String, String)>;

/// `type "/" subtype *(";" parameter)` (RFC 2045 §5.1), type and subtype as written. None for a
/// field without a type and a subtype, which RFC 2045 §5.2 treats as absent.
pub fn parse_content_type(v: &[u8]) -> Option<(String, String, Params)> {
    let mut lex = Lex::new(v);
    lex.skip_cfws();
    let t = lex.token();
    lex.skip_cfws();
    if t.is_empty() || lex.peek() != Some(b'/') {
        return None;
    }
    lex.i += 1;
    lex.skip_cfws();
    let s = lex.token();
    if s.is_empty() {
        return None;
    }
    Some((text(t), text(s), parameters(&mut lex)))
}

/// `disposition-type *(";" disposition-parm)` (RFC 2183 §2).
fn parse_disposition(v: &[u8]) -> Option<(String, Params)> {
    let mut lex = Lex::new(v);
    lex.skip_cfws();
    let t = lex.token();
    if t.is_empty() {
        return None;
    }
    Some((text(t), parameters(&mut lex)))
}

/// The parameters after a media or disposition type, as written, with RFC 2231 continuations
/// joined. A parameter that does not parse is skipped up to the next ';', and the ones after it
/// are still read: each stands on its own (RFC 2045 §5.1).
fn parameters(lex: &mut Lex<'_>) -> Params {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        lex.skip_cfws();
        match lex.peek() {
            None => break,
            Some(b';') => lex.i += 1,
            Some(_) => {
                lex.skip_junk();
                continue;
            }
        }
        lex.skip_cfws();
        let name = lex.token();
        lex.skip_cfws();
        if name.is_empty() || lex.peek() != Some(b'=') {
            lex.skip_junk();
            continue;
        }
        lex.i += 1;
        lex.skip_cfws();
        let value = match lex.peek() {
            Some(b'"') => lex.quoted(),
            // An encoded-word written where a token belongs (name==?UTF-8?B?...?=) is common
            // enough to keep whole rather than cut at its first '='.
            Some(b'=') => {
                let start = lex.i;
                while lex
                    .peek()
                    .is_some_and(|c| !matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n'))
                {
                    lex.i += 1;
                }
                lex.s[start..lex.i].to_vec()
            }
            _ => lex.token().to_vec(),
        };
        out.push((name.to_vec(), value));
    }
    join_continuations(out)
        .into_iter()
        .map(|(k, v)| (text(&k), text(&v)))
        .collect()
}

/// RFC 2231 §3-4: `name*0`, `name*1*`... are one parameter cut in sections. They are joined in
/// order into `name` (or `name*` when any section is extended, non-extended sections then being
/// %-encoded so the whole is one extended value), at the place of the first section. Nothing is
/// decoded: IMAP returns parameters as sent, and `name*` is how the message has it.
fn join_continuations(params: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    /// (section number, extended) of a sectioned parameter name.
    fn section(name: &[u8]) -> Option<(&[u8], u32, bool)> {
        let star = name.iter().position(|&b| b == b'*')?;
        let (base, rest) = (&name[..star], &name[star + 1..]);
        let (digits, extended) = match rest.strip_suffix(b"*") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        if base.is_empty() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // "01" is not a section number (RFC 2231 §3: no leading zeros).
        if digits.len() > 1 && digits[0] == b'0' || digits.len() > 4 {
            return None;
        }
        let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
        Some((base, n, extended))
    }
    if !params.iter().any(|(k, _)| section(k).is_some()) {
        return params;
    }
    enum Entry {
        Plain(usize),
        Joined(usize),
    }
    type Sections<'p> = Vec<(u32, bool, &'p [u8])>;
    // Grouped in one pass: a header may hold very many parameters.
    let mut order: Vec<Entry> = Vec::new();
    let mut groups: Vec<(&[u8], Sections<'_>)> = Vec::new();
    let mut by_name: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    for (i, (name, value)) in params.iter().enumerate() {
        let Some((base, n, extended)) = section(name) else {
            order.push(Entry::Plain(i));
            continue;
        };
        let g = *by_name.entry(base.to_ascii_lowercase()).or_insert_with(|| {
            groups.push((base, Vec::new()));
            order.push(Entry::Joined(groups.len() - 1));
            groups.len() - 1
        });
        groups[g].1.push((n, extended, value.as_slice()));
    }
    let mut out = Vec::with_capacity(order.len());
    for entry in order {
        let g = match entry {
            Entry::Plain(i) => {
                out.push(params[i].clone());
                continue;
            }
            Entry::Joined(g) => &mut groups[g],
        };
        g.1.sort_by_key(|s| s.0);
        // Sections count from 0 without gaps; what follows a gap has lost its place.
        let run =
            g.1.iter()
                .enumerate()
                .take_while(|(i, s)| s.0 as usize == *i)
                .count();
        if run == 0 {
            continue;
        }
        let extended = g.1[..run].iter().any(|s| s.1);
        let mut joined = Vec::new();
        for &(_, ext, v) in &g.1[..run] {
            if extended && !ext {
                percent_encode(&mut joined, v);
            } else {
                joined.extend_from_slice(v);
            }
        }
        let mut key = g.0.to_vec();
        if extended {
            key.push(b'*');
        }
        out.push((key, joined));
    }
    out
}

/// RFC 2231 §7 extended-other-values: attribute-chars as they are, other octets as %XX.
fn percent_encode(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        let plain = b.is_ascii_graphic() && !b"*'%()<>@,;:\\\"/[]?=".contains(&b);
        if plain {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// `raw` with every bare LF made CRLF (RFC 5322 §2.3: CR and LF only occur together), except
/// inside bodies sent with Content-Transfer-Encoding: binary (RFC 3030, RFC 3516), whose octets
/// are data. A lone CR is left alone: it is not a line ending either way.
pub fn normalize_line_endings(raw: Vec<u8>) -> Vec<u8> {
    let bare_lf = |i: usize| raw[i] == b'\n' && (i == 0 || raw[i - 1] != b'\r');
    if !(0..raw.len()).any(bare_lf) {
        return raw;
    }
    let structure = parse(&raw);
    let mut keep: Vec<(usize, usize)> = structure
        .parts
        .iter()
        .filter(|p| {
            p.children.is_empty()
                && p.encoding
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case("binary"))
        })
        .map(|p| (p.offset_body as usize, p.offset_end as usize))
        .collect();
    keep.sort_unstable();
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut k = keep.iter().peekable();
    for (i, &b) in raw.iter().enumerate() {
        while k.peek().is_some_and(|r| r.1 <= i) {
            k.next();
        }
        let in_binary = k.peek().is_some_and(|r| r.0 <= i && i < r.1);
        if !in_binary && bare_lf(i) {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(raw: &[u8], a: u64, b: u64) -> &[u8] {
        &raw[a as usize..b as usize]
    }

    fn body<'a>(raw: &'a [u8], p: &PartMeta) -> &'a [u8] {
        bytes(raw, p.offset_body, p.offset_end)
    }

    fn mime<'a>(raw: &'a [u8], p: &PartMeta) -> &'a [u8] {
        bytes(raw, p.offset_header, p.offset_body)
    }

    #[test]
    fn content_type_as_written() {
        let (t, s, p) =
            parse_content_type(b"Multipart/Mixed; Boundary=abc ; x-empty=\"\"; X-Case=MiXeD")
                .unwrap();
        assert_eq!((t.as_str(), s.as_str()), ("Multipart", "Mixed"));
        assert_eq!(
            p,
            vec![
                ("Boundary".into(), "abc".into()),
                ("x-empty".into(), "".into()),
                ("X-Case".into(), "MiXeD".into())
            ]
        );
        let (_, _, p) =
            parse_content_type(b"text/plain (plain text); charset=us-ascii (ASCII)").unwrap();
        assert_eq!(p, vec![("charset".into(), "us-ascii".into())]);
        for bad in [
            &b"text"[..],
            b"image/; name=x",
            b"",
            b"/plain",
            b"(only a comment)",
        ] {
            assert_eq!(parse_content_type(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encoded_words_and_rfc2231_stay_as_sent() {
        let (_, _, p) = parse_content_type(
            b"text/plain; charset=EUC-KR;\r\n name*=euc-kr'ko'%C8%B8.txt; n=\"=?UTF-8?B?7JWI?=\"",
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                ("charset".into(), "EUC-KR".into()),
                ("name*".into(), "euc-kr'ko'%C8%B8.txt".into()),
                ("n".into(), "=?UTF-8?B?7JWI?=".into())
            ]
        );
        let (_, p) = parse_disposition(
            b"attachment;\r\n filename*1*=%EA%B8.pdf;\r\n filename*0*=UTF-8''2026%EB; size=3",
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                ("filename*".into(), "UTF-8''2026%EB%EA%B8.pdf".into()),
                ("size".into(), "3".into())
            ]
        );
        let (_, p) =
            parse_disposition(b"attachment; filename*0=\"a b \"; filename*1=\"c.pdf\"").unwrap();
        assert_eq!(p, vec![("filename".into(), "a b c.pdf".into())]);
        let (_, p) = parse_disposition(b"attachment; f*0*=UTF-8''%41; f*1=\"b c\"").unwrap();
        assert_eq!(p, vec![("f*".into(), "UTF-8''%41b%20c".into())]);
    }

    #[test]
    fn many_parameters_take_linear_time() {
        let mut v = b"text/plain".to_vec();
        for i in 0..50_000 {
            v.extend_from_slice(format!("; p{i}*0=a").as_bytes());
            if i < 9000 {
                v.extend_from_slice(format!("; q*{i}=b").as_bytes());
            }
        }
        let (_, _, p) = parse_content_type(&v).unwrap();
        assert_eq!(p.len(), 50_001);
        assert_eq!(p[1].0, "q");
        assert_eq!(p[1].1.len(), 9000);
    }

    #[test]
    fn broken_parameters_do_not_take_the_others_along() {
        let (_, _, p) =
            parse_content_type(b"text/plain; charset=utf-8; x-flag; format=flowed").unwrap();
        assert_eq!(
            p,
            vec![
                ("charset".into(), "utf-8".into()),
                ("format".into(), "flowed".into())
            ]
        );
        let (_, _, p) =
            parse_content_type(b"application/pdf; name=Statement December 2026.pdf; NAME=dup.pdf")
                .unwrap();
        assert_eq!(
            p,
            vec![
                ("name".into(), "Statement".into()),
                ("NAME".into(), "dup.pdf".into())
            ]
        );
        let (_, _, p) = parse_content_type(b"text/plain; name==?UTF-8?B?7JWI?=").unwrap();
        assert_eq!(p, vec![("name".into(), "=?UTF-8?B?7JWI?=".into())]);
    }

    #[test]
    fn boundary_only_at_the_start_of_a_line() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nsee --b here\r\n--b\r\n\r\ntwo\r\n--b--\r\n";
        let s = parse(raw);
        let root = &s.parts[0];
        assert_eq!(root.children.len(), 2);
        assert_eq!(body(raw, &s.parts[1]), b"see --b here");
        assert_eq!(body(raw, &s.parts[2]), b"two");
        assert!(s.well_formed);
    }

    #[test]
    fn a_line_starting_with_the_delimiter_is_a_delimiter() {
        // RFC 2046 §5.1.1 note to implementors: a match of the start of the line suffices.
        let raw = b"Content-Type: multipart/mixed; boundary=sep\r\n\r\n--sep\r\n\r\none\r\n--separator\r\nrest\r\n--sep--\r\n";
        let s = parse(raw);
        assert_eq!(s.parts[0].children.len(), 2);
        assert_eq!(body(raw, &s.parts[1]), b"one");
        assert_eq!(mime(raw, &s.parts[2]), b"rest");
        assert_eq!(body(raw, &s.parts[2]), b"");
    }

    #[test]
    fn inner_boundary_extending_the_outer_one() {
        let raw = b"Content-Type: multipart/mixed; boundary=LL\r\n\r\n--LL\r\nContent-Type: multipart/alternative; boundary=LL2\r\n\r\n--LL2\r\n\r\na\r\n--LL2--\r\n--LL\r\n\r\nb\r\n--LL--\r\n";
        let s = parse(raw);
        let root = &s.parts[0];
        assert_eq!(root.children.len(), 2);
        let alt = &s.parts[root.children[0]];
        assert_eq!(alt.children.len(), 1);
        assert_eq!(body(raw, alt), b"--LL2\r\n\r\na\r\n--LL2--");
        assert_eq!(body(raw, &s.parts[root.children[1]]), b"b");
        assert!(s.well_formed);
    }

    #[test]
    fn outer_delimiter_ends_an_unclosed_inner_multipart() {
        let raw = b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\na\r\n--i\r\n\r\nb\r\n--o\r\n\r\nc\r\n--o--\r\n";
        let s = parse(raw);
        let root = &s.parts[0];
        assert_eq!(root.children.len(), 2);
        let inner = &s.parts[root.children[0]];
        assert_eq!(inner.children.len(), 2);
        assert_eq!(body(raw, &s.parts[inner.children[1]]), b"b");
        assert!(body(raw, inner).ends_with(b"\r\n\r\nb"));
        assert_eq!(body(raw, &s.parts[root.children[1]]), b"c");
        assert!(!s.well_formed);
    }

    #[test]
    fn empty_parts_and_headers_without_blank_line() {
        let raw = b"Content-Type: multipart/form-data; boundary=f\r\n\r\n--f\r\n\r\nno header\r\n--f\r\nContent-Disposition: form-data; name=c\r\n\r\n--f\r\n--f\r\nContent-Transfer-Encoding: base64\r\n\r\n\r\n--f--\r\n";
        let s = parse(raw);
        let kids: Vec<&PartMeta> = s.parts[0].children.iter().map(|&c| &s.parts[c]).collect();
        assert_eq!(kids.len(), 4);
        assert_eq!(mime(raw, kids[0]), b"\r\n");
        assert_eq!(body(raw, kids[0]), b"no header");
        assert_eq!(
            mime(raw, kids[1]),
            b"Content-Disposition: form-data; name=c\r\n"
        );
        assert_eq!(body(raw, kids[1]), b"");
        assert_eq!(mime(raw, kids[2]), b"");
        assert_eq!(body(raw, kids[2]), b"");
        assert_eq!(body(raw, kids[3]), b"");
        assert_eq!(kids[3].encoding.as_deref(), Some("base64"));
    }

    #[test]
    fn first_content_fields_win_and_invalid_type_is_text_plain() {
        let raw = b"Content-Type: text/plain\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n\r\nx\r\n";
        let p = &parse(raw).parts[0];
        assert_eq!(p.content_subtype, "plain");
        assert_eq!(p.encoding.as_deref(), Some("7bit"));
        let p = &parse(b"Content-Type: text; charset=utf-8\r\n\r\nx").parts[0];
        assert_eq!(
            (p.content_type.as_str(), p.content_subtype.as_str()),
            ("text", "plain")
        );
        assert!(p.params.is_empty());
    }

    #[test]
    fn header_only_message_in_a_multipart() {
        let raw = b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: message/rfc822\r\n\r\nFrom: a@b\r\nSubject: s\r\n--m--\r\n";
        let s = parse(raw);
        let msg = &s.parts[s.parts[0].children[0]];
        assert_eq!(body(raw, msg), b"From: a@b\r\nSubject: s");
        let inner = &s.parts[msg.children[0]];
        assert_eq!(mime(raw, inner), b"From: a@b\r\nSubject: s");
        assert_eq!(body(raw, inner), b"");
    }

    #[test]
    fn other_message_types_are_leaves() {
        let raw = b"Content-Type: multipart/report; boundary=r\r\n\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nAction: failed\r\n--r--\r\n";
        let s = parse(raw);
        let ds = &s.parts[s.parts[0].children[0]];
        assert!(ds.children.is_empty());
        assert_eq!(
            body(raw, ds),
            b"Reporting-MTA: dns; x\r\n\r\nAction: failed"
        );
    }

    #[test]
    fn bare_lf_becomes_crlf_except_in_binary_bodies() {
        let raw = b"A: b\nContent-Type: multipart/mixed; boundary=x\n\n--x\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\n\x01\n--x\nContent-Type: text/plain\n\nline\rcr\n--x--\n".to_vec();
        let out = normalize_line_endings(raw);
        assert_eq!(
            out,
            b"A: b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\n\x01\r\n--x\r\nContent-Type: text/plain\r\n\r\nline\rcr\r\n--x--\r\n"
        );
        let crlf = b"A: b\r\n\r\nbody\r\n".to_vec();
        assert_eq!(normalize_line_endings(crlf.clone()), crlf);
    }

    /// Offsets must always be in order and inside the message, whatever the input.
    fn check(raw: &[u8]) {
        let s = parse(raw);
        assert!(!s.parts.is_empty());
        assert!(s.parts.len() <= MAX_PARTS);
        for (i, p) in s.parts.iter().enumerate() {
            assert!(p.offset_header <= p.offset_body, "{i} {p:?}");
            assert!(p.offset_body <= p.offset_end, "{i} {p:?}");
            assert!(p.offset_end as usize <= raw.len());
            for &c in &p.children {
                assert!(c > i && c < s.parts.len());
                let child = &s.parts[c];
                assert!(child.offset_header >= p.offset_body && child.offset_end <= p.offset_end);
            }
        }
        let n = normalize_line_endings(raw.to_vec());
        assert!(n.len() >= raw.len());
    }

    #[test]
    fn any_input_parses() {
        const PIECES: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b"\r",
            b"--",
            b"--a",
            b"--a--",
            b"--ab",
            b"--b",
            b"Content-Type: multipart/mixed; boundary=a\r\n",
            b"Content-Type: multipart/digest; boundary=\"ab\"\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Type: message/global\r\n",
            b"Content-Transfer-Encoding: binary\n",
            b"Content-Type: multipart/x; boundary=b\n",
            b"Content-Type: text/plain; a*0*=x; a*1=\"y\"; b*=''z; (c\r\n",
            b" folded\r\n",
            b"x: y",
            b"\"",
            b"(",
            b"\\",
            b"\xff\x00",
            b"body text ",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..4000 {
            let mut raw = Vec::new();
            let n = next() % 40;
            for _ in 0..n {
                let r = next();
                if r % 8 == 0 {
                    raw.push((r >> 8) as u8);
                } else {
                    raw.extend_from_slice(PIECES[(r >> 8) as usize % PIECES.len()]);
                }
            }
            check(&raw);
        }
        for raw in [
            &b""[..],
            b"\n",
            b"--",
            b"\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a",
        ] {
            check(raw);
        }
    }

    #[test]
    fn nesting_and_part_count_are_bounded() {
        let mut raw = Vec::new();
        for i in 0..500 {
            raw.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"b{i}.\"\r\n\r\n--b{i}.\r\n")
                    .as_bytes(),
            );
        }
        raw.extend_from_slice(b"Content-Type: text/plain\r\n\r\nleaf\r\n");
        let s = parse(&raw);
        assert!(s.parts.len() <= MAX_DEPTH + 2);
        assert!(!s.well_formed);
        let mut raw = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n".to_vec();
        for _ in 0..5000 {
            raw.extend_from_slice(b"--a\r\n\r\nx\r\n");
        }
        let s = parse(&raw);
        assert_eq!(s.parts.len(), MAX_PARTS);
    }
}
