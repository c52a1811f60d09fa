//! FETCH (RFC 9051 §6.4.5) with BINARY (RFC 3516), CONDSTORE/QRESYNC modifiers (RFC 7162)
//! and OBJECTID items (RFC 8474). Bodies are sliced by the part offsets stored at delivery;
//! nothing is parsed again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use trimaran_core::delivery::retry;
use trimaran_core::store::{
    flags, BlobHash, FlagChange, FlagOp, MessageEntry, MessageMeta, StoreError,
    MESSAGE_META_VERSION,
};

use crate::fetch::{envelope, section, structure};
use crate::head_cache::Head;
use crate::parser::date::format_date_time;
use crate::parser::{FetchAtt, Section, SectionText, SeqSet};
use crate::response;
use crate::session::{flag_list, uid_set, Flow, Session};

/// Output is sent to the client whenever this much has been built, so that a large FETCH
/// needs memory for about one message, not for all of them.
const FLUSH_AT: usize = 256 * 1024;

fn section_name(s: &Section) -> String {
    let mut parts: Vec<String> = s.part.iter().map(u32::to_string).collect();
    if let Some(t) = &s.text {
        parts.push(match t {
            SectionText::Header => "HEADER".into(),
            SectionText::Text => "TEXT".into(),
            SectionText::Mime => "MIME".into(),
            SectionText::HeaderFields(f) => format!("HEADER.FIELDS ({})", quoted_list(f)),
            SectionText::HeaderFieldsNot(f) => format!("HEADER.FIELDS.NOT ({})", quoted_list(f)),
        });
    }
    parts.join(".")
}

/// Header field names as atoms where they can be (RFC 9051 §9 astring), quoted otherwise.
fn quoted_list(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            let f = f.to_ascii_uppercase();
            let atom = !f.is_empty()
                && f.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
            if atom {
                f
            } else {
                response::quoted(&f)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn partial_slice(data: &[u8], partial: Option<(u32, u32)>) -> &[u8] {
    match partial {
        None => data,
        Some((offset, len)) => {
            let start = (offset as usize).min(data.len());
            let end = start.saturating_add(len as usize).min(data.len());
            &data[start..end]
        }
    }
}

/// An EMAILID (RFC 8474 §5.1): the same content has the same id, also after COPY or MOVE.
pub fn email_id(m: &MessageEntry) -> String {
    format!("M{}", &m.hash.to_hex()[..24])
}

/// A THREADID (RFC 8474 §5.2), from what never changes in a message: the first message its
/// References name (the thread's start, RFC 5322 §3.6.4), else the one it replies to, else its
/// own Message-ID. Copies and replies of one conversation share it in every mailbox; a reply
/// whose client dropped References (RFC 5256 handles those by subject) starts its own.
pub fn thread_id(meta: &MessageMeta, m: &MessageEntry) -> String {
    let root = meta
        .references
        .first()
        .or(meta.in_reply_to.as_ref())
        .or(meta.message_id.as_ref())
        .filter(|id| !id.is_empty());
    match root {
        Some(id) => format!("T{}", &blake3::hash(id.as_bytes()).to_hex()[..24]),
        None => format!("T{}", &m.hash.to_hex()[..24]),
    }
}

impl Session {
    pub(crate) async fn fetch(
        &mut self,
        tag: &str,
        uid: bool,
        set: SeqSet,
        mut items: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    ) -> Flow {
        if vanished && !self.qresync {
            self.bad(tag, "VANISHED needs QRESYNC enabled");
            return Flow::Continue;
        }
        if changed_since.is_some() {
            // RFC 7162 §3.1.4: CHANGEDSINCE enables CONDSTORE and implies MODSEQ.
            self.condstore = true;
            if !items.contains(&FetchAtt::ModSeq) {
                items.push(FetchAtt::ModSeq);
            }
        }
        if uid && !items.contains(&FetchAtt::Uid) {
            items.insert(0, FetchAtt::Uid);
        }
        if items.contains(&FetchAtt::ModSeq) {
            self.condstore = true;
        }
        let mut positions = match self.resolve(&set, uid) {
            Ok(p) => p,
            Err(why) => {
                self.bad(tag, why);
                return Flow::Continue;
            }
        };
        if vanished {
            if let Err(e) = self.report_vanished(&set, changed_since.unwrap_or(0)).await {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        }
        let Some(sel) = &self.selected else {
            return Flow::Continue;
        };
        if let Some(since) = changed_since {
            positions.retain(|&i| sel.messages[i].modseq > since);
        }
        // Fetching a body sets \Seen (RFC 9051 §6.4.5), before the answer shows the flags.
        // RFC 4314 §4: only with "s".
        if !sel.read_only && sel.rights.has('s') && items.iter().any(FetchAtt::sets_seen) {
            let unseen: Vec<u32> = positions
                .iter()
                .map(|&i| &sel.messages[i])
                .filter(|m| m.flags & flags::SEEN == 0)
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let change = FlagChange {
                    op: FlagOp::Add,
                    flags: flags::SEEN,
                    keywords: Vec::new(),
                    unchanged_since: None,
                };
                let (account, mailbox) = (sel.owner, sel.mailbox.id);
                let meta = self.server.core.store.meta();
                match retry(self.wait(), || {
                    meta.update_flags(account, mailbox, &unseen, &change)
                })
                .await
                {
                    Ok(outcome) => {
                        self.server.core.store.changed(account);
                        if let Some(sel) = &mut self.selected {
                            for e in outcome.updated {
                                if let Some(i) = sel.position(e.uid) {
                                    sel.messages[i] = e;
                                }
                            }
                        }
                        if !items.contains(&FetchAtt::Flags) {
                            items.push(FetchAtt::Flags);
                        }
                    }
                    Err(e) => {
                        self.store_failed(tag, &e);
                        return Flow::Continue;
                    }
                }
            }
        }
        let needs_meta = items.iter().any(|i| {
            matches!(
                i,
                FetchAtt::Body
                    | FetchAtt::BodyStructure
                    | FetchAtt::BodySection { .. }
                    | FetchAtt::Binary { .. }
                    | FetchAtt::BinarySize(_)
                    | FetchAtt::Rfc822Header
                    | FetchAtt::Rfc822Text
                    | FetchAtt::Envelope
                    | FetchAtt::ThreadId
            )
        });
        for chunk in positions.chunks(FETCH_BATCH) {
            let entries: Vec<(usize, MessageEntry)> = chunk
                .iter()
                .filter_map(|&i| {
                    let sel = self.selected.as_ref()?;
                    Some((i, sel.messages.get(i)?.clone()))
                })
                .collect();
            let mut heads: HashMap<BlobHash, Arc<Head>> = HashMap::new();
            if needs_meta {
                let cache = &self.server.head_cache;
                let mut missing: Vec<BlobHash> = Vec::new();
                for (_, e) in &entries {
                    match cache.get(&e.hash) {
                        Some(head) => {
                            heads.insert(e.hash, head);
                        }
                        None => missing.push(e.hash),
                    }
                }
                // One store call for the rest of the batch, not one per message.
                if !missing.is_empty() {
                    let store = self.server.core.store.clone();
                    match retry(self.wait(), || store.meta().message_heads(&missing)).await {
                        Ok(rows) => {
                            for (hash, meta, header) in rows {
                                let head = Arc::new(Head { meta, header });
                                cache.put(hash, head.clone());
                                heads.insert(hash, head);
                            }
                        }
                        Err(e) => {
                            self.store_failed(tag, &e);
                            return Flow::Continue;
                        }
                    }
                }
            }
            for (i, entry) in entries {
                let head = heads.get(&entry.hash).map(Arc::as_ref);
                match self.fetch_one(i, &entry, &items, needs_meta, head).await {
                    Ok(()) => {}
                    Err(FetchFailure::Store(e)) => {
                        self.store_failed(tag, &e);
                        return Flow::Continue;
                    }
                    Err(FetchFailure::UnknownCte) => {
                        self.no(
                            tag,
                            "[UNKNOWN-CTE] Cannot decode this part's transfer encoding",
                        );
                        return Flow::Continue;
                    }
                }
                if self.conn.out().len() >= FLUSH_AT && self.conn.flush().await.is_err() {
                    return Flow::Close;
                }
            }
        }
        // RFC 9051 §7.4.1: no EXPUNGE during FETCH; UID FETCH may report them.
        let _ = self.sync(false, uid).await;
        self.ok(tag, "FETCH completed");
        Flow::Continue
    }

    async fn report_vanished(&mut self, set: &SeqSet, since: u64) -> Result<(), StoreError> {
        let Some(sel) = &self.selected else {
            return Ok(());
        };
        let (account, mailbox) = (sel.owner, sel.mailbox.id);
        let meta = self.server.core.store.meta();
        let delta = retry(self.wait(), || meta.mailbox_delta(account, mailbox, since)).await?;
        let max = sel
            .messages
            .last()
            .map_or(0, |m| m.uid)
            .max(delta.mailbox.uidnext.saturating_sub(1));
        let gone: Vec<u32> = delta
            .expunged
            .into_iter()
            .filter(|&u| match set {
                SeqSet::Ranges(r) => SeqSet::contains(r, u, max),
                SeqSet::Saved => self.saved.contains(&u),
            })
            .filter(|&u| sel.position(u).is_none())
            .collect();
        if !gone.is_empty() {
            self.untagged(&format!("VANISHED (EARLIER) {}", uid_set(&gone)));
        }
        Ok(())
    }

    async fn fetch_one(
        &mut self,
        index: usize,
        m: &MessageEntry,
        items: &[FetchAtt],
        needs_meta: bool,
        head: Option<&Head>,
    ) -> Result<(), FetchFailure> {
        let store = self.server.core.store.clone();
        let wait = self.wait();
        // Borrowed from the batch where possible: a FETCH of headers spends its time per
        // message, and copying each message's metadata and header was a good part of it.
        let meta: Option<Cow<MessageMeta>> = match (needs_meta, head) {
            (_, Some(h)) => Some(Cow::Borrowed(&h.meta)),
            (true, None) => {
                // Metadata lost: parse again from the body rather than fail the client.
                let raw = retry(wait, || store.read_blob(&m.hash)).await?;
                Some(Cow::Owned(trimaran_core::message::parse(&raw)))
            }
            (false, None) => None,
        };
        let needs_raw = items.iter().any(|i| match i {
            FetchAtt::Envelope
            | FetchAtt::Rfc822
            | FetchAtt::Rfc822Header
            | FetchAtt::Rfc822Text
            | FetchAtt::BodySection { .. }
            | FetchAtt::Binary { .. }
            | FetchAtt::BinarySize(_) => true,
            FetchAtt::Body | FetchAtt::BodyStructure => {
                meta.as_deref().is_some_and(structure::needs_raw)
            }
            _ => false,
        });
        // The header copy kept beside the metadata serves header-only items without reading
        // (and decompressing, and hashing) the whole body.
        let header_copy = head.and_then(|h| h.header.as_ref()).filter(|h| {
            meta.as_ref()
                .is_some_and(|meta| serves_from_header(items, meta, h))
        });
        let raw: Cow<[u8]> = match (needs_raw, header_copy) {
            (false, _) => Cow::Borrowed(&[]),
            (true, Some(header)) => Cow::Borrowed(header),
            (true, None) => Cow::Owned(retry(wait, || store.read_blob(&m.hash)).await?),
        };
        let raw = raw.as_ref();
        let empty = MessageMeta::default();
        let meta = meta.as_deref().unwrap_or(&empty);
        let meta = &crate::fetch::for_session(meta, raw, self.rev2);
        let utf8 = self.utf8;
        let mut out: Vec<u8> = format!("* {} FETCH (", index + 1).into_bytes();
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                out.push(b' ');
            }
            match item {
                FetchAtt::Uid => out.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
                FetchAtt::Flags => out.extend_from_slice(
                    format!("FLAGS ({})", flag_list(m.flags, &m.keywords)).as_bytes(),
                ),
                FetchAtt::InternalDate => out.extend_from_slice(
                    format!("INTERNALDATE \"{}\"", format_date_time(m.internal_date)).as_bytes(),
                ),
                FetchAtt::Rfc822Size => {
                    out.extend_from_slice(format!("RFC822.SIZE {}", m.size).as_bytes())
                }
                FetchAtt::ModSeq => {
                    out.extend_from_slice(format!("MODSEQ ({})", m.modseq).as_bytes())
                }
                FetchAtt::EmailId => {
                    out.extend_from_slice(format!("EMAILID ({})", email_id(m)).as_bytes())
                }
                FetchAtt::ThreadId => {
                    out.extend_from_slice(format!("THREADID ({})", thread_id(meta, m)).as_bytes())
                }
                FetchAtt::Envelope => {
                    out.extend_from_slice(b"ENVELOPE ");
                    envelope::write(&mut out, section::message_header(meta, raw), utf8);
                }
                FetchAtt::Body => {
                    out.extend_from_slice(b"BODY ");
                    structure::write(
                        &mut out,
                        meta,
                        raw,
                        structure::Form {
                            extended: false,
                            utf8,
                            rev2: self.rev2,
                        },
                    );
                }
                FetchAtt::BodyStructure => {
                    out.extend_from_slice(b"BODYSTRUCTURE ");
                    structure::write(
                        &mut out,
                        meta,
                        raw,
                        structure::Form {
                            extended: true,
                            utf8,
                            rev2: self.rev2,
                        },
                    );
                }
                FetchAtt::Rfc822 => {
                    out.extend_from_slice(b"RFC822 ");
                    body_literal(&mut out, raw);
                }
                FetchAtt::Rfc822Header => {
                    out.extend_from_slice(b"RFC822.HEADER ");
                    body_literal(&mut out, section::message_header(meta, raw));
                }
                FetchAtt::Rfc822Text => {
                    out.extend_from_slice(b"RFC822.TEXT ");
                    let start = section::message_header(meta, raw).len();
                    body_literal(&mut out, &raw[start.min(raw.len())..]);
                }
                FetchAtt::BodySection {
                    section: s,
                    partial,
                    ..
                } => {
                    out.extend_from_slice(format!("BODY[{}]", section_name(s)).as_bytes());
                    if let Some((o, _)) = partial {
                        out.extend_from_slice(format!("<{o}>").as_bytes());
                    }
                    out.push(b' ');
                    match section::body_section(meta, raw, s) {
                        Ok(data) => body_literal(&mut out, partial_slice(&data, *partial)),
                        // A part that does not exist reads as empty (as Dovecot answers).
                        Err(_) => body_literal(&mut out, b""),
                    }
                }
                FetchAtt::Binary { part, partial, .. } => {
                    let data = match section::binary_section(meta, raw, part) {
                        Ok(d) => d,
                        Err(section::SectionError::UnknownEncoding) => {
                            return Err(FetchFailure::UnknownCte)
                        }
                        Err(section::SectionError::NoSuchPart) => Vec::new(),
                    };
                    let name = part
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(".");
                    out.extend_from_slice(format!("BINARY[{name}]").as_bytes());
                    if let Some((o, _)) = partial {
                        out.extend_from_slice(format!("<{o}>").as_bytes());
                    }
                    out.push(b' ');
                    response::literal(&mut out, partial_slice(&data, *partial));
                }
                FetchAtt::BinarySize(part) => {
                    let size = match section::binary_section(meta, raw, part) {
                        Ok(d) => d.len(),
                        Err(section::SectionError::UnknownEncoding) => {
                            return Err(FetchFailure::UnknownCte)
                        }
                        Err(section::SectionError::NoSuchPart) => 0,
                    };
                    let name = part
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(".");
                    out.extend_from_slice(format!("BINARY.SIZE[{name}] {size}").as_bytes());
                }
            }
        }
        out.extend_from_slice(b")\r\n");
        self.conn.queue(&out);
        Ok(())
    }
}

/// A batch of messages fetched together (one store call for their metadata).
const FETCH_BATCH: usize = 64;

/// Whether every item that needs the message's bytes needs only its top-level header block,
/// and `header` is that block for this (current) metadata.
fn serves_from_header(items: &[FetchAtt], meta: &MessageMeta, header: &[u8]) -> bool {
    if meta.version != MESSAGE_META_VERSION || header.len() as u64 != meta.header_end() {
        return false;
    }
    items.iter().all(|i| match i {
        FetchAtt::Envelope | FetchAtt::Rfc822Header => true,
        FetchAtt::BodySection { section, .. } => {
            section.part.is_empty()
                && matches!(
                    section.text,
                    Some(
                        SectionText::Header
                            | SectionText::HeaderFields(_)
                            | SectionText::HeaderFieldsNot(_)
                    )
                )
        }
        FetchAtt::Body | FetchAtt::BodyStructure => !structure::needs_raw(meta),
        FetchAtt::Rfc822 | FetchAtt::Rfc822Text | FetchAtt::Binary { .. } => false,
        FetchAtt::BinarySize(_) => false,
        FetchAtt::Flags
        | FetchAtt::InternalDate
        | FetchAtt::Rfc822Size
        | FetchAtt::Uid
        | FetchAtt::ModSeq
        | FetchAtt::EmailId
        | FetchAtt::ThreadId => true,
    })
}

/// Message text as a literal: never quoted, whatever it contains, and never a literal8 (BODY
/// is not BINARY; RFC 3516 §4.2).
fn body_literal(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
}

enum FetchFailure {
    Store(StoreError),
    UnknownCte,
}

impl From<StoreError> for FetchFailure {
    fn from(e: StoreError) -> Self {
        FetchFailure::Store(e)
    }
}
