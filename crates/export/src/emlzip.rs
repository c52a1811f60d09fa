//! `.eml` files in a zip: `<mailbox path>/<uid>.eml` per message (levels escaped by
//! [`crate::name_to_path`]), the exact stored bytes, and last of all a manifest,
//! `trimaran-export.json`, that records for every file its mailbox, UID, flags, keywords,
//! internal date and BLAKE3 hash, and every mailbox with its special use: with it an import
//! restores all of that exactly and checks every body against its hash.
//!
//! The archive is written front to back with data descriptors (APPNOTE 4.3.9), never seeking,
//! so it can go to a pipe or a network stream as it is made. Zips without our manifest are
//! imported too: the folders give the mailboxes (files at the top go to INBOX), the Date
//! header the internal date, and no flags.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use trimaran_core::store::{now_unix, AccountId, BlobHash, MailboxRecord, Store, INBOX};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

use crate::{
    crlf_if_unix, flag_bits, flag_names, name_to_path, path_to_name, read_capped, Exported,
    Importer, Incoming, Report, Writer,
};

pub const MANIFEST: &str = "trimaran-export.json";
const MANIFEST_FORMAT: &str = "trimaran-eml-zip";
/// A manifest takes a few hundred bytes per message; this allows millions.
const MAX_MANIFEST: u64 = 1 << 30;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    exported_at: i64,
    mailboxes: Vec<ManifestMailbox>,
    messages: Vec<ManifestMessage>,
}

#[derive(Serialize, Deserialize)]
struct ManifestMailbox {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    special_use: Option<String>,
    /// Its folder in the archive.
    path: String,
}

#[derive(Serialize, Deserialize)]
struct ManifestMessage {
    file: String,
    mailbox: String,
    uid: u32,
    flags: Vec<String>,
    keywords: Vec<String>,
    /// Seconds since the epoch (IMAP INTERNALDATE).
    internal_date: i64,
    size: u64,
    blake3: String,
}

/// Writes the account's mail (or one mailbox) as an eml-zip to `out`, which need not seek.
/// Blocks on the store through `rt`, so call it from a blocking thread: an HTTP handler can
/// run it under `spawn_blocking` with a writer that sends each buffer through a channel.
pub fn write_eml_zip<W: Write>(
    rt: &Handle,
    store: &Store,
    account: AccountId,
    mailbox: Option<&str>,
    out: W,
) -> Result<Report> {
    crate::export(rt, store, account, mailbox, EmlZipWriter::new(out))
}

pub struct EmlZipWriter<W: Write> {
    zip: ZipWriter<StreamWriter<W>>,
    manifest: Manifest,
    dir: String,
}

impl<W: Write> EmlZipWriter<W> {
    pub fn new(out: W) -> EmlZipWriter<W> {
        EmlZipWriter {
            zip: ZipWriter::new_stream(out),
            manifest: Manifest {
                format: MANIFEST_FORMAT.into(),
                version: 1,
                exported_at: now_unix(),
                mailboxes: Vec::new(),
                messages: Vec::new(),
            },
            dir: String::new(),
        }
    }
}

/// The zip time of a Unix time (UTC; zip has no zone, two-second steps, years 1980–2107).
fn zip_time(t: i64) -> DateTime {
    let Ok(d) = time::OffsetDateTime::from_unix_timestamp(t) else {
        return DateTime::default();
    };
    DateTime::from_date_and_time(
        d.year().clamp(1980, 2107) as u16,
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
    )
    .unwrap_or_default()
}

fn options(t: i64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(zip_time(t))
        .unix_permissions(0o644)
}

impl<W: Write> Writer for EmlZipWriter<W> {
    fn begin_mailbox(&mut self, mailbox: &MailboxRecord) -> Result<()> {
        self.dir = name_to_path(&mailbox.name).join("/");
        // Folders of empty mailboxes show too, for readers without the manifest.
        self.zip
            .add_directory(format!("{}/", self.dir), options(now_unix()))?;
        self.manifest.mailboxes.push(ManifestMailbox {
            name: mailbox.name.clone(),
            special_use: mailbox.special_use.clone(),
            path: self.dir.clone(),
        });
        Ok(())
    }

    fn message(&mut self, m: &Exported) -> Result<()> {
        let e = m.entry;
        let file = format!("{}/{}.eml", self.dir, e.uid);
        self.zip.start_file(&file, options(e.internal_date))?;
        self.zip.write_all(m.body)?;
        self.manifest.messages.push(ManifestMessage {
            file,
            mailbox: m.mailbox.name.clone(),
            uid: e.uid,
            flags: flag_names(e.flags),
            keywords: e.keywords.clone(),
            internal_date: e.internal_date,
            size: m.body.len() as u64,
            blake3: e.hash.to_hex(),
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<String>> {
        self.zip.start_file(MANIFEST, options(now_unix()))?;
        serde_json::to_writer_pretty(&mut self.zip, &self.manifest)?;
        let mut out = self.zip.finish()?.into_inner();
        out.flush()?;
        Ok(Vec::new())
    }
}

/// The levels of an entry's name, refusing anything that could leave the archive's tree when
/// extracted ("zip slip"): absolute names, drive letters, backslashes, "." and "..".
fn safe_levels(name: &str) -> Result<Vec<&str>> {
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    if trimmed.is_empty()
        || name.starts_with('/')
        || name.contains(['\\', '\0'])
        || trimmed.split('/').next().is_some_and(|l| l.contains(':'))
    {
        bail!("unsafe entry name");
    }
    let levels: Vec<&str> = trimmed.split('/').collect();
    if levels
        .iter()
        .any(|l| l.is_empty() || *l == "." || *l == "..")
    {
        bail!("unsafe entry name");
    }
    Ok(levels)
}

/// Imports an eml-zip file (ours, with its manifest, or any zip of .eml files).
pub fn import(importer: &mut Importer, path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    let file = File::open(path).with_context(|| format!("opening {shown}"))?;
    let mut zip = ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{shown}: not a readable zip archive"))?;
    let manifest: Option<Manifest> = match zip.by_name(MANIFEST) {
        Ok(f) => {
            let bytes = read_capped(f, MAX_MANIFEST)
                .with_context(|| format!("{shown}: reading {MANIFEST}"))?;
            let m: Manifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("{shown}: {MANIFEST} is not a manifest we can read"))?;
            if m.format != MANIFEST_FORMAT || m.version != 1 {
                bail!(
                    "{shown}: {MANIFEST} is format {:?} version {}; this version reads {MANIFEST_FORMAT} 1",
                    m.format,
                    m.version
                );
            }
            Some(m)
        }
        Err(zip::result::ZipError::FileNotFound) => None,
        Err(e) => return Err(e).with_context(|| format!("{shown}: reading {MANIFEST}")),
    };
    let has_manifest = manifest.is_some();
    let mut listed: HashMap<String, ManifestMessage> = HashMap::new();
    if let Some(m) = manifest {
        for mb in &m.mailboxes {
            if let Err(e) = importer.mailbox(&mb.name, mb.special_use.as_deref()) {
                importer.skip(format!("{shown}: mailbox {:?}: {e:#}", mb.name));
            }
        }
        listed = m
            .messages
            .into_iter()
            .map(|r| (r.file.clone(), r))
            .collect();
    }
    for i in 0..zip.len() {
        let mut entry = match zip.by_index(i) {
            Ok(f) => f,
            Err(e) => {
                importer.skip(format!("{shown}: entry {}: {e}", i + 1));
                continue;
            }
        };
        let name = entry.name().to_string();
        let origin = format!("{shown}: {name}");
        if name == MANIFEST {
            continue;
        }
        let levels = match safe_levels(&name) {
            Ok(l) => l,
            Err(e) => {
                importer.skip(format!("{origin}: {e}"));
                continue;
            }
        };
        if entry.is_dir() {
            if !has_manifest {
                if let Err(e) = path_to_name(&levels).and_then(|n| importer.mailbox(&n, None)) {
                    importer.skip(format!("{origin}: {e:#}"));
                }
            }
            continue;
        }
        let record = listed.remove(&name);
        if record.is_none() && !name.to_ascii_lowercase().ends_with(".eml") {
            importer.note(format!("{origin}: not an .eml file; ignored"));
            continue;
        }
        // Reading to the end also checks the entry's CRC-32.
        let raw = match read_capped(&mut entry, importer.max_size()) {
            Ok(raw) => raw,
            Err(e) => {
                importer.skip(format!("{origin}: {e}"));
                continue;
            }
        };
        drop(entry);
        let incoming = match record {
            Some(r) => {
                let (flags, expect) = match (flag_bits(&r.flags), r.blake3.parse::<BlobHash>()) {
                    (Ok(f), Ok(h)) => (f, h),
                    (Err(e), _) => {
                        importer.skip(format!("{origin}: {e:#}"));
                        continue;
                    }
                    (_, Err(e)) => {
                        importer.skip(format!("{origin}: {e}"));
                        continue;
                    }
                };
                Incoming {
                    mailbox: r.mailbox,
                    raw,
                    flags,
                    keywords: r.keywords,
                    internal_date: Some(r.internal_date),
                    expect: Some(expect),
                    origin,
                }
            }
            None => {
                let folder = &levels[..levels.len() - 1];
                let mailbox = if folder.is_empty() {
                    Ok(INBOX.to_string())
                } else {
                    path_to_name(folder)
                };
                let mailbox = match mailbox {
                    Ok(m) => m,
                    Err(e) => {
                        importer.skip(format!("{origin}: {e:#}"));
                        continue;
                    }
                };
                Incoming {
                    mailbox,
                    raw: crlf_if_unix(raw),
                    flags: 0,
                    keywords: Vec::new(),
                    internal_date: None,
                    expect: None,
                    origin,
                }
            }
        };
        importer.add(incoming)?;
    }
    let mut missing: Vec<String> = listed.into_keys().collect();
    missing.sort();
    for file in missing {
        importer.skip(format!(
            "{shown}: {file}: listed in {MANIFEST} but not in the archive"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_stay_inside() {
        assert_eq!(safe_levels("INBOX/1.eml").unwrap(), ["INBOX", "1.eml"]);
        assert_eq!(safe_levels("Archive/2024/").unwrap(), ["Archive", "2024"]);
        for bad in [
            "../x.eml",
            "a/../../x.eml",
            "/etc/passwd",
            "C:/x.eml",
            "a\\..\\x",
            "a//b",
            "./x",
        ] {
            assert!(safe_levels(bad).is_err(), "{bad}");
        }
    }
}
