//! One IMAP connection through its states (RFC 9051 §3): not authenticated, authenticated,
//! selected, logout. Also what every command shares: reading a command with its literals,
//! replies, store errors, mailbox names, sequence sets, and bringing the selected mailbox's
//! view up to date with changes made elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::sync::OwnedSemaphorePermit;
use trimaran_core::delivery::retry;
use trimaran_core::net::{Conn, LineEvent, ReadError};
use trimaran_core::store::{
    flags, AccountId, Change, MailboxRecord, MessageEntry, MetaStore, StoreError,
};

use crate::listener::{AccountSlot, ImapServer};
use crate::parser::{self, parse_command, Bound, CommandBody, ParseError, SeqSet};
use crate::response;
use crate::rights::{self, Rights, Target};

pub(crate) enum Flow {
    Continue,
    Close,
}

pub(crate) struct Account {
    pub id: AccountId,
    pub address: String,
    pub _slot: AccountSlot,
}

/// The selected mailbox as this session knows it. Message sequence numbers are positions in
/// `messages`; they change only when this session reports an expunge (RFC 9051 §7.4.1).
pub(crate) struct Selected {
    pub mailbox: MailboxRecord,
    /// The account the mailbox belongs to: this session's, or another's that shared it.
    pub owner: AccountId,
    /// This session's rights on it (RFC 4314), re-read from the store before each command
    /// when the mailbox is another account's.
    pub rights: Rights,
    pub shared: bool,
    pub read_only: bool,
    pub messages: Vec<MessageEntry>,
    /// HIGHESTMODSEQ up to which changes have been taken in.
    pub modseq: u64,
    /// Expunges seen while they could not be reported (during FETCH, STORE, SEARCH).
    pub pending_expunges: Vec<u32>,
}

impl Selected {
    pub fn position(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    fn last_uid(&self) -> u32 {
        self.messages.last().map_or(0, |m| m.uid)
    }
}

pub(crate) struct Session {
    pub server: Arc<ImapServer>,
    pub conn: Conn,
    pub account: Option<Account>,
    pub selected: Option<Selected>,
    /// UTF8=ACCEPT or IMAP4rev2 enabled (RFC 6855, RFC 9051 §5.1): names and strings in UTF-8.
    pub utf8: bool,
    pub rev2: bool,
    pub condstore: bool,
    pub qresync: bool,
    /// UIDs saved by SEARCH RETURN (SAVE) (RFC 5182).
    pub saved: Vec<u32>,
    pub errors: usize,
    pub auth_failures: usize,
    changes: broadcast::Receiver<Change>,
    dirty: bool,
    last_sync: Instant,
}

/// What a command answers when the mailbox it names does not exist.
#[derive(Clone, Copy)]
pub(crate) enum IfMissing {
    Nonexistent,
    /// TRYCREATE for a name in this account's own namespace (APPEND, COPY, MOVE).
    TryCreate,
}

/// How often a session looks for changes made by other processes when nothing told it.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// A literal over this size holds part of the shared literal budget while it is in memory.
const BUDGETED_LITERAL: usize = 64 * 1024;

pub(crate) enum Input {
    Command(Vec<u8>, Vec<OwnedSemaphorePermit>),
    /// Already answered (a refused literal or an overlong line); read the next command.
    Refused,
}

impl Session {
    pub fn new(server: Arc<ImapServer>, conn: Conn) -> Session {
        let changes = server.core.store.watch();
        Session {
            server,
            conn,
            account: None,
            selected: None,
            utf8: false,
            rev2: false,
            condstore: false,
            qresync: false,
            saved: Vec::new(),
            errors: 0,
            auth_failures: 0,
            changes,
            dirty: false,
            last_sync: Instant::now(),
        }
    }

    pub fn meta(&self) -> &dyn MetaStore {
        self.server.core.store.meta()
    }

    pub fn wait(&self) -> Duration {
        self.server.core.config.store_wait()
    }

    pub fn untagged(&mut self, text: &str) {
        self.conn.queue(format!("* {text}\r\n").as_bytes());
    }

    pub fn tagged(&mut self, tag: &str, text: &str) {
        self.conn.queue(format!("{tag} {text}\r\n").as_bytes());
    }

    pub fn ok(&mut self, tag: &str, text: &str) {
        self.tagged(tag, &format!("OK {text}"));
    }

    pub fn no(&mut self, tag: &str, text: &str) {
        self.tagged(tag, &format!("NO {text}"));
    }

    /// A client mistake, counted toward the error limit.
    pub fn bad(&mut self, tag: &str, text: &str) {
        self.errors += 1;
        self.tagged(tag, &format!("BAD {text}"));
    }

    /// Maps a store failure to its reply (DESIGN.md G2: our trouble is never the client's
    /// permanent failure nor a wrong answer).
    pub fn store_failed(&mut self, tag: &str, e: &StoreError) {
        match e {
            StoreError::NotFound(what) => self.no(tag, &format!("[NONEXISTENT] No such {what}")),
            StoreError::AlreadyExists(what) => {
                self.no(tag, &format!("[ALREADYEXISTS] {what} already exists"))
            }
            StoreError::Invalid(why) => self.no(tag, &format!("[CANNOT] {why}")),
            StoreError::OverQuota(_) => self.no(tag, "[OVERQUOTA] Quota exceeded"),
            e => {
                tracing::warn!(error = %e, "IMAP: store unavailable");
                self.no(tag, "[UNAVAILABLE] Temporary failure, try again later")
            }
        }
    }

    pub async fn run(mut self) {
        let hello = if self.conn.tls || self.server.tls.is_none() {
            "Trimaran IMAP ready"
        } else {
            "Trimaran IMAP ready, STARTTLS before logging in"
        };
        let caps = self.capabilities();
        self.untagged(&format!("OK [CAPABILITY {caps}] {hello}"));
        let mut stopping = self.server.gate.stopping();
        loop {
            let timeout = self.autologout();
            let input = tokio::select! {
                r = self.read_command(timeout) => r,
                // Between commands nothing is half done.
                _ = stopping.wait_for(|s| *s) => {
                    self.untagged("BYE [UNAVAILABLE] Server shutting down");
                    break;
                }
            };
            let flow = match input {
                Ok(Input::Command(buf, _permits)) => self.dispatch(&buf).await,
                Ok(Input::Refused) => Flow::Continue,
                // RFC 9051 §5.4: the autologout timer.
                Err(ReadError::TimedOut) => {
                    self.untagged("BYE Autologout; idle for too long");
                    break;
                }
                Err(_) => break,
            };
            if matches!(flow, Flow::Close) {
                break;
            }
            if self.errors >= self.server.core.config.imap.max_errors {
                self.untagged("BYE Too many errors");
                break;
            }
        }
        self.conn.shutdown().await;
    }

    pub fn autologout(&self) -> Duration {
        let limits = &self.server.core.config.imap;
        Duration::from_secs(if self.account.is_some() {
            limits.idle_timeout
        } else {
            limits.login_timeout
        })
    }

    /// Reads one command with its literals (RFC 9051 §4.3, RFC 7888): a synchronising literal
    /// is invited with a continuation request only once it is known to fit.
    pub async fn read_command(&mut self, timeout: Duration) -> Result<Input, ReadError> {
        let limits = self.server.core.config.imap.clone();
        let mut buf = Vec::new();
        let mut permits = Vec::new();
        let mut line_bytes = 0usize;
        loop {
            let line = match self
                .conn
                .read_line(
                    limits.max_command_line.saturating_sub(line_bytes).max(3),
                    timeout,
                )
                .await?
            {
                LineEvent::Line(l) => l,
                LineEvent::TooLong => {
                    self.errors += 1;
                    self.untagged("BAD [TOOBIG] Command line too long");
                    return Ok(Input::Refused);
                }
            };
            line_bytes += line.len();
            let literal = literal_at_end(&line);
            buf.extend_from_slice(&line);
            let Some((size, synchronising)) = literal else {
                return Ok(Input::Command(buf, permits));
            };
            let is_append = command_name(&buf).is_some_and(|n| n.eq_ignore_ascii_case("APPEND"));
            let limit = if is_append {
                limits.max_message_size
            } else {
                limits.max_literal
            };
            let tag = tag_of(&buf);
            let too_big = size > limit
                || buf.len() + size > limit.saturating_mul(4).max(limit + limits.max_command_line);
            let permit = if too_big || size <= BUDGETED_LITERAL {
                None
            } else {
                let kib = size.div_ceil(1024).min(u32::MAX as usize) as u32;
                match self
                    .server
                    .literal_budget
                    .clone()
                    .try_acquire_many_owned(kib)
                {
                    Ok(p) => Some(p),
                    Err(_) => {
                        self.refuse_literal(
                            &tag,
                            size,
                            synchronising,
                            "[LIMIT] Server busy, try again later",
                            timeout,
                        )
                        .await?;
                        return Ok(Input::Refused);
                    }
                }
            };
            if too_big {
                let text = if is_append {
                    format!(
                        "[TOOBIG] Message larger than APPENDLIMIT {}",
                        limits.max_message_size
                    )
                } else {
                    "[TOOBIG] Literal too large".to_string()
                };
                self.refuse_literal(&tag, size, synchronising, &text, timeout)
                    .await?;
                return Ok(Input::Refused);
            }
            permits.extend(permit);
            if synchronising {
                self.conn.queue(b"+ Ready for literal data\r\n");
            }
            self.read_exact_into(&mut buf, size, timeout).await?;
        }
    }

    /// Answers a literal we will not take. A non-synchronising one is already on its way and
    /// is read and dropped to stay in step with the client (RFC 7888 §4).
    async fn refuse_literal(
        &mut self,
        tag: &Option<String>,
        size: usize,
        synchronising: bool,
        text: &str,
        timeout: Duration,
    ) -> Result<(), ReadError> {
        if !synchronising {
            let mut left = size;
            while left > 0 {
                if self.conn.pending().is_empty() {
                    self.conn.fill(timeout).await?;
                }
                let n = left.min(self.conn.pending().len());
                self.conn.consume(n);
                left -= n;
            }
            // The rest of the command line.
            let _ = self
                .conn
                .read_line(self.server.core.config.imap.max_command_line, timeout)
                .await?;
        }
        match tag {
            Some(tag) => self.no(tag, text),
            None => self.untagged(&format!("BAD {text}")),
        }
        Ok(())
    }

    async fn read_exact_into(
        &mut self,
        buf: &mut Vec<u8>,
        size: usize,
        timeout: Duration,
    ) -> Result<(), ReadError> {
        let mut left = size;
        while left > 0 {
            if self.conn.pending().is_empty() {
                self.conn.fill(timeout).await?;
            }
            let n = left.min(self.conn.pending().len());
            buf.extend_from_slice(&self.conn.pending()[..n]);
            self.conn.consume(n);
            left -= n;
        }
        Ok(())
    }

    async fn dispatch(&mut self, buf: &[u8]) -> Flow {
        let command = match parse_command(buf) {
            Ok(c) => c,
            Err(rejected) => {
                let text = match rejected.error {
                    ParseError::Syntax(s) => s,
                    ParseError::BadCharset => {
                        if let Some(tag) = &rejected.tag {
                            self.no(tag, "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
                        }
                        return Flow::Continue;
                    }
                };
                match rejected.tag {
                    Some(tag) => self.bad(&tag, &format!("Syntax error: {text}")),
                    None => {
                        self.errors += 1;
                        self.untagged(&format!("BAD Syntax error: {text}"));
                    }
                }
                return Flow::Continue;
            }
        };
        let tag = command.tag;
        use CommandBody as C;
        let authenticated = self.account.is_some();
        let selected = self.selected.is_some();
        let flow = match command.body {
            // Any state (RFC 9051 §6.1).
            C::Capability => self.capability(&tag),
            C::Noop | C::Check => self.noop(&tag).await,
            C::Logout => return self.logout(&tag),
            C::Id(fields) => self.id(&tag, fields),
            // Not authenticated (RFC 9051 §6.2).
            C::StartTls if !authenticated => return self.starttls(&tag).await,
            C::Login { user, password } if !authenticated => {
                return self.login(&tag, user, password).await
            }
            C::Authenticate { mechanism, initial } if !authenticated => {
                return self.authenticate(&tag, mechanism, initial).await
            }
            C::StartTls | C::Login { .. } | C::Authenticate { .. } => {
                self.bad(&tag, "Already authenticated");
                Flow::Continue
            }
            _ if !authenticated => {
                self.bad(&tag, "Log in first");
                Flow::Continue
            }
            // Authenticated (RFC 9051 §6.3).
            C::Enable(caps) => self.enable(&tag, caps),
            C::Namespace => self.namespace(&tag),
            C::Select {
                mailbox,
                read_only,
                condstore,
                qresync,
            } => {
                self.select(&tag, mailbox, read_only, condstore, qresync)
                    .await
            }
            C::Create(name) => self.create(&tag, name).await,
            C::Delete(name) => self.delete(&tag, name).await,
            C::Rename(from, to) => self.rename(&tag, from, to).await,
            C::Subscribe(name) => self.subscribe(&tag, name, true).await,
            C::Unsubscribe(name) => self.subscribe(&tag, name, false).await,
            C::List {
                reference,
                patterns,
                options,
            } => self.list(&tag, reference, patterns, options).await,
            C::Lsub { reference, pattern } => self.lsub(&tag, reference, pattern).await,
            C::Status { mailbox, items } => self.status(&tag, mailbox, items).await,
            C::Append { mailbox, messages } => self.append(&tag, mailbox, messages).await,
            C::Idle => self.idle(&tag).await,
            C::Compress(mechanism) => self.compress(&tag, mechanism).await,
            C::SetAcl {
                mailbox,
                identifier,
                rights,
            } => self.set_acl(&tag, mailbox, identifier, Some(rights)).await,
            C::DeleteAcl {
                mailbox,
                identifier,
            } => self.set_acl(&tag, mailbox, identifier, None).await,
            C::GetAcl(mailbox) => self.get_acl(&tag, mailbox).await,
            C::ListRights {
                mailbox,
                identifier,
            } => self.list_rights(&tag, mailbox, identifier).await,
            C::MyRights(mailbox) => self.my_rights(&tag, mailbox).await,
            C::GetQuota(root) => self.get_quota(&tag, root).await,
            C::GetQuotaRoot(mailbox) => self.get_quota_root(&tag, mailbox).await,
            C::SetQuota(_) => {
                self.no(&tag, "[NOPERM] Quotas are set by the administrator");
                Flow::Continue
            }
            _ if !selected => {
                self.bad(&tag, "No mailbox selected");
                Flow::Continue
            }
            // RFC 4314: rights on another account's mailbox may change while it is selected.
            _ if !self.refresh_rights(&tag).await => Flow::Continue,
            // Selected (RFC 9051 §6.4).
            C::Close => self.close(&tag, true).await,
            C::Unselect => self.close(&tag, false).await,
            C::Expunge { uids } => self.expunge(&tag, uids).await,
            C::Search { uid, key, returns } => self.search(&tag, uid, key, returns).await,
            C::Sort { uid, criteria, key } => self.sort(&tag, uid, criteria, key).await,
            C::Thread {
                uid,
                algorithm,
                key,
            } => self.thread(&tag, uid, algorithm, key).await,
            C::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                self.fetch(&tag, uid, set, items, changed_since, vanished)
                    .await
            }
            C::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => {
                self.store(&tag, uid, set, op, silent, flags, unchanged_since)
                    .await
            }
            C::Copy {
                uid,
                set,
                mailbox,
                remove,
            } => self.copy(&tag, uid, set, mailbox, remove).await,
        };
        flow
    }

    /// A mailbox name from the client, in UTF-8, with INBOX in its canonical case
    /// (RFC 9051 §5.1). Err is the reason it is not acceptable.
    pub fn mailbox_name(&self, raw: &[u8]) -> Result<String, &'static str> {
        let name = if self.utf8 || !raw.is_ascii() {
            String::from_utf8(raw.to_vec()).map_err(|_| "Mailbox name is not valid UTF-8")?
        } else {
            crate::utf7::decode(raw).ok_or("Mailbox name is not valid modified UTF-7")?
        };
        let name = trimaran_core::store::canonical_inbox(&name);
        if name.is_empty()
            || name.len() > 1000
            || name.starts_with('/')
            || name.ends_with('/')
            || name.contains("//")
            || name.chars().any(|c| c.is_control() || c == '*' || c == '%')
        {
            return Err("Invalid mailbox name");
        }
        Ok(name)
    }

    /// The account's mailbox of that name.
    pub async fn find_mailbox(&self, name: &str) -> Result<Option<MailboxRecord>, StoreError> {
        let account = self.account_id();
        let boxes = retry(self.wait(), || self.meta().mailboxes(account)).await?;
        Ok(boxes.into_iter().find(|b| b.name == name))
    }

    pub fn account_id(&self) -> AccountId {
        self.account.as_ref().map_or(0, |a| a.id)
    }

    /// The mailbox a name denotes, personal or shared with this account (RFC 4314), with this
    /// session's rights on it as the store has them now. None when it does not exist or this
    /// account holds no right on it: the two must look the same (RFC 4314 §6).
    pub async fn resolve_mailbox(&self, name: &str) -> Result<Option<Target>, StoreError> {
        let me = self.account_id();
        if let Some((owner, mailbox)) = rights::split_shared(name) {
            let shared = retry(self.wait(), || self.meta().shared_with(me)).await?;
            return Ok(shared
                .into_iter()
                .find(|s| s.owner == owner && s.mailbox.name == mailbox)
                .map(|s| Target {
                    owner: s.mailbox.account_id,
                    rights: Rights::from_stored(&s.rights),
                    record: s.mailbox,
                    shared_by: Some(s.owner),
                })
                .filter(|t| !t.rights.is_empty()));
        }
        Ok(self.find_mailbox(name).await?.map(|record| Target {
            owner: me,
            record,
            rights: Rights::ALL,
            shared_by: None,
        }))
    }

    /// The mailbox a command names and its name as a string; None when the command was answered
    /// instead: a name that is not acceptable, no such mailbox, or a store failure.
    pub(crate) async fn named_mailbox(
        &mut self,
        tag: &str,
        raw: &[u8],
        if_missing: IfMissing,
    ) -> Option<(String, Target)> {
        let name = match self.mailbox_name(raw) {
            Ok(n) => n,
            Err(why) => {
                self.no(tag, why);
                return None;
            }
        };
        match self.resolve_mailbox(&name).await {
            Ok(Some(t)) => Some((name, t)),
            // RFC 9051 §6.3.12, §6.4.7: TRYCREATE tells the client it may create the mailbox
            // and retry, which it cannot do in another account's namespace.
            Ok(None)
                if matches!(if_missing, IfMissing::TryCreate)
                    && rights::split_shared(&name).is_none() =>
            {
                self.no(tag, "[TRYCREATE] No such mailbox");
                None
            }
            Ok(None) => {
                self.no(tag, "[NONEXISTENT] No such mailbox");
                None
            }
            Err(e) => {
                self.store_failed(tag, &e);
                None
            }
        }
    }

    /// Answers NO unless `target` grants `right`: NOPERM when the mailbox is visible to this
    /// account, NONEXISTENT when even its existence is not (RFC 4314 §4, §6).
    pub fn require(&mut self, tag: &str, target: &Target, right: char) -> bool {
        if target.rights.has(right) {
            return true;
        }
        if target.rights.has('l') {
            self.no(
                tag,
                &format!("[NOPERM] Right '{right}' is needed (RFC 4314)"),
            );
        } else {
            self.no(tag, "[NONEXISTENT] No such mailbox");
        }
        false
    }

    /// The account whose changes the session must see: the selected mailbox's owner.
    pub fn watched_account(&self) -> AccountId {
        self.selected
            .as_ref()
            .map_or_else(|| self.account_id(), |s| s.owner)
    }

    /// Re-reads this session's rights on a shared selected mailbox. False (answered) when
    /// the store failed or the right to read it is gone, which closes it.
    pub(crate) async fn refresh_rights(&mut self, tag: &str) -> bool {
        let Some(sel) = self.selected.as_ref().filter(|s| s.shared) else {
            return true;
        };
        let (me, id) = (self.account_id(), sel.mailbox.id);
        let rights = match retry(self.wait(), || self.meta().shared_with(me)).await {
            Ok(list) => list
                .into_iter()
                .find(|s| s.mailbox.id == id)
                .map_or(Rights::NONE, |s| Rights::from_stored(&s.rights)),
            Err(e) => {
                self.store_failed(tag, &e);
                return false;
            }
        };
        if !rights.has('r') {
            self.selected = None;
            self.untagged("OK [CLOSED] Access to the mailbox was withdrawn");
            self.no(tag, "[NOPERM] The mailbox is no longer shared with you");
            return false;
        }
        if let Some(sel) = self.selected.as_mut() {
            sel.rights = rights;
        }
        true
    }

    pub fn write_mailbox(&mut self, name: &str) {
        let utf8 = self.utf8;
        response::mailbox(self.conn.out(), name, utf8);
    }

    /// Positions in the selected mailbox named by a sequence set; Err for a sequence number
    /// past the end (RFC 9051 §9 seq-number).
    pub fn resolve(&self, set: &SeqSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        let Some(sel) = &self.selected else {
            return Ok(Vec::new());
        };
        let ranges: Vec<(Bound, Bound)> = match set {
            SeqSet::Ranges(r) => r.clone(),
            SeqSet::Saved => {
                // RFC 5182 §2.1: $ is the saved UIDs, whichever way the command counts.
                let mut out: Vec<usize> =
                    self.saved.iter().filter_map(|&u| sel.position(u)).collect();
                out.sort_unstable();
                return Ok(out);
            }
        };
        let n = sel.messages.len();
        let mut out = Vec::new();
        if uid {
            let max = sel.last_uid();
            for (a, b) in ranges {
                let (a, b) = (
                    parser::sequence::resolve(a, max),
                    parser::sequence::resolve(b, max),
                );
                let (lo, hi) = (a.min(b), a.max(b));
                let start = sel.messages.partition_point(|m| m.uid < lo);
                let end = sel.messages.partition_point(|m| m.uid <= hi);
                out.extend(start..end);
            }
        } else {
            for (a, b) in ranges {
                let (a, b) = (
                    parser::sequence::resolve(a, n as u32),
                    parser::sequence::resolve(b, n as u32),
                );
                if n == 0 {
                    if a == 0 && b == 0 {
                        continue;
                    }
                    return Err("No messages");
                }
                let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
                if lo == 0 || hi > n {
                    return Err("Invalid message sequence number");
                }
                out.extend(lo - 1..hi);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Notes change notices for this account that arrived meanwhile, except those of changes
    /// the selected mailbox already shows: its HIGHESTMODSEQ was read at or after their MODSEQ
    /// (this session's own STORE, and that STORE's notice coming back from PostgreSQL).
    fn drain_notices(&mut self) {
        let (me, owner) = (self.account_id(), self.watched_account());
        let shown = |c: &Change| {
            self.selected
                .as_ref()
                .is_some_and(|s| c.account == s.owner && c.modseq.is_some_and(|m| m <= s.modseq))
        };
        loop {
            match self.changes.try_recv() {
                Ok(c) if shown(&c) => {}
                Ok(c)
                    if c.account == me
                        || c.account == owner
                        || c.account == trimaran_core::store::ALL_ACCOUNTS =>
                {
                    self.dirty = true
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.dirty = true,
                Err(_) => break,
            }
        }
    }

    /// Brings the selected mailbox up to date if something may have changed, reporting
    /// new messages, flag changes and (when `expunges` allows, RFC 9051 §7.4.1) removals.
    pub async fn sync(&mut self, force: bool, expunges: bool) -> Result<(), StoreError> {
        self.drain_notices();
        let due = force || self.dirty || self.last_sync.elapsed() >= SYNC_INTERVAL;
        let Some(sel) = &self.selected else {
            return Ok(());
        };
        if !due && (!expunges || sel.pending_expunges.is_empty()) {
            return Ok(());
        }
        let (account, mailbox, since) = (sel.owner, sel.mailbox.id, sel.modseq);
        let delta = retry(self.wait(), || {
            self.meta().mailbox_delta(account, mailbox, since)
        })
        .await;
        self.dirty = false;
        self.last_sync = Instant::now();
        let delta = match delta {
            Ok(d) => d,
            Err(StoreError::NotFound(_)) => {
                // Deleted by another session: nothing of it can be shown any more.
                self.untagged("BYE [NONEXISTENT] The selected mailbox was deleted");
                self.selected = None;
                return Err(StoreError::NotFound("selected mailbox".into()));
            }
            Err(e) => return Err(e),
        };
        let (condstore, qresync) = (self.condstore, self.qresync);
        let sel = self.selected.as_mut().expect("checked above");
        sel.modseq = sel.modseq.max(delta.mailbox.highestmodseq);
        sel.mailbox = delta.mailbox;
        for uid in delta.expunged {
            if sel.position(uid).is_some() && !sel.pending_expunges.contains(&uid) {
                sel.pending_expunges.push(uid);
            }
        }
        let mut flag_uids: Vec<u32> = Vec::new();
        let mut added = 0usize;
        for entry in delta.changed {
            if sel.pending_expunges.contains(&entry.uid) {
                continue;
            }
            match sel.position(entry.uid) {
                Some(i) if entry.modseq > sel.messages[i].modseq => {
                    let changed = entry.flags != sel.messages[i].flags
                        || entry.keywords != sel.messages[i].keywords;
                    if changed || condstore {
                        flag_uids.push(entry.uid);
                    }
                    sel.messages[i] = entry;
                }
                Some(_) => {}
                None if entry.uid > sel.last_uid() => {
                    sel.messages.push(entry);
                    added += 1;
                }
                // Older than our newest and unknown: expunged before we looked; skip.
                None => {}
            }
        }
        let mut lines: Vec<String> = Vec::new();
        if expunges && !sel.pending_expunges.is_empty() {
            let mut gone = std::mem::take(&mut sel.pending_expunges);
            gone.sort_unstable();
            if qresync {
                // RFC 7162 §3.2.10: VANISHED replaces EXPUNGE once QRESYNC is enabled.
                lines.push(format!("VANISHED {}", uid_set(&gone)));
                sel.messages.retain(|m| gone.binary_search(&m.uid).is_err());
            } else {
                // Highest first, so that each number is still right when it is read.
                for uid in gone.iter().rev() {
                    if let Some(i) = sel.position(*uid) {
                        sel.messages.remove(i);
                        lines.push(format!("{} EXPUNGE", i + 1));
                    }
                }
            }
        }
        // Flag changes after the removals, numbered as the client now counts.
        let mut fetches = Vec::new();
        for uid in flag_uids {
            if let Some(i) = sel.position(uid) {
                let m = &sel.messages[i];
                let modseq = if condstore {
                    format!(" MODSEQ ({})", m.modseq)
                } else {
                    String::new()
                };
                fetches.push(format!(
                    "{} FETCH (UID {} FLAGS ({}){modseq})",
                    i + 1,
                    m.uid,
                    flag_list(m.flags, &m.keywords)
                ));
            }
        }
        let exists = sel.messages.len();
        for l in lines {
            self.untagged(&l);
        }
        if added > 0 {
            self.untagged(&format!("{exists} EXISTS"));
        }
        for f in fetches {
            self.untagged(&f);
        }
        Ok(())
    }
}

/// Waits for a change notice for `account` (IDLE). A lagging receiver counts as notified.
pub async fn notice_for(rx: &mut broadcast::Receiver<Change>, account: AccountId) {
    loop {
        match rx.recv().await {
            Ok(c) if c.account == account || c.account == trimaran_core::store::ALL_ACCOUNTS => {
                return
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// `\Seen \Answered ...` and keywords, space-separated (RFC 9051 §2.3.2).
pub fn flag_list(bits: i64, keywords: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (bit, name) in SYSTEM_FLAGS {
        if bits & bit != 0 {
            out.push(name);
        }
    }
    out.extend(keywords.iter().map(String::as_str));
    out.join(" ")
}

pub const SYSTEM_FLAGS: [(i64, &str); 5] = [
    (flags::SEEN, "\\Seen"),
    (flags::ANSWERED, "\\Answered"),
    (flags::FLAGGED, "\\Flagged"),
    (flags::DELETED, "\\Deleted"),
    (flags::DRAFT, "\\Draft"),
];

/// Compact UID set text: "1:3,7,9:10".
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// `{n}` or `{n+}` / `{n-}` at the end of a line: (n, synchronising).
fn literal_at_end(line: &[u8]) -> Option<(usize, bool)> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..];
    let (digits, synchronising) = match inner.last() {
        Some(b'+') | Some(b'-') => (&inner[..inner.len() - 1], false),
        _ => (inner, true),
    };
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((
        std::str::from_utf8(digits).ok()?.parse().ok()?,
        synchronising,
    ))
}

fn tag_of(buf: &[u8]) -> Option<String> {
    let end = buf.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(&buf[..end]).ok().map(str::to_string)
}

fn command_name(buf: &[u8]) -> Option<String> {
    let mut words = buf.split(|&b| b == b' ' || b == b'\r' || b == b'\n');
    words.next()?;
    let first = std::str::from_utf8(words.next()?).ok()?;
    if first.eq_ignore_ascii_case("UID") {
        return words
            .next()
            .and_then(|w| std::str::from_utf8(w).ok())
            .map(str::to_string);
    }
    Some(first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_markers() {
        assert_eq!(literal_at_end(b"a LOGIN {5}\r\n"), Some((5, true)));
        assert_eq!(literal_at_end(b"a APPEND x {12+}\r\n"), Some((12, false)));
        assert_eq!(literal_at_end(b"a NOOP\r\n"), None);
        assert_eq!(literal_at_end(b"a x {}\r\n"), None);
        assert_eq!(literal_at_end(b"a x {99999999999999}\r\n"), None);
    }

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[]), "");
    }
}
