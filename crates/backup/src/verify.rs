//! `backup verify`: checks every hash in the repository and names exactly the messages any
//! damage affects.
//!
//! A pack that still hashes to its name is intact record by record (its name is the hash of
//! its content, and every record was checked against its body's hash when written). Only a
//! pack that does not is opened record by record, to find which bodies it can still give.

use std::collections::{BTreeMap, HashMap, HashSet};

use trimaran_store::BlobHash;

use crate::error::Result;
use crate::pack::{self, PackId, PackReader};
use crate::repo::Repository;
use crate::snapshot::{self, Line, SnapshotReader};

#[derive(Debug, Default)]
pub struct Report {
    pub snapshots: u64,
    pub packs: u64,
    pub bodies_checked: u64,
    /// Snapshots that cannot be read, with why.
    pub bad_snapshots: Vec<(String, String)>,
    /// Packs that are missing or not what their name says.
    pub bad_packs: Vec<(PackId, String)>,
    /// Every message whose body cannot be restored: (snapshot, account, mailbox, UID, hash, why).
    pub damaged_messages: Vec<(String, String, String, u32, BlobHash, String)>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.bad_snapshots.is_empty()
            && self.bad_packs.is_empty()
            && self.damaged_messages.is_empty()
    }
}

pub fn verify(repo: &Repository, only: Option<&str>) -> Result<Report> {
    let _lock = repo.lock_shared()?;
    let ids = match only {
        Some(id) => vec![snapshot::choose(repo, Some(id))?],
        None => snapshot::list(repo)?,
    };
    let mut report = Report::default();
    // The packs the snapshots need.
    let mut needed: HashSet<PackId> = HashSet::new();
    let mut damaged_at_backup: HashMap<String, BTreeMap<BlobHash, String>> = HashMap::new();
    for id in &ids {
        match snapshot::summary(repo, id) {
            Ok((_, trailer)) => {
                needed.extend(trailer.packs.iter().filter_map(|p| PackId::parse(p)));
                damaged_at_backup.insert(id.clone(), trailer.damaged);
            }
            Err(e) => report.bad_snapshots.push((id.clone(), e.to_string())),
        }
    }
    let dir = repo.packs();
    let present: HashSet<PackId> = repo.pack_ids()?.into_iter().collect();
    // Bodies that cannot be had, and why.
    let mut lost: HashMap<BlobHash, String> = HashMap::new();
    let mut needed: Vec<PackId> = needed.into_iter().collect();
    needed.sort();
    for id in &needed {
        report.packs += 1;
        let path = pack::pack_path(&dir, id);
        if !present.contains(id) {
            report.bad_packs.push((*id, "missing".into()));
            // Which bodies it held comes from its index, if that survived.
            if let Some(entries) = pack::read_index(&pack::index_path(&dir, id)) {
                for e in entries {
                    lost.insert(e.hash, format!("pack {id} is missing"));
                }
            }
            continue;
        }
        let sum = pack::hash_file(&path)?;
        let entries = pack::read_index(&pack::index_path(&dir, id));
        if sum == *id {
            report.bodies_checked += entries.map(|e| e.len() as u64).unwrap_or(0);
            continue;
        }
        report
            .bad_packs
            .push((*id, format!("content hashes to {sum}")));
        // Record by record: by the index where it survived, else as far as the pack reads.
        let entries = match entries {
            Some(e) => e,
            None => pack::scan(&path)?.0,
        };
        let mut reader = PackReader::new(dir.clone());
        for e in entries {
            report.bodies_checked += 1;
            let ok = reader
                .read(e.hash, &e.location(*id))
                .and_then(|(b, _)| b.decode_verified().map_err(Into::into));
            if let Err(err) = ok {
                lost.insert(e.hash, format!("damaged in pack {id}: {err}"));
            }
        }
    }
    report.snapshots = ids.len() as u64;
    // Bodies the snapshots name that no pack holds at all (a pack and its index both lost).
    let index = repo.load_index(false)?;
    for id in &ids {
        if report.bad_snapshots.iter().any(|(b, _)| b == id) {
            continue;
        }
        let damaged_in_backup = damaged_at_backup.remove(id).unwrap_or_default();
        for line in SnapshotReader::open(&snapshot::snapshot_path(repo, id))? {
            match line {
                Ok(Line::Account(a)) => {
                    for mb in &a.mailboxes {
                        for m in &mb.messages {
                            let why = lost.get(&m.hash).cloned().or_else(|| {
                                (!index.contains_key(&m.hash)).then(|| {
                                    match damaged_in_backup.get(&m.hash) {
                                        Some(d) => {
                                            format!("damaged in the store when backed up: {d}")
                                        }
                                        None => "in no pack of the repository".into(),
                                    }
                                })
                            });
                            if let Some(why) = why {
                                report.damaged_messages.push((
                                    id.clone(),
                                    a.address.clone(),
                                    mb.name.clone(),
                                    m.uid,
                                    m.hash,
                                    why,
                                ));
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => report.bad_snapshots.push((id.clone(), e.to_string())),
            }
        }
    }
    Ok(report)
}
