//! Export and import of an account's mail in standard formats (DESIGN.md G7): mbox
//! ([`mbox`]), Maildir++ ([`maildir`]) and `.eml` files in a zip ([`emlzip`]).
//!
//! Everything here is synchronous on purpose: the writers take any [`std::io::Write`], so a
//! caller can run them on a blocking thread and stream the bytes wherever it likes (a file,
//! stdout, later an HTTP response fed through a channel). Store calls go through a runtime
//! [`Handle`] with `block_on`, so these functions must not be called on a runtime worker
//! thread: use `spawn_blocking` or a thread of your own.
//!
//! Only the account's own mailboxes are read ([`MetaStore::mailboxes`] lists nothing shared by
//! other accounts), and bodies come through [`Store::read_blob`], which verifies their hash
//! (G4, G5). One message body is in memory at a time on export.

pub mod emlzip;
pub mod maildir;
pub mod mbox;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::runtime::Handle;
use trimaran_core::store::{
    flags, now_unix, AccountId, AppendRequest, BlobHash, MailboxId, MailboxRecord, MessageEntry,
    Store, StoreError, INBOX,
};

/// The formats of `trimaran export` and `trimaran import`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mbox,
    Maildir,
    EmlZip,
}

impl FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "mbox" => Ok(Format::Mbox),
            "maildir" => Ok(Format::Maildir),
            "eml-zip" => Ok(Format::EmlZip),
            _ => bail!("unknown format {s:?}: expected mbox, maildir or eml-zip"),
        }
    }
}

/// What an export or import did.
#[derive(Debug, Default)]
pub struct Report {
    pub mailboxes: usize,
    pub messages: u64,
    /// Import: messages the mailbox held already (same bytes), so not added again.
    pub already: u64,
    /// Messages (or files) left out, each with where it was and why. Non-empty means the
    /// result is incomplete.
    pub skipped: Vec<String>,
    /// Things kept only partly (e.g. keywords a format cannot hold), for the user to know.
    pub notes: Vec<String>,
}

/// One message handed to a format writer: the entry as the store has it and its verified bytes.
pub struct Exported<'a> {
    pub mailbox: &'a MailboxRecord,
    pub entry: &'a MessageEntry,
    pub body: &'a [u8],
}

/// A format's writer, driven mailbox by mailbox, message by message in UID order.
pub trait Writer {
    fn begin_mailbox(&mut self, mailbox: &MailboxRecord) -> Result<()>;
    fn message(&mut self, message: &Exported) -> Result<()>;
    fn end_mailbox(&mut self, _mailbox: &MailboxRecord) -> Result<()> {
        Ok(())
    }
    /// Completes the output; returns notes for the report.
    fn finish(self) -> Result<Vec<String>>;
}

/// Walks the account's mailboxes (all, or the one named) and hands every message to `writer`.
/// A body that fails verification is left out and reported (it is never written: G5); any other
/// store or output error stops the export.
pub fn export<W: Writer>(
    rt: &Handle,
    store: &Store,
    account: AccountId,
    mailbox: Option<&str>,
    mut writer: W,
) -> Result<Report> {
    let mut boxes = rt.block_on(store.meta().mailboxes(account))?;
    // INBOX first, then by name, so parents come before their children.
    boxes.sort_by(|a, b| (a.name != INBOX, &a.name).cmp(&(b.name != INBOX, &b.name)));
    if let Some(name) = mailbox {
        let name = canonical_inbox(name);
        boxes.retain(|b| b.name == name);
        if boxes.is_empty() {
            bail!("mailbox {name:?} not found");
        }
    }
    let mut report = Report {
        mailboxes: boxes.len(),
        ..Report::default()
    };
    for mb in &boxes {
        writer.begin_mailbox(mb)?;
        let entries = rt
            .block_on(store.meta().mailbox_entries(mb.id))
            .with_context(|| format!("listing mailbox {:?}", mb.name))?;
        for entry in &entries {
            let body = match rt.block_on(store.read_blob(&entry.hash)) {
                Ok(body) => body,
                Err(e @ StoreError::Corrupt { .. }) => {
                    report
                        .skipped
                        .push(format!("{} UID {}: {e}", mb.name, entry.uid));
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {} UID {}", mb.name, entry.uid))
                }
            };
            writer
                .message(&Exported {
                    mailbox: mb,
                    entry,
                    body: &body,
                })
                .with_context(|| format!("writing {} UID {}", mb.name, entry.uid))?;
            report.messages += 1;
        }
        writer.end_mailbox(mb)?;
    }
    report.notes = writer.finish()?;
    Ok(report)
}

/// See [`trimaran_core::store::canonical_inbox`].
pub use trimaran_core::store::canonical_inbox;

/// A mailbox name read from an import, checked as IMAP CREATE checks a client's: imported
/// files must not create names no client could, nor names in the shared namespace.
pub fn checked_mailbox_name(name: &str) -> Result<String> {
    let name = canonical_inbox(name);
    if name.is_empty()
        || name.len() > 1000
        || name.starts_with('/')
        || name.ends_with('/')
        || name.contains("//")
        || name.chars().any(|c| c.is_control() || c == '*' || c == '%')
    {
        bail!("{name:?} is not a valid mailbox name");
    }
    if trimaran_imap::rights::in_shared_namespace(&name) {
        bail!("{name:?} is in the namespace of shared mailboxes");
    }
    Ok(name)
}

/// System flags by name (RFC 9051 §2.3.2), in the order they are written.
pub const FLAG_NAMES: [(i64, &str); 5] = [
    (flags::SEEN, "\\Seen"),
    (flags::ANSWERED, "\\Answered"),
    (flags::FLAGGED, "\\Flagged"),
    (flags::DELETED, "\\Deleted"),
    (flags::DRAFT, "\\Draft"),
];

pub fn flag_names(bits: i64) -> Vec<String> {
    FLAG_NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Bits of flag names; unknown names are an error.
pub fn flag_bits(names: &[String]) -> Result<i64> {
    let mut bits = 0;
    for n in names {
        match FLAG_NAMES.iter().find(|(_, f)| f.eq_ignore_ascii_case(n)) {
            Some((b, _)) => bits |= b,
            None => bail!("unknown system flag {n:?}"),
        }
    }
    Ok(bits)
}

/// Whether a keyword is an IMAP atom that is not a system flag (RFC 9051 §9 `flag-keyword`).
pub fn valid_keyword(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 100
        && k.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

/// Most keywords kept per message, as IMAP APPEND allows.
const MAX_KEYWORDS: usize = 100;

/// Files in the Unix convention (LF only, no CR anywhere) get the CRLF line ends of RFC 5322;
/// anything that holds a CR is kept byte for byte. Our own exports keep the stored bytes, which
/// always hold CRLF when they have line ends at all, so they come back identical.
pub fn crlf_if_unix(raw: Vec<u8>) -> Vec<u8> {
    if raw.contains(&b'\r') || !raw.contains(&b'\n') {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// A mailbox name as relative path components that are safe on any file system and in a zip:
/// "/" separates levels; "%", path and control characters, characters Windows refuses and a
/// leading "." become %XX, so no level is empty, ".", "..", hidden, or absolute.
pub fn name_to_path(name: &str) -> Vec<String> {
    name.split('/')
        .map(|level| {
            let mut out = String::with_capacity(level.len());
            for (i, c) in level.chars().enumerate() {
                let escape = c.is_control()
                    || matches!(c, '%' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
                    || (i == 0 && c == '.');
                if escape {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                } else {
                    out.push(c);
                }
            }
            if out.is_empty() {
                // A name with an empty level cannot be created; keep it visible anyway.
                out.push_str("%00");
            }
            out
        })
        .collect()
}

/// The mailbox name of path components written by [`name_to_path`]; an error for anything
/// that is not a plain relative level (so ".." or an absolute path never names a mailbox).
pub fn path_to_name<S: AsRef<str>>(levels: &[S]) -> Result<String> {
    let mut parts = Vec::with_capacity(levels.len());
    for level in levels {
        let level = level.as_ref();
        if level.is_empty() || level == "." || level == ".." || level.contains(['/', '\\']) {
            bail!("{level:?} is not a safe folder name");
        }
        let bytes = level.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => out.push(b),
                    None => bail!("{level:?} has a bad %-escape"),
                }
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        let decoded = String::from_utf8(out)
            .map_err(|_| anyhow::anyhow!("{level:?} is not UTF-8 once decoded"))?;
        parts.push(decoded);
    }
    checked_mailbox_name(&parts.join("/"))
}

/// A message read from an import, on its way into the store.
pub struct Incoming {
    pub mailbox: String,
    pub raw: Vec<u8>,
    pub flags: i64,
    pub keywords: Vec<String>,
    /// None: the Date header's, else now.
    pub internal_date: Option<i64>,
    /// The BLAKE3 hash the source recorded for these bytes, checked before storing.
    pub expect: Option<BlobHash>,
    /// Where it came from (file, entry), for reports.
    pub origin: String,
}

/// Messages are appended in batches of at most this many...
const BATCH_MESSAGES: usize = 200;
/// ...or this many bytes, whichever comes first.
const BATCH_BYTES: u64 = 16 << 20;

/// Puts imported messages into an account: creates missing mailboxes (with their parents, as
/// IMAP CREATE does), stores bodies exactly as read (`delivery::prepare`, never the
/// normalising variant) and appends them in batches, each all or nothing.
pub struct Importer<'a> {
    rt: &'a Handle,
    store: &'a Store,
    account: AccountId,
    max_size: u64,
    boxes: HashMap<String, MailboxId>,
    /// Special uses the account's mailboxes have: an import never gives one to a second.
    uses: HashSet<String>,
    /// Per mailbox, how many copies of each body it held before this import.
    present: HashMap<MailboxId, HashMap<BlobHash, usize>>,
    created: usize,
    batch: Vec<AppendRequest>,
    batch_box: Option<MailboxId>,
    batch_bytes: u64,
    report: Report,
}

impl<'a> Importer<'a> {
    pub fn new(
        rt: &'a Handle,
        store: &'a Store,
        account: AccountId,
        max_size: u64,
    ) -> Result<Importer<'a>> {
        let records = rt.block_on(store.meta().mailboxes(account))?;
        let uses = records
            .iter()
            .filter_map(|b| b.special_use.clone())
            .collect();
        let boxes = records.into_iter().map(|b| (b.name, b.id)).collect();
        Ok(Importer {
            rt,
            store,
            account,
            max_size,
            boxes,
            uses,
            present: HashMap::new(),
            created: 0,
            batch: Vec::new(),
            batch_box: None,
            batch_bytes: 0,
            report: Report::default(),
        })
    }

    /// The largest message taken; readers stop reading a message soon after it.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The mailbox's id, creating it and its missing parents.
    pub fn mailbox(&mut self, name: &str, special_use: Option<&str>) -> Result<MailboxId> {
        let name = checked_mailbox_name(name)?;
        if let Some(id) = self.boxes.get(&name) {
            return Ok(*id);
        }
        let levels: Vec<&str> = name.split('/').collect();
        for depth in 1..=levels.len() {
            let path = levels[..depth].join("/");
            if self.boxes.contains_key(&path) {
                continue;
            }
            let use_here = special_use.filter(|u| depth == levels.len() && !self.uses.contains(*u));
            let record = match self.rt.block_on(self.store.meta().create_mailbox(
                self.account,
                &path,
                use_here,
            )) {
                Ok(r) => r,
                // Another session made it meanwhile.
                Err(StoreError::AlreadyExists(_)) => self
                    .rt
                    .block_on(self.store.meta().mailboxes(self.account))?
                    .into_iter()
                    .find(|b| b.name == path)
                    .with_context(|| format!("mailbox {path:?} vanished"))?,
                Err(e) => return Err(e).with_context(|| format!("creating mailbox {path:?}")),
            };
            self.boxes.insert(path, record.id);
            self.uses.extend(record.special_use);
            self.created += 1;
        }
        Ok(self.boxes[&name])
    }

    /// Leaves something out of the import, reported at the end.
    pub fn skip(&mut self, what: String) {
        self.report.skipped.push(what);
    }

    pub fn note(&mut self, what: String) {
        self.report.notes.push(what);
    }

    /// Takes one message; problems with it are reported and skipped, store failures stop.
    pub fn add(&mut self, m: Incoming) -> Result<()> {
        if m.raw.is_empty() {
            self.skip(format!("{}: empty message", m.origin));
            return Ok(());
        }
        if m.raw.len() as u64 > self.max_size {
            self.skip(format!(
                "{}: larger than the maximum message size ({} bytes)",
                m.origin, self.max_size
            ));
            return Ok(());
        }
        let mailbox = match self.mailbox(&m.mailbox, None) {
            Ok(id) => id,
            Err(e) => {
                self.skip(format!("{}: {e:#}", m.origin));
                return Ok(());
            }
        };
        let mut keywords: Vec<String> = Vec::new();
        for k in m.keywords {
            if !valid_keyword(&k) {
                self.note(format!(
                    "{}: keyword {k:?} is not an IMAP atom; dropped",
                    m.origin
                ));
            } else if keywords.len() >= MAX_KEYWORDS {
                self.note(format!(
                    "{}: more than {MAX_KEYWORDS} keywords; {k:?} dropped",
                    m.origin
                ));
            } else if !keywords.iter().any(|x| x.eq_ignore_ascii_case(&k)) {
                keywords.push(k);
            }
        }
        let hash = BlobHash::of(&m.raw);
        if let Some(expect) = m.expect {
            if hash != expect {
                self.skip(format!(
                    "{}: content does not match its recorded BLAKE3 {expect}",
                    m.origin
                ));
                return Ok(());
            }
        }
        // Copies the mailbox held before this import are not added again, one for one, so an
        // import that stopped half way can simply be run again.
        if !self.present.contains_key(&mailbox) {
            let mut counts: HashMap<BlobHash, usize> = HashMap::new();
            for e in self
                .rt
                .block_on(self.store.meta().mailbox_entries(mailbox))?
            {
                *counts.entry(e.hash).or_default() += 1;
            }
            self.present.insert(mailbox, counts);
        }
        if let Some(n) = self
            .present
            .get_mut(&mailbox)
            .and_then(|c| c.get_mut(&hash))
            .filter(|n| **n > 0)
        {
            *n -= 1;
            self.report.already += 1;
            return Ok(());
        }
        let mut message = self.rt.block_on(trimaran_core::delivery::prepare(
            m.raw,
            m.internal_date.unwrap_or(0),
        ))?;
        if m.internal_date.is_none() {
            message.received_at = message.meta.date.unwrap_or_else(now_unix);
        }
        if self.batch_box != Some(mailbox)
            || self.batch.len() >= BATCH_MESSAGES
            || self.batch_bytes >= BATCH_BYTES
        {
            self.flush()?;
        }
        self.batch_box = Some(mailbox);
        self.batch_bytes += message.meta.size;
        self.batch.push(AppendRequest {
            message,
            flags: m.flags,
            keywords,
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let (Some(mailbox), false) = (self.batch_box, self.batch.is_empty()) else {
            return Ok(());
        };
        let batch = Arc::new(std::mem::take(&mut self.batch));
        let n = batch.len() as u64;
        self.rt
            .block_on(self.store.append(self.account, mailbox, batch))
            .with_context(|| {
                format!(
                    "storing messages ({} imported before this batch)",
                    self.report.messages
                )
            })?;
        self.report.messages += n;
        self.batch_bytes = 0;
        Ok(())
    }

    /// Stores what is still batched and returns the report.
    pub fn finish(mut self) -> Result<Report> {
        self.flush()?;
        self.report.mailboxes = self.created;
        Ok(self.report)
    }
}

/// Makes an output directory, which must not exist yet or be empty: an export never mixes
/// with (or overwrites) files that were there.
pub(crate) fn new_dir(dir: &std::path::Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} exists and is not empty", dir.display());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Reads at most `limit + 1` bytes, so that a caller sees "too large" without holding more.
pub(crate) fn read_capped<R: std::io::Read>(r: R, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut r.take(limit.saturating_add(1)), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_stay_inside() {
        for name in [
            "INBOX",
            "Archive/2024",
            "a.b/..x",
            "c:d/x?y",
            "Entwürfe",
            "../x",
        ] {
            let path = name_to_path(name);
            for level in &path {
                assert!(
                    !level.starts_with('.') && !level.contains(['/', '\\', ':']),
                    "{level}"
                );
            }
            assert_eq!(path_to_name(&path).unwrap(), name);
        }
        assert!(path_to_name(&["..", "etc"]).is_err());
        assert!(path_to_name(&["a", ""]).is_err());
        assert!(path_to_name(&["%ff"]).is_err());
        assert!(path_to_name(&["Other Users", "bob"]).is_err());
        assert_eq!(path_to_name(&["inbox"]).unwrap(), "INBOX");
        assert_eq!(path_to_name(&["inbox", "x"]).unwrap(), "INBOX/x");
        // Not a char boundary at byte 6: must not panic.
        assert_eq!(canonical_inbox("INBOXü"), "INBOXü");
    }

    #[test]
    fn unix_line_ends_become_crlf_only_without_cr() {
        assert_eq!(crlf_if_unix(b"a\nb\n".to_vec()), b"a\r\nb\r\n");
        assert_eq!(crlf_if_unix(b"a\r\nb\n".to_vec()), b"a\r\nb\n");
        assert_eq!(crlf_if_unix(b"a".to_vec()), b"a");
    }

    #[test]
    fn keywords_are_atoms() {
        assert!(valid_keyword("$Forwarded"));
        assert!(!valid_keyword("two words"));
        assert!(!valid_keyword("\\Seen"));
        assert!(!valid_keyword(""));
    }
}
