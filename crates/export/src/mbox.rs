//! mbox (RFC 4155) in its mboxrd variant: every message begins with a "From sender date" line,
//! lines of the message matching `^>*From ` get one more ">" (so no line of a message can be
//! taken for a separator, and readers can undo the quoting exactly), and each message is
//! followed by an empty line.
//!
//! Layout: one file per mailbox under a directory, `DIR/INBOX.mbox`, `DIR/Archive.mbox`,
//! `DIR/Archive/2024.mbox` (levels escaped by [`crate::name_to_path`]); or one file when a
//! single mailbox is exported to a path ending in `.mbox`.
//!
//! Flags travel as the conventional `Status:` (R = \Seen, O = not new) and `X-Status:`
//! (A = \Answered, F = \Flagged, T = \Draft, D = \Deleted) fields, and keywords as
//! `X-Keywords:`, which mutt, Dovecot and Python's `mailbox` read. We put them first in the
//! header, after our own `X-Trimaran-Mbox:` field, which says how the stored bytes were
//! written so that import can give them back exactly:
//!
//! - `1 lf`: the message had CRLF line ends only (the usual case) and they became LF, the
//!   convention of mbox files (RFC 4155 §2 leaves line ends to the local system);
//! - `1 raw`: the message had a bare LF somewhere, or ended without a line end, so it is
//!   written as stored; `nonl` adds that the writer added the final LF.
//!
//! Messages without our field (foreign files) lose their Status, X-Status and X-Keywords fields
//! into flags and keywords, and Unix LF line ends become CRLF ([`crate::crlf_if_unix`]).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use trimaran_core::store::{flags, MailboxRecord};

use crate::{crlf_if_unix, name_to_path, path_to_name, Exported, Importer, Incoming, Writer};

const MARKER: &str = "X-Trimaran-Mbox: ";

/// Where an mbox export goes.
pub enum Target {
    /// One file per mailbox below this directory.
    Tree(PathBuf),
    /// One mailbox into this one file.
    File(PathBuf),
}

pub struct MboxWriter {
    target: Target,
    out: Option<(PathBuf, BufWriter<File>)>,
}

impl MboxWriter {
    pub fn new(target: Target) -> Result<MboxWriter> {
        if let Target::Tree(dir) = &target {
            crate::new_dir(dir)?;
        }
        Ok(MboxWriter { target, out: None })
    }

    fn close(&mut self) -> Result<()> {
        if let Some((path, mut out)) = self.out.take() {
            out.flush()
                .and_then(|_| out.get_ref().sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

impl Writer for MboxWriter {
    fn begin_mailbox(&mut self, mailbox: &MailboxRecord) -> Result<()> {
        self.close()?;
        let path = match &self.target {
            Target::File(path) => {
                if self.out.is_some() {
                    bail!("one .mbox file holds one mailbox");
                }
                path.clone()
            }
            Target::Tree(dir) => {
                let levels = name_to_path(&mailbox.name);
                let (last, parents) = levels.split_last().expect("a name has a level");
                let mut path = dir.clone();
                for p in parents {
                    path.push(p);
                }
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                path.join(format!("{last}.mbox"))
            }
        };
        let file =
            File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
        self.out = Some((path, BufWriter::with_capacity(1 << 16, file)));
        Ok(())
    }

    fn message(&mut self, m: &Exported) -> Result<()> {
        let (path, out) = self.out.as_mut().expect("begin_mailbox comes first");
        write_message(out, m).with_context(|| format!("writing {}", path.display()))
    }

    fn finish(mut self) -> Result<Vec<String>> {
        self.close()?;
        Ok(Vec::new())
    }
}

fn write_message<W: Write>(out: &mut W, m: &Exported) -> std::io::Result<()> {
    let body = m.body;
    let sender = envelope_sender(body);
    writeln!(out, "From {sender} {}", asctime(m.entry.internal_date))?;
    let crlf_only = body.ends_with(b"\r\n") && !has_bare_lf(body);
    let ends_open = !body.ends_with(b"\n");
    let mode = match (crlf_only, ends_open) {
        (true, _) => "lf",
        (false, false) => "raw",
        (false, true) => "raw nonl",
    };
    writeln!(out, "{MARKER}1 {mode}")?;
    let bits = m.entry.flags;
    let mut status = String::new();
    if bits & flags::SEEN != 0 {
        status.push('R');
    }
    status.push('O');
    let mut xstatus = String::new();
    for (bit, letter) in [
        (flags::ANSWERED, 'A'),
        (flags::FLAGGED, 'F'),
        (flags::DRAFT, 'T'),
        (flags::DELETED, 'D'),
    ] {
        if bits & bit != 0 {
            xstatus.push(letter);
        }
    }
    writeln!(out, "Status: {status}")?;
    writeln!(out, "X-Status: {xstatus}")?;
    writeln!(out, "X-Keywords: {}", m.entry.keywords.join(" "))?;
    let mut rest = body;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        if is_from_line(line) {
            out.write_all(b">")?;
        }
        if crlf_only && line.ends_with(b"\r\n") {
            out.write_all(&line[..line.len() - 2])?;
            out.write_all(b"\n")?;
        } else {
            out.write_all(line)?;
        }
    }
    if ends_open {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// A line that mboxrd quotes: `>*From `.
fn is_from_line(line: &[u8]) -> bool {
    let unquoted = line
        .iter()
        .position(|&b| b != b'>')
        .map_or(&[][..], |i| &line[i..]);
    unquoted.starts_with(b"From ")
}

fn has_bare_lf(body: &[u8]) -> bool {
    body.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || body[i - 1] != b'\r'))
}

/// The Return-Path address when the header has one (RFC 5321 §4.4), else MAILER-DAEMON, the
/// customary stand-in; never anything with a space, which would break the From_ line.
fn envelope_sender(body: &[u8]) -> String {
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() > 12 && line[..12].eq_ignore_ascii_case(b"Return-Path:") {
            let value = String::from_utf8_lossy(&line[12..]);
            let addr = value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim();
            if !addr.is_empty() && addr.chars().all(|c| c.is_ascii_graphic()) {
                return addr.to_string();
            }
            break;
        }
    }
    "MAILER-DAEMON".to_string()
}

const ASCTIME: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
);

/// The From_ line's date: UTC in the format of C's asctime (RFC 4155 §2).
fn asctime(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(ASCTIME).ok())
        .unwrap_or_else(|| "Thu Jan  1 00:00:00 1970".into())
}

/// The date of a From_ line, if it has one we can read: the asctime date after the sender,
/// perhaps followed by a zone or "remote from" (ignored: it is read as UTC).
fn from_line_date(line: &str) -> Option<i64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    // From sender Www Mmm dd hh:mm:ss yyyy
    for start in 2..words.len() {
        if words.len() < start + 5 {
            break;
        }
        let text = format!(
            "{} {} {:>2} {} {}",
            words[start],
            words[start + 1],
            words[start + 2],
            words[start + 3],
            words[start + 4]
        );
        if let Ok(d) = time::PrimitiveDateTime::parse(&text, ASCTIME) {
            return Some(d.assume_utc().unix_timestamp());
        }
    }
    None
}

/// Imports an mbox file, or every `*.mbox` file below a directory.
pub fn import(importer: &mut Importer, from: &Path) -> Result<()> {
    let meta = std::fs::metadata(from).with_context(|| format!("reading {}", from.display()))?;
    if meta.is_file() {
        let stem = from
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".mbox").unwrap_or(n));
        let Some(stem) = stem else {
            bail!("{}: the file name is not UTF-8", from.display());
        };
        let mailbox = path_to_name(&[stem])
            .with_context(|| format!("{}: no mailbox name in the file name", from.display()))?;
        return import_file(importer, from, &mailbox);
    }
    let mut files = Vec::new();
    collect(importer, from, &mut Vec::new(), &mut files)?;
    for (path, mailbox) in files {
        import_file(importer, &path, &mailbox)?;
    }
    Ok(())
}

/// The `.mbox` files below `dir` with their mailbox names, parents first.
fn collect(
    importer: &mut Importer,
    dir: &Path,
    levels: &mut Vec<String>,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            importer.skip(format!("{}: the name is not UTF-8", path.display()));
            continue;
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            levels.push(name);
            collect(importer, &path, levels, out)?;
            levels.pop();
        } else if let (true, Some(stem)) = (kind.is_file(), name.strip_suffix(".mbox")) {
            let mut all = levels.clone();
            all.push(stem.to_string());
            match path_to_name(&all) {
                Ok(mailbox) => out.push((path, mailbox)),
                Err(e) => importer.skip(format!("{}: {e:#}", path.display())),
            }
        } else {
            importer.note(format!("{}: not a .mbox file; ignored", path.display()));
        }
    }
    Ok(())
}

fn import_file(importer: &mut Importer, path: &Path, mailbox: &str) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // An empty file is an empty mailbox; anything else makes one once it proves to be mbox.
    if file.metadata()?.len() == 0 {
        if let Err(e) = importer.mailbox(mailbox, None) {
            importer.skip(format!("{}: {e:#}", path.display()));
        }
        return Ok(());
    }
    // Room for the quoting and our fields over the largest message taken.
    let cap = importer.max_size() + importer.max_size() / 8 + 64 * 1024;
    let mut messages = Messages::new(BufReader::with_capacity(1 << 16, file), cap);
    let mut number = 0u64;
    loop {
        let next = messages
            .next()
            .with_context(|| format!("reading {}", path.display()))?;
        let (from, content) = match next {
            Next::End => return Ok(()),
            Next::NotMbox => {
                importer.skip(format!(
                    "{}: not an mbox file (it does not begin with a \"From \" line)",
                    path.display()
                ));
                return Ok(());
            }
            Next::Message(from, content) => (from, content),
        };
        if number == 0 {
            if let Err(e) = importer.mailbox(mailbox, None) {
                importer.skip(format!("{}: {e:#}", path.display()));
                return Ok(());
            }
        }
        number += 1;
        let origin = format!("{} message {number}", path.display());
        let Some(content) = content else {
            importer.skip(format!(
                "{origin}: larger than the maximum message size ({} bytes)",
                importer.max_size()
            ));
            continue;
        };
        match decode(&from, content, mailbox, origin.clone()) {
            Ok(Some(m)) => importer.add(m)?,
            Ok(None) => importer.note(format!("{origin}: folder data message (X-IMAP) ignored")),
            Err(why) => importer.skip(format!("{origin}: {why}")),
        }
    }
}

/// What [`Messages::next`] found.
enum Next {
    /// A From_ line and what follows it up to the next one; None when that is over the cap.
    Message(String, Option<Vec<u8>>),
    /// Text before any From_ line.
    NotMbox,
    End,
}

/// The messages of an mbox stream, one at a time.
struct Messages<R> {
    reader: R,
    cap: u64,
    from: Option<String>,
}

impl<R: BufRead> Messages<R> {
    fn new(reader: R, cap: u64) -> Messages<R> {
        Messages {
            reader,
            cap,
            from: None,
        }
    }

    fn next(&mut self) -> std::io::Result<Next> {
        let mut line = Vec::new();
        let mut content = Some(Vec::new());
        loop {
            line.clear();
            let n = self.reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.starts_with(b"From ") {
                let next = (n != 0).then(|| String::from_utf8_lossy(&line).trim_end().to_string());
                match std::mem::replace(&mut self.from, next) {
                    Some(from) => return Ok(Next::Message(from, content)),
                    None if n == 0 => return Ok(Next::End),
                    None => continue,
                }
            }
            if self.from.is_none() {
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                return Ok(Next::NotMbox);
            }
            if let Some(c) = &mut content {
                if c.len() as u64 + line.len() as u64 > self.cap {
                    content = None;
                } else {
                    c.extend_from_slice(&line);
                }
            }
        }
    }
}

/// One message of an mbox file as it goes into the store; None for a folder's bookkeeping
/// message, Err with the reason to skip it.
fn decode(
    from: &str,
    mut content: Vec<u8>,
    mailbox: &str,
    origin: String,
) -> std::result::Result<Option<Incoming>, String> {
    // Undo the mboxrd quoting first: it was applied last.
    let mut unquoted = Vec::with_capacity(content.len());
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b">") && is_from_line(line) {
            unquoted.extend_from_slice(&line[1..]);
        } else {
            unquoted.extend_from_slice(line);
        }
    }
    content = unquoted;
    let mut m = Incoming {
        mailbox: mailbox.to_string(),
        raw: Vec::new(),
        flags: 0,
        keywords: Vec::new(),
        internal_date: from_line_date(from),
        expect: None,
        origin,
    };
    if content.starts_with(MARKER.as_bytes()) {
        let mut lines = content.splitn(5, |&b| b == b'\n');
        let marker = String::from_utf8_lossy(lines.next().unwrap_or_default()).to_string();
        let mut fields = Vec::new();
        for name in ["Status:", "X-Status:", "X-Keywords:"] {
            let line = String::from_utf8_lossy(lines.next().unwrap_or_default()).to_string();
            match line.strip_prefix(name) {
                Some(v) => fields.push(v.trim().to_string()),
                None => return Err(format!("{name} missing after {MARKER}")),
            }
        }
        let Some(mut body) = lines.next().map(<[u8]>::to_vec) else {
            return Err("truncated".into());
        };
        // The empty line that ends every message in the file.
        if body.pop() != Some(b'\n') {
            return Err("truncated (no empty line after it)".into());
        }
        let words: Vec<&str> = marker[MARKER.len()..].split_whitespace().collect();
        match words.as_slice() {
            ["1", "lf"] => {
                let mut crlf = Vec::with_capacity(body.len() + body.len() / 32);
                for b in body {
                    if b == b'\n' {
                        crlf.push(b'\r');
                    }
                    crlf.push(b);
                }
                body = crlf;
            }
            ["1", "raw"] => {}
            ["1", "raw", "nonl"] => {
                body.pop();
            }
            _ => return Err(format!("unknown {MARKER}{:?}", &marker[MARKER.len()..])),
        }
        status_flags(&mut m, &fields[0], &fields[1], &fields[2]);
        m.raw = body;
        return Ok(Some(m));
    }
    // A foreign message: the file's separator line is not part of it.
    if content.ends_with(b"\r\n\r\n") {
        content.truncate(content.len() - 2);
    } else if content.ends_with(b"\n\n") {
        content.pop();
    }
    let fields = strip_status_fields(&mut content);
    if fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("X-IMAP")) {
        // The folder's bookkeeping pseudo-message of UW-IMAP and Dovecot, not mail.
        return Ok(None);
    }
    let get = |name: &str| {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (status, xstatus, keywords) = (get("Status"), get("X-Status"), get("X-Keywords"));
    status_flags(&mut m, &status, &xstatus, &keywords);
    m.raw = crlf_if_unix(content);
    Ok(Some(m))
}

fn status_flags(m: &mut Incoming, status: &str, xstatus: &str, keywords: &str) {
    // Writers differ in which field holds which letter; take them from either.
    for c in status.chars().chain(xstatus.chars()) {
        m.flags |= match c {
            'R' => flags::SEEN,
            'A' => flags::ANSWERED,
            'F' => flags::FLAGGED,
            'T' => flags::DRAFT,
            'D' => flags::DELETED,
            _ => 0,
        };
    }
    // Dovecot separates keywords with spaces, some writers with commas.
    m.keywords = keywords
        .split([' ', '\t', ','])
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect();
}

/// Header field names we take flags from (and Dovecot's folder data), removed from a foreign
/// message's header with their continuation lines. Returns the removed fields.
fn strip_status_fields(content: &mut Vec<u8>) -> Vec<(String, String)> {
    const NAMES: [&str; 4] = ["Status", "X-Status", "X-Keywords", "X-IMAP"];
    let mut kept = Vec::with_capacity(content.len());
    let mut removed: Vec<(String, String)> = Vec::new();
    let mut in_header = true;
    let mut dropping = false;
    for line in content.split_inclusive(|&b| b == b'\n') {
        if in_header {
            let bare = line.strip_suffix(b"\n").unwrap_or(line);
            let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
            if bare.is_empty() {
                in_header = false;
            } else if matches!(bare[0], b' ' | b'\t') {
                if dropping {
                    if let Some(last) = removed.last_mut() {
                        last.1.push(' ');
                        last.1.push_str(String::from_utf8_lossy(bare).trim());
                    }
                    continue;
                }
            } else {
                dropping = false;
                if let Some(colon) = bare.iter().position(|&b| b == b':') {
                    let name = String::from_utf8_lossy(&bare[..colon]).trim().to_string();
                    if NAMES.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                        let value = String::from_utf8_lossy(&bare[colon + 1..])
                            .trim()
                            .to_string();
                        removed.push((name, value));
                        dropping = true;
                        continue;
                    }
                }
            }
        }
        kept.extend_from_slice(line);
    }
    *content = kept;
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use trimaran_core::store::{BlobHash, MessageEntry};

    fn entry(flags: i64, keywords: &[&str]) -> MessageEntry {
        MessageEntry {
            uid: 1,
            hash: BlobHash([0; 32]),
            size: 0,
            internal_date: 1_700_000_000,
            flags,
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            modseq: 1,
        }
    }

    fn mailbox() -> MailboxRecord {
        MailboxRecord {
            id: 1,
            account_id: 1,
            name: "INBOX".into(),
            special_use: None,
            uidvalidity: 1,
            uidnext: 2,
            highestmodseq: 1,
        }
    }

    /// Whatever the bytes, what we write comes back identical, with its flags and keywords.
    #[test]
    fn every_body_comes_back_exactly() {
        let bodies: [&[u8]; 10] = [
            b"Subject: a\r\n\r\nplain\r\n",
            b"Subject: b\r\n\r\nFrom x\r\n>From y\r\n\r\nFrom \r\n",
            b"Subject: c\r\n\r\nbare\nLF\r\n",
            b"Subject: d\r\n\r\nno end",
            b"Subject: e\r\n\r\nends in CR\r",
            b"Subject: f\r\n\r\ndouble CR\r\r\n",
            b"x",
            b"Subject: h\r\n\r\n\r\n\r\n",
            b">From the start\nFrom y\n",
            b"Subject: j\n\nunix only\n\n",
        ];
        let mb = mailbox();
        let mut file = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let e = entry(i as i64 & 31, &["k1", "$Label2"][..i % 3]);
            let m = Exported {
                mailbox: &mb,
                entry: &e,
                body,
            };
            write_message(&mut file, &m).unwrap();
        }
        let mut messages = Messages::new(std::io::Cursor::new(file), 1 << 20);
        for (i, body) in bodies.iter().enumerate() {
            let Next::Message(from, Some(content)) = messages.next().unwrap() else {
                panic!("message {i} missing");
            };
            let m = decode(&from, content, "INBOX", String::new())
                .unwrap()
                .unwrap();
            assert_eq!(m.raw, *body, "message {i}");
            assert_eq!(m.flags, i as i64 & 31, "flags of {i}");
            assert_eq!(m.keywords, ["k1", "$Label2"][..i % 3], "keywords of {i}");
            assert_eq!(m.internal_date, Some(1_700_000_000));
        }
        assert!(matches!(messages.next().unwrap(), Next::End));
    }

    #[test]
    fn foreign_messages_lose_their_status_fields() {
        let file = b"From a@b Tue Nov 14 22:13:20 2023\nSubject: x\nStatus: RO\nX-Status: AF\n\
                     X-Keywords: one,two\n\n>From body\n\n";
        let mut messages = Messages::new(&file[..], 1 << 20);
        let Next::Message(from, Some(content)) = messages.next().unwrap() else {
            panic!("no message");
        };
        let m = decode(&from, content, "INBOX", String::new())
            .unwrap()
            .unwrap();
        assert_eq!(m.raw, b"Subject: x\r\n\r\nFrom body\r\n");
        assert_eq!(m.flags, flags::SEEN | flags::ANSWERED | flags::FLAGGED);
        assert_eq!(m.keywords, ["one", "two"]);
        assert!(matches!(
            Messages::new(&b"Subject: no\n"[..], 100).next().unwrap(),
            Next::NotMbox
        ));
    }

    #[test]
    fn from_lines_are_quoted_and_dates_read_back() {
        let mb = mailbox();
        let e = entry(flags::SEEN | flags::FLAGGED, &["$Label1"]);
        let body = b"Return-Path: <a@b.test>\r\nSubject: x\r\n\r\nFrom here\r\n>From there\r\n";
        let mut out = Vec::new();
        write_message(
            &mut out,
            &Exported {
                mailbox: &mb,
                entry: &e,
                body,
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("From a@b.test Tue Nov 14 22:13:20 2023\n"),
            "{text}"
        );
        assert!(text.contains("\nStatus: RO\nX-Status: F\nX-Keywords: $Label1\n"));
        assert!(text.contains("\n>From here\n>>From there\n\n"), "{text}");
        assert_eq!(
            from_line_date("From a@b.test Tue Nov 14 22:13:20 2023"),
            Some(1_700_000_000)
        );
        assert!(from_line_date("From x Tue Nov  4 22:13:20 2023 +0000").is_some());
        assert_eq!(from_line_date("From x garbage"), None);
    }
}
