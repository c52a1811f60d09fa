//! The records the store keeps and the requests it accepts.

use serde::{Deserialize, Serialize};

use crate::blob::{BlobHash, StoredBlob};

pub type DomainId = i64;
pub type AccountId = i64;
pub type MailboxId = i64;

/// The mailboxes every new account gets, with their RFC 6154 SPECIAL-USE attributes.
pub const DEFAULT_MAILBOXES: &[(&str, Option<&str>)] = &[
    ("INBOX", None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
    ("Archive", Some("\\Archive")),
];

pub const INBOX: &str = "INBOX";

/// A mailbox name with INBOX, and INBOX as the first level, in its canonical case: "inbox"
/// in any case is INBOX (RFC 9051 §5.1).
pub fn canonical_inbox(name: &str) -> String {
    if name.eq_ignore_ascii_case(INBOX) {
        INBOX.to_string()
    } else if name
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("INBOX/"))
        && name.len() > 6
    {
        // `get`, not indexing: byte 6 may fall inside a multi-byte character ("INBOXü").
        format!("INBOX/{}", &name[6..])
    } else {
        name.to_string()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: AccountId,
    pub address: String,
    pub password_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxRecord {
    pub id: MailboxId,
    pub account_id: AccountId,
    pub name: String,
    pub special_use: Option<String>,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
}

/// A mailbox of another account that this account holds rights on (RFC 4314).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedMailbox {
    /// The owner's address.
    pub owner: String,
    pub mailbox: MailboxRecord,
    /// RFC 4314 §2.1 rights letters.
    pub rights: String,
}

/// One message in one mailbox, as `trimaran mail list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRecord {
    pub mailbox: String,
    pub uid: u32,
    pub size: u64,
    pub hash: BlobHash,
    pub subject: Option<String>,
    pub internal_date: i64,
    pub modseq: u64,
}

/// One address in a parsed header (RFC 5322 §3.4), kept as the parts IMAP's ENVELOPE needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderAddress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One MIME part with its byte offsets in the stored message, so that later readers (IMAP
/// BODY[section], BODYSTRUCTURE) slice the blob instead of parsing it again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// e.g. "text", "multipart", "message"
    pub content_type: String,
    pub content_subtype: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disposition_params: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub offset_header: u64,
    pub offset_body: u64,
    pub offset_end: u64,
    /// Number of lines in the body, for text/* and message/rfc822 (RFC 9051 §7.5.2).
    pub body_lines: u64,
    /// Indexes into `MessageMeta::parts` of this part's children.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<usize>,
}

/// What is parsed once at delivery so that reading mail never re-parses bodies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// Version of this structure; readers re-parse older ones.
    pub version: u32,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Date: header as seconds since the epoch, when it parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_date: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<HeaderAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sender: Vec<HeaderAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reply_to: Vec<HeaderAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<HeaderAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<HeaderAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<HeaderAddress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Byte length of the top-level header block, including the blank line.
    pub header_size: u64,
    /// Flattened MIME tree; index 0 is the root.
    pub parts: Vec<PartMeta>,
    /// False when the MIME structure could not be fully understood; the bytes are still stored.
    pub well_formed: bool,
}

impl MessageMeta {
    /// Where the top-level header block ends (and the body begins).
    pub fn header_end(&self) -> u64 {
        self.parts
            .first()
            .map_or(self.header_size, |p| p.offset_body)
    }
}

pub const MESSAGE_META_VERSION: u32 = 2;

/// Largest header block copied beside the metadata ([`NewMessage::header`]).
pub const MAX_HEADER_COPY: u64 = 64 * 1024;

/// A message on its way into the store: its body and what was parsed from it.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub blob: StoredBlob,
    pub meta: MessageMeta,
    /// The top-level header block (the first `meta.header_size` bytes), kept beside the
    /// metadata so that header fetches need not read the body; None when too large to copy.
    pub header: Option<Vec<u8>>,
    /// What SEARCH looks at; None stores the message unindexed (searched from its body).
    pub text: Option<crate::search::IndexedText>,
    /// Seconds since the epoch (IMAP INTERNALDATE).
    pub received_at: i64,
}

/// Copies for local accounts. Each goes into the account's INBOX.
#[derive(Clone, Debug)]
pub struct LocalDelivery {
    /// The bytes as finally delivered (with `Return-Path:`, RFC 5321 §4.4).
    pub message: NewMessage,
    /// Accounts that receive a copy. Duplicates are delivered once.
    pub accounts: Vec<AccountId>,
}

/// Mail for remote recipients, accepted into the outbound queue.
#[derive(Clone, Debug)]
pub struct OutboundRequest {
    /// The bytes to relay (no `Return-Path:`: that is added only at final delivery).
    pub message: NewMessage,
    pub sender: String,
    pub recipients: Vec<OutboundRecipient>,
    /// The authenticated account that submitted it, if any.
    pub submitted_by: Option<AccountId>,
    pub envelope: OutboundEnvelope,
}

/// What the SMTP client must know about a queued message besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundEnvelope {
    /// RFC 3461 §4.4 ENVID, decoded from xtext.
    pub envid: Option<String>,
    /// RFC 3461 §4.3 RET.
    pub ret: Option<Ret>,
    pub body: BodyType,
    /// RFC 6531: the message needs SMTPUTF8 end to end.
    pub smtputf8: bool,
    /// RFC 4865 FUTURERELEASE: not sent before this Unix time (0: at once).
    pub hold_until: i64,
}

/// RFC 3461 §4.3: how much of the message a report carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Headers => "HDRS",
        }
    }

    pub fn parse(s: &str) -> Option<Ret> {
        match s {
            "FULL" => Some(Ret::Full),
            "HDRS" => Some(Ret::Headers),
            _ => None,
        }
    }
}

/// The body as declared by MAIL's BODY parameter (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

impl BodyType {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }

    pub fn parse(s: &str) -> Option<BodyType> {
        match s {
            "7BIT" => Some(BodyType::SevenBit),
            "8BITMIME" => Some(BodyType::EightBitMime),
            "BINARYMIME" => Some(BodyType::BinaryMime),
            _ => None,
        }
    }
}

/// RFC 3461 §4.1 NOTIFY. `None` where a recipient has no NOTIFY parameter: we then report
/// failures and delays (the choice §4.1 leaves to the MTA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };
    pub const DEFAULT: Notify = Notify {
        success: false,
        failure: true,
        delay: true,
    };

    /// The parameter's value as it goes on the wire and into the store: `NEVER` or a list.
    pub fn to_param(self) -> String {
        let mut words = Vec::new();
        if self.success {
            words.push("SUCCESS");
        }
        if self.failure {
            words.push("FAILURE");
        }
        if self.delay {
            words.push("DELAY");
        }
        if words.is_empty() {
            "NEVER".to_string()
        } else {
            words.join(",")
        }
    }

    pub fn from_param(s: &str) -> Option<Notify> {
        if s.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::NEVER);
        }
        let mut n = Notify::NEVER;
        for word in s.split(',') {
            match word.to_ascii_uppercase().as_str() {
                "SUCCESS" => n.success = true,
                "FAILURE" => n.failure = true,
                "DELAY" => n.delay = true,
                _ => return None,
            }
        }
        Some(n)
    }
}

/// One remote recipient with its DSN parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRecipient {
    pub address: String,
    pub notify: Option<Notify>,
    /// RFC 3461 §4.2 ORCPT as given: `addr-type;xtext`.
    pub orcpt: Option<String>,
}

impl OutboundRecipient {
    pub fn plain(address: impl Into<String>) -> OutboundRecipient {
        OutboundRecipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }
}

/// Everything one accepted message must become, committed atomically (DESIGN.md G1).
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Unique per accepted message; makes retrying the same delivery harmless.
    pub id: String,
    pub local: Option<LocalDelivery>,
    pub outbound: Option<OutboundRequest>,
}

impl Delivery {
    /// The distinct messages whose bodies and metadata this delivery stores.
    pub fn messages(&self) -> impl Iterator<Item = &NewMessage> {
        let local = self.local.as_ref().map(|l| &l.message);
        let outbound = self
            .outbound
            .as_ref()
            .map(|o| &o.message)
            .filter(move |o| local.is_none_or(|l| l.blob.hash != o.blob.hash));
        local.into_iter().chain(outbound)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredCopy {
    pub account_id: AccountId,
    pub mailbox_id: MailboxId,
    pub uid: u32,
    pub modseq: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReceipt {
    pub copies: Vec<DeliveredCopy>,
    pub queue_id: Option<i64>,
    /// The delivery had already been committed by an earlier attempt; nothing was added.
    pub already_committed: bool,
}

/// A DKIM signing key of a domain (RFC 6376), under its selector.
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    /// The `a=` tag's value: `rsa-sha256` or `ed25519-sha256` (RFC 8463).
    pub algorithm: String,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// The bytes the DNS record's `p=` carries, base64-encoded there.
    pub public_key: Vec<u8>,
    pub created: i64,
}

impl std::fmt::Debug for DkimKey {
    /// Leaves the private key out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// One recipient of a queued message, with its message's envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRecord {
    pub queue_id: i64,
    pub recipient_id: i64,
    pub status: QueueStatus,
    pub sender: String,
    pub recipient: String,
    pub hash: BlobHash,
    pub size: u64,
    pub created: i64,
    pub next_attempt: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub envelope: OutboundEnvelope,
    pub notify: Option<Notify>,
    pub orcpt: Option<String>,
    pub delay_notified: bool,
    /// The last peer that answered for this recipient.
    pub remote_mta: Option<String>,
    /// When it was delivered or failed for good.
    pub settled: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
}

impl QueueRecord {
    /// Where the message's lifetime and delay clock start: acceptance, or release if held.
    pub fn clock_start(&self) -> i64 {
        self.created.max(self.envelope.hold_until)
    }
}

/// Where a recipient of the outbound queue stands. Settled ones stay until their report (RFC
/// 3464) is made, so a crash between settling and reporting loses no report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueStatus {
    Pending,
    /// Accepted by a peer that advertised DSN: it carries NOTIFY on (RFC 3461 §5.2.1), so no
    /// report is ours to make.
    Sent,
    /// Accepted by a peer without DSN: a requested success report is ours, as "relayed" (RFC
    /// 3461 §5.2.2).
    Relayed,
    /// Put into a local mailbox (a held message's local recipient): "delivered" (§5.2.3).
    Delivered,
    /// Refused for good, or its lifetime ran out.
    Failed,
}

impl QueueStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Pending => "pending",
            QueueStatus::Sent => "sent",
            QueueStatus::Delivered => "delivered",
            QueueStatus::Relayed => "relayed",
            QueueStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<QueueStatus> {
        match s {
            "pending" => Some(QueueStatus::Pending),
            "sent" => Some(QueueStatus::Sent),
            "delivered" => Some(QueueStatus::Delivered),
            "relayed" => Some(QueueStatus::Relayed),
            "failed" => Some(QueueStatus::Failed),
            _ => None,
        }
    }
}

/// What one attempt at one recipient came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOutcome {
    pub recipient_id: i64,
    /// The peer's reply or our own reason, for `queue show` and the report.
    pub detail: String,
    pub remote_mta: Option<String>,
    pub result: QueueResult,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueResult {
    /// Settled as delivered or relayed (never Pending).
    Done(QueueStatus),
    /// Try again at this Unix time.
    Retry(i64),
}

/// System flags as a bit set (RFC 9051 §2.3.2); keywords are kept apart.
pub mod flags {
    pub const SEEN: i64 = 1;
    pub const ANSWERED: i64 = 2;
    pub const FLAGGED: i64 = 4;
    pub const DELETED: i64 = 8;
    pub const DRAFT: i64 = 16;
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The part after the last '@', lower-cased: the domain of a mailbox address.
pub fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, d)| d)
}

/// One message in a mailbox as IMAP sees it: everything a session keeps per message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageEntry {
    pub uid: u32,
    pub hash: BlobHash,
    pub size: u64,
    pub internal_date: i64,
    /// Bit set of [`flags`].
    pub flags: i64,
    pub keywords: Vec<String>,
    pub modseq: u64,
}

/// Keywords are stored as one space-separated string: they are atoms (RFC 9051 §9 `flag-keyword`)
/// and so never contain a space.
pub fn keywords_from_text(text: &str) -> Vec<String> {
    text.split_ascii_whitespace().map(str::to_string).collect()
}

pub fn keywords_to_text(keywords: &[String]) -> String {
    keywords.join(" ")
}

/// How STORE changes flags (RFC 9051 §6.4.6: FLAGS, +FLAGS, -FLAGS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagChange {
    pub op: FlagOp,
    pub flags: i64,
    pub keywords: Vec<String>,
    /// CONDSTORE's UNCHANGEDSINCE (RFC 7162 §3.1.3): skip messages modified after this.
    pub unchanged_since: Option<u64>,
}

impl FlagChange {
    /// The flags and keywords a message has after this change.
    pub fn apply(&self, flags: i64, keywords: &[String]) -> (i64, Vec<String>) {
        let has = |list: &[String], k: &str| list.iter().any(|x| x.eq_ignore_ascii_case(k));
        match self.op {
            FlagOp::Replace => {
                let mut kw: Vec<String> = Vec::new();
                for k in &self.keywords {
                    if !has(&kw, k) {
                        kw.push(k.clone());
                    }
                }
                (self.flags, kw)
            }
            FlagOp::Add => {
                let mut kw = keywords.to_vec();
                for k in &self.keywords {
                    if !has(&kw, k) {
                        kw.push(k.clone());
                    }
                }
                (flags | self.flags, kw)
            }
            FlagOp::Remove => {
                let kw = keywords
                    .iter()
                    .filter(|k| !has(&self.keywords, k))
                    .cloned()
                    .collect();
                (flags & !self.flags, kw)
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagOutcome {
    /// Messages whose flags are now as asked, changed or not, with their current state.
    pub updated: Vec<MessageEntry>,
    /// Messages left alone because they changed after UNCHANGEDSINCE (RFC 7162 `MODIFIED`).
    pub modified: Vec<u32>,
    /// The account MODSEQs the change was written under, ascending (none when nothing had to
    /// change).
    pub modseqs: Vec<u64>,
}

impl FlagOutcome {
    /// The notice of this change for `account`: none when nothing was written; its MODSEQ only
    /// when one write did it all (see [`crate::Change::modseq`]).
    pub fn change(&self, account: AccountId) -> Option<crate::Change> {
        let modseq = match self.modseqs[..] {
            [] => return None,
            [m] => Some(m),
            _ => None,
        };
        Some(crate::Change { account, modseq })
    }
}

/// What changed in a mailbox since a session last looked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxDelta {
    pub mailbox: MailboxRecord,
    /// Messages added or whose flags changed, in UID order.
    pub changed: Vec<MessageEntry>,
    /// UIDs removed, in UID order.
    pub expunged: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxCounts {
    pub messages: u64,
    pub unseen: u64,
    pub deleted: u64,
    pub size: u64,
    /// Octets of the messages marked \Deleted.
    pub deleted_size: u64,
}

/// Result of COPY or MOVE: the destination's UIDVALIDITY and (source, destination) UID pairs,
/// as UIDPLUS's COPYUID reports them (RFC 4315 §3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOutcome {
    pub uidvalidity: u32,
    pub pairs: Vec<(u32, u32)>,
}

/// Result of APPEND: where the message now is (RFC 4315 APPENDUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub uidvalidity: u32,
    pub uid: u32,
    pub modseq: u64,
}

/// A message to add to a mailbox by APPEND.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub message: NewMessage,
    pub flags: i64,
    pub keywords: Vec<String>,
}

/// An account's quota (RFC 9208 STORAGE and MESSAGE resources) and what it uses now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Bytes; None: no limit.
    pub storage_limit: Option<u64>,
    pub message_limit: Option<u64>,
    pub storage_used: u64,
    pub messages_used: u64,
}

impl Quota {
    /// Whether adding `messages` messages of `bytes` in all would pass a limit.
    pub fn exceeded_by(&self, messages: u64, bytes: u64) -> bool {
        self.storage_limit
            .is_some_and(|l| self.storage_used + bytes > l)
            || self
                .message_limit
                .is_some_and(|l| self.messages_used + messages > l)
    }

    /// Whether the account is at or over a limit already.
    pub fn full(&self) -> bool {
        self.storage_limit.is_some_and(|l| self.storage_used >= l)
            || self.message_limit.is_some_and(|l| self.messages_used >= l)
    }
}

/// One account as a backup keeps it: everything needed to make it again, read in one
/// transaction so that a message moved between mailboxes meanwhile is in exactly one of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSnapshot {
    pub address: String,
    pub password_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_storage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_messages: Option<u64>,
    #[serde(default)]
    pub subscriptions: Vec<String>,
    pub mailboxes: Vec<MailboxSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxSnapshot {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub special_use: Option<String>,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    /// RFC 4314 rights granted to other accounts: (grantee address, rights).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<(String, String)>,
    pub messages: Vec<SnapshotMessage>,
}

/// A message entry of a [`MailboxSnapshot`], in UID order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMessage {
    pub uid: u32,
    pub hash: BlobHash,
    pub size: u64,
    pub internal_date: i64,
    /// Bit set of [`flags`].
    pub flags: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    pub modseq: u64,
}

impl From<MessageEntry> for SnapshotMessage {
    fn from(e: MessageEntry) -> Self {
        SnapshotMessage {
            uid: e.uid,
            hash: e.hash,
            size: e.size,
            internal_date: e.internal_date,
            flags: e.flags,
            keywords: e.keywords,
            modseq: e.modseq,
        }
    }
}

/// A message put back by a restore, wanting the UID it had (see [`crate::MetaStore::restore_messages`]).
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub append: AppendRequest,
    pub uid: u32,
}

/// The UIDs restored messages get, in order: each keeps the one it had while that is still
/// at or above the mailbox's UIDNEXT, and otherwise takes the next fresh one, so that UIDs in
/// a mailbox only ever grow and none is used twice (RFC 9051 §2.3.1.1). Returns the UIDs and
/// the UIDNEXT after them.
pub fn restored_uids(uidnext: u32, wanted: impl IntoIterator<Item = u32>) -> (Vec<u32>, u32) {
    let mut next = uidnext;
    let uids = wanted
        .into_iter()
        .map(|w| {
            let uid = w.max(next);
            next = uid + 1;
            uid
        })
        .collect();
    (uids, next)
}

#[cfg(test)]
mod restore_tests {
    use super::restored_uids;

    #[test]
    fn kept_while_ahead_fresh_once_overtaken() {
        assert_eq!(restored_uids(1, [1, 2, 5]), (vec![1, 2, 5], 6));
        // New mail took UIDs 1..=3 since: 2 and 3 are gone, 7 is still free.
        assert_eq!(restored_uids(4, [2, 3, 7]), (vec![4, 5, 7], 8));
        assert_eq!(restored_uids(10, [2, 3]), (vec![10, 11], 12));
    }
}

/// One metadata invariant as `scrub` checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invariant {
    pub name: &'static str,
    /// Rows that break it (0: it holds).
    pub violations: u64,
    /// Whether the violations were repaired (only when asked, and only where a safe repair
    /// exists).
    pub repaired: bool,
}

/// What garbage collection removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub bodies: u64,
    pub bytes: u64,
}
