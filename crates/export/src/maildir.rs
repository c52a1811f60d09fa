//! Maildir (cr.yp.to/proto/maildir.html) in the Maildir++ layout that Dovecot and Courier use:
//! INBOX is the root's `cur`, `new` and `tmp`; every other mailbox is a folder `.Name` beside
//! them, "." standing for the hierarchy separator ("Archive/2024" is `.Archive.2024`), with an
//! empty `maildirfolder` file. A level is written in modified UTF-7 (RFC 3501 §5.1.3), as
//! Dovecot stores folder names by default, with "%" and "." (which would read as a level
//! separator) escaped as `%25` and `%2E`.
//!
//! Each message is one file in `cur`, holding its exact stored bytes, named
//! `<internal date>.M<uid>V<uidvalidity>.trimaran,S=<size>:2,<flags>` with its modification
//! time set to the internal date. The info flags are the spec's: D = \Draft, F = \Flagged,
//! P = passed ($Forwarded), R = \Answered (replied), S = \Seen, T = \Deleted (trashed).
//! Keywords (and $Forwarded again, which Dovecot does not take from P) are letters a–z after them, listed per folder in Dovecot's `dovecot-keywords` file
//! (`<n> <keyword>` per line, a = 0): so at most 26 distinct keywords per folder survive; the
//! export reports any that do not.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use trimaran_core::store::{flags, MailboxRecord, INBOX};
use trimaran_imap::utf7;

use crate::{crlf_if_unix, new_dir, read_capped, Exported, Importer, Incoming, Writer};

const KEYWORD_FILE: &str = "dovecot-keywords";
/// The keyword that the spec's P (passed: resent, forwarded or bounced) stands for (RFC 5550).
const FORWARDED: &str = "$Forwarded";
const MAX_KEYWORD_LETTERS: usize = 26;

/// The folder directory of a mailbox other than INBOX.
pub fn folder_dir(name: &str) -> String {
    let mut out = String::new();
    for level in name.split('/') {
        out.push('.');
        if level.is_empty() {
            out.push_str("%00");
        }
        for c in utf7::encode(level).chars() {
            match c {
                '%' => out.push_str("%25"),
                '.' => out.push_str("%2E"),
                c => out.push(c),
            }
        }
    }
    out
}

/// The mailbox name of a folder directory (without checking it as a mailbox name).
pub fn folder_name(dir: &str) -> Result<String> {
    let Some(rest) = dir.strip_prefix('.') else {
        bail!("{dir:?} is not a Maildir++ folder");
    };
    let mut levels = Vec::new();
    for level in rest.split('.') {
        if level.is_empty() {
            bail!("{dir:?} has an empty level");
        }
        let mut raw = Vec::with_capacity(level.len());
        let bytes = level.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let b = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .with_context(|| format!("{dir:?} has a bad %-escape"))?;
                raw.push(b);
                i += 3;
            } else {
                raw.push(bytes[i]);
                i += 1;
            }
        }
        // Dovecot's folders are modified UTF-7; other writers' may be plain UTF-8.
        let text = utf7::decode(&raw)
            .or_else(|| String::from_utf8(raw).ok())
            .with_context(|| format!("{dir:?} is neither modified UTF-7 nor UTF-8"))?;
        levels.push(text);
    }
    Ok(levels.join("/"))
}

pub struct MaildirWriter {
    root: PathBuf,
    dir: PathBuf,
    keywords: Vec<String>,
    lost: Vec<String>,
}

impl MaildirWriter {
    pub fn new(root: &Path) -> Result<MaildirWriter> {
        new_dir(root)?;
        make_maildir(root)?;
        Ok(MaildirWriter {
            root: root.to_path_buf(),
            dir: root.to_path_buf(),
            keywords: Vec::new(),
            lost: Vec::new(),
        })
    }
}

fn make_maildir(dir: &Path) -> Result<()> {
    for sub in ["cur", "new", "tmp"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(())
}

impl Writer for MaildirWriter {
    fn begin_mailbox(&mut self, mailbox: &MailboxRecord) -> Result<()> {
        self.keywords.clear();
        if mailbox.name == INBOX {
            self.dir = self.root.clone();
            return Ok(());
        }
        self.dir = self.root.join(folder_dir(&mailbox.name));
        make_maildir(&self.dir)?;
        let marker = self.dir.join("maildirfolder");
        File::create(&marker).with_context(|| format!("creating {}", marker.display()))?;
        Ok(())
    }

    fn message(&mut self, m: &Exported) -> Result<()> {
        let e = m.entry;
        let mut info = String::new();
        let forwarded = e.keywords.iter().any(|k| k.eq_ignore_ascii_case(FORWARDED));
        for (on, letter) in [
            (e.flags & flags::DRAFT != 0, 'D'),
            (e.flags & flags::FLAGGED != 0, 'F'),
            (forwarded, 'P'),
            (e.flags & flags::ANSWERED != 0, 'R'),
            (e.flags & flags::SEEN != 0, 'S'),
            (e.flags & flags::DELETED != 0, 'T'),
        ] {
            if on {
                info.push(letter);
            }
        }
        let mut letters = Vec::new();
        // $Forwarded also gets a letter: Dovecot does not read P as a flag.
        for k in &e.keywords {
            let index = match self.keywords.iter().position(|x| x == k) {
                Some(i) => i,
                None if self.keywords.len() < MAX_KEYWORD_LETTERS => {
                    self.keywords.push(k.clone());
                    self.keywords.len() - 1
                }
                None => {
                    self.lost
                        .push(format!("{} UID {}: keyword {k}", m.mailbox.name, e.uid));
                    continue;
                }
            };
            letters.push((b'a' + index as u8) as char);
        }
        // The spec wants the info letters in ASCII order.
        letters.sort_unstable();
        info.extend(letters);
        let name = format!(
            "{}.M{}V{}.trimaran,S={}:2,{info}",
            e.internal_date,
            e.uid,
            m.mailbox.uidvalidity,
            m.body.len()
        );
        // Straight into cur: nothing reads this tree while it is written, so the spec's
        // tmp-then-rename (for concurrent readers) would only cost a rename per message.
        let path = self.dir.join("cur").join(name);
        let mut file =
            File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
        file.write_all(m.body)
            .with_context(|| format!("writing {}", path.display()))?;
        let when = if e.internal_date >= 0 {
            UNIX_EPOCH + Duration::from_secs(e.internal_date as u64)
        } else {
            UNIX_EPOCH
        };
        file.set_modified(when)
            .with_context(|| format!("setting the time of {}", path.display()))?;
        Ok(())
    }

    fn end_mailbox(&mut self, _mailbox: &MailboxRecord) -> Result<()> {
        if self.keywords.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(KEYWORD_FILE);
        let mut text = String::new();
        for (i, k) in self.keywords.iter().enumerate() {
            text.push_str(&format!("{i} {k}\n"));
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn finish(self) -> Result<Vec<String>> {
        Ok(self
            .lost
            .into_iter()
            .map(|l| format!("{l} not kept: Maildir holds 26 keywords per folder"))
            .collect())
    }
}

/// Imports a Maildir++ tree: the root as INBOX, and its `.Name` folders.
pub fn import(importer: &mut Importer, root: &Path) -> Result<()> {
    if !root.join("cur").is_dir() && !root.join("new").is_dir() {
        bail!(
            "{}: not a Maildir (it has no cur or new directory)",
            root.display()
        );
    }
    import_folder(importer, root, INBOX)?;
    let mut folders: Vec<_> = std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", root.display()))?;
    folders.sort_by_key(|e| e.file_name());
    for entry in folders {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                importer.skip(format!("{}: the folder name is not UTF-8", path.display()));
            }
            continue;
        };
        if !name.starts_with('.') || name == "." || name == ".." {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            importer.note(format!("{}: a symbolic link; not followed", path.display()));
            continue;
        }
        if !kind.is_dir() {
            continue;
        }
        match folder_name(&name).and_then(|n| crate::checked_mailbox_name(&n)) {
            Ok(mailbox) => import_folder(importer, &path, &mailbox)?,
            Err(e) => importer.skip(format!("{}: {e:#}", path.display())),
        }
    }
    Ok(())
}

/// A sort key that puts "9" before "10".
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Num(u128),
    Text(String),
}

fn natural(name: &str) -> Vec<Part> {
    let mut out = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let (run, tail) = if digits > 0 {
            rest.split_at(digits)
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest.split_at(text)
        };
        out.push(match run.parse() {
            Ok(n) if digits > 0 => Part::Num(n),
            _ => Part::Text(run.to_string()),
        });
        rest = tail;
    }
    out
}

fn import_folder(importer: &mut Importer, dir: &Path, mailbox: &str) -> Result<()> {
    if let Err(e) = importer.mailbox(mailbox, None) {
        importer.skip(format!("{}: {e:#}", dir.display()));
        return Ok(());
    }
    let mut letters: HashMap<char, String> = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join(KEYWORD_FILE)) {
        for line in text.lines() {
            if let Some((n, k)) = line.split_once(' ') {
                if let Ok(n) = n.parse::<u8>() {
                    if (n as usize) < MAX_KEYWORD_LETTERS {
                        letters.insert((b'a' + n) as char, k.trim().to_string());
                    }
                }
            }
        }
    }
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        let path = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", path.display()))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let meta = entry.metadata()?;
            // Symbolic links are not followed (DirEntry::metadata does not): a tree from
            // elsewhere must not make us read files outside it.
            if name.starts_with('.') || !meta.is_file() {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64);
            files.push((mtime, natural(&name), name, entry.path(), sub == "new"));
        }
    }
    files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (mtime, _, name, path, new) in files {
        let origin = path.display().to_string();
        let raw = match File::open(&path).and_then(|f| read_capped(f, importer.max_size())) {
            Ok(raw) => raw,
            Err(e) => {
                importer.skip(format!("{origin}: {e}"));
                continue;
            }
        };
        let mut m = Incoming {
            mailbox: mailbox.to_string(),
            raw: crlf_if_unix(raw),
            flags: 0,
            keywords: Vec::new(),
            internal_date: mtime,
            expect: None,
            origin,
        };
        let info = if new {
            ""
        } else {
            name.rsplit_once(":2,").map_or("", |(_, info)| info)
        };
        for c in info.chars() {
            match c {
                'D' => m.flags |= flags::DRAFT,
                'F' => m.flags |= flags::FLAGGED,
                'P' => m.keywords.push(FORWARDED.to_string()),
                'R' => m.flags |= flags::ANSWERED,
                'S' => m.flags |= flags::SEEN,
                'T' => m.flags |= flags::DELETED,
                'a'..='z' => match letters.get(&c) {
                    Some(k) => m.keywords.push(k.clone()),
                    None => importer.note(format!(
                        "{}: keyword letter {c} is not in {KEYWORD_FILE}; dropped",
                        m.origin
                    )),
                },
                _ => {}
            }
        }
        importer.add(m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_round_trip() {
        for (name, dir) in [
            ("Archive/2024", ".Archive.2024"),
            ("a.b", ".a%2Eb"),
            ("Entwürfe", ".Entw&APw-rfe"),
            ("50%", ".50%25"),
            ("Tom & Jerry", ".Tom &- Jerry"),
        ] {
            assert_eq!(folder_dir(name), dir);
            assert_eq!(folder_name(dir).unwrap(), name);
        }
        assert!(folder_name(".a..b").is_err());
        assert!(folder_name("..").is_err());
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["10.M10", "9.M9", "9.M10"];
        v.sort_by_key(|s| natural(s));
        assert_eq!(v, ["9.M9", "9.M10", "10.M10"]);
    }
}
