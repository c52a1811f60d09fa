//! IMAP command parsing, apart from what the commands do. Input is one complete command with
//! its literals inlined (see `session::read_command`).

pub mod date;
pub mod fetch;
pub mod lexer;
pub mod search;
pub mod sequence;

pub use fetch::{FetchAtt, Section, SectionText};
pub use lexer::Lexer;
pub use search::{SearchKey, SearchReturn};
pub use sequence::{Bound, SeqSet};

use trimaran_core::store::FlagOp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    Syntax(String),
    /// A search string that is not in the announced charset (RFC 9051 §6.4.4 BADCHARSET).
    BadCharset,
}

/// A mailbox name as sent: modified UTF-7 or UTF-8 depending on the session (RFC 9051 §5.1).
pub type MailboxArg = Vec<u8>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendMessage {
    pub flags: Vec<String>,
    pub date: Option<i64>,
    pub data: Vec<u8>,
    /// Sent as a literal8 (RFC 3516 §4.4): may contain NUL.
    pub binary: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qresync {
    pub uidvalidity: u32,
    pub modseq: u64,
    pub known_uids: Option<SeqSet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    Size,
    Recent,
    HighestModSeq,
    MailboxId,
    /// RFC 9208 §4.2.4: octets of the messages marked \Deleted, in KiB.
    DeletedStorage,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// LIST-EXTENDED selection (RFC 5258 §3.1).
    pub subscribed: bool,
    pub special_use_only: bool,
    pub recursive_match: bool,
    /// RETURN options (RFC 5258 §3.2, RFC 5819 STATUS, RFC 6154 SPECIAL-USE).
    pub return_subscribed: bool,
    pub return_children: bool,
    pub return_special_use: bool,
    pub return_status: Option<Vec<StatusItem>>,
    /// The command used the extended syntax (answers may carry extended data).
    pub extended: bool,
}

/// RFC 5256 §3 sort-key, with DISPLAYFROM and DISPLAYTO from RFC 5957.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    DisplayFrom,
    DisplayTo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortCriterion {
    pub key: SortKey,
    pub reverse: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadAlgorithm {
    OrderedSubject,
    References,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandBody {
    Capability,
    Noop,
    Logout,
    StartTls,
    Authenticate {
        mechanism: String,
        initial: Option<Vec<u8>>,
    },
    Login {
        user: Vec<u8>,
        password: Vec<u8>,
    },
    Enable(Vec<String>),
    Id(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Namespace,
    Select {
        mailbox: MailboxArg,
        read_only: bool,
        condstore: bool,
        qresync: Option<Qresync>,
    },
    Create(MailboxArg),
    Delete(MailboxArg),
    Rename(MailboxArg, MailboxArg),
    Subscribe(MailboxArg),
    Unsubscribe(MailboxArg),
    List {
        reference: MailboxArg,
        patterns: Vec<MailboxArg>,
        options: ListOptions,
    },
    Lsub {
        reference: MailboxArg,
        pattern: MailboxArg,
    },
    Status {
        mailbox: MailboxArg,
        items: Vec<StatusItem>,
    },
    Append {
        mailbox: MailboxArg,
        messages: Vec<AppendMessage>,
    },
    Check,
    Close,
    Unselect,
    Expunge {
        uids: Option<SeqSet>,
    },
    Search {
        uid: bool,
        key: SearchKey,
        returns: Option<Vec<SearchReturn>>,
    },
    /// RFC 5256 SORT.
    Sort {
        uid: bool,
        criteria: Vec<SortCriterion>,
        key: SearchKey,
    },
    /// RFC 5256 THREAD.
    Thread {
        uid: bool,
        algorithm: ThreadAlgorithm,
        key: SearchKey,
    },
    Fetch {
        uid: bool,
        set: SeqSet,
        items: Vec<FetchAtt>,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SeqSet,
        op: FlagOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: MailboxArg,
        remove: bool,
    },
    Idle,
    /// RFC 4978.
    Compress(String),
    /// RFC 4314 ACL.
    SetAcl {
        mailbox: MailboxArg,
        identifier: Vec<u8>,
        rights: Vec<u8>,
    },
    DeleteAcl {
        mailbox: MailboxArg,
        identifier: Vec<u8>,
    },
    GetAcl(MailboxArg),
    ListRights {
        mailbox: MailboxArg,
        identifier: Vec<u8>,
    },
    MyRights(MailboxArg),
    /// RFC 9208 QUOTA.
    GetQuota(Vec<u8>),
    GetQuotaRoot(MailboxArg),
    SetQuota(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    pub body: CommandBody,
}

/// Why a line was not a command: with the tag when one was read, for a tagged BAD.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    pub tag: Option<String>,
    pub error: ParseError,
}

/// RFC 9051 §9 `tag`: 1*<any ASTRING-CHAR except "+">.
fn tag(lx: &mut Lexer<'_>) -> Option<String> {
    let raw = lx.astring_atom()?;
    if raw.contains('+') {
        return None;
    }
    Some(raw)
}

impl Lexer<'_> {
    fn astring_atom(&mut self) -> Option<String> {
        if matches!(self.peek(), Some(b'"') | Some(b'{')) {
            return None;
        }
        self.astring().ok().and_then(|t| String::from_utf8(t).ok())
    }
}

pub fn parse_command(buf: &[u8]) -> Result<Command, Rejected> {
    let mut lx = Lexer::new(buf);
    let Some(tag) = tag(&mut lx) else {
        return Err(Rejected {
            tag: None,
            error: ParseError::Syntax("missing or invalid tag".into()),
        });
    };
    let body = (|| {
        lx.sp()?;
        let body = command_body(&mut lx)?;
        lx.end()?;
        Ok(body)
    })();
    match body {
        Ok(body) => Ok(Command { tag, body }),
        Err(error) => Err(Rejected {
            tag: Some(tag),
            error,
        }),
    }
}

fn syntax(msg: &str) -> ParseError {
    ParseError::Syntax(msg.to_string())
}

fn command_body(lx: &mut Lexer<'_>) -> Result<CommandBody, ParseError> {
    let name = lx.atom()?.to_ascii_uppercase();
    use CommandBody as C;
    Ok(match name.as_str() {
        "CAPABILITY" => C::Capability,
        "NOOP" => C::Noop,
        "LOGOUT" => C::Logout,
        "STARTTLS" => C::StartTls,
        "NAMESPACE" => C::Namespace,
        "CHECK" => C::Check,
        "CLOSE" => C::Close,
        "UNSELECT" => C::Unselect,
        "IDLE" => C::Idle,
        "EXPUNGE" => C::Expunge { uids: None },
        "AUTHENTICATE" => {
            lx.sp()?;
            let mechanism = lx.atom()?.to_ascii_uppercase();
            // RFC 4959 SASL-IR: an initial response, "=" for an empty one.
            let initial = if lx.eat(b' ') {
                Some(
                    lx.rest()
                        .iter()
                        .take_while(|&&b| b != b'\r' && b != b'\n')
                        .copied()
                        .collect::<Vec<u8>>(),
                )
            } else {
                None
            };
            if let Some(i) = &initial {
                lx.skip(i.len());
            }
            C::Authenticate { mechanism, initial }
        }
        "LOGIN" => {
            lx.sp()?;
            let user = lx.astring()?;
            lx.sp()?;
            let password = lx.astring()?;
            C::Login { user, password }
        }
        "ENABLE" => {
            let mut caps = Vec::new();
            while lx.eat(b' ') {
                caps.push(lx.atom()?.to_ascii_uppercase());
            }
            if caps.is_empty() {
                return Err(syntax("ENABLE needs a capability"));
            }
            C::Enable(caps)
        }
        "ID" => {
            lx.sp()?;
            if lx.keyword("NIL") {
                C::Id(Vec::new())
            } else {
                let mut fields = Vec::new();
                let items = lx.list(|lx| lx.nstring())?;
                if items.len() % 2 != 0 || items.len() > 60 {
                    return Err(syntax("ID takes up to 30 field/value pairs"));
                }
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    fields.push((k.ok_or_else(|| syntax("ID field names are strings"))?, v));
                }
                C::Id(fields)
            }
        }
        "SELECT" | "EXAMINE" => {
            lx.sp()?;
            let mailbox = lx.astring()?;
            let (mut condstore, mut qresync) = (false, None);
            if lx.eat(b' ') {
                // RFC 7162 select parameters.
                lx.list(|lx| {
                    if lx.keyword("CONDSTORE") {
                        condstore = true;
                        Ok(())
                    } else if lx.keyword("QRESYNC") {
                        lx.sp()?;
                        lx.expect(b'(')?;
                        let uidvalidity = lx.nz_number()?;
                        lx.sp()?;
                        let modseq = lx.number()?;
                        let mut known_uids = None;
                        if lx.eat(b' ') {
                            if lx.peek() != Some(b'(') {
                                known_uids = Some(SeqSet::parse(lx)?);
                                let _ = lx.eat(b' ');
                            }
                            if lx.peek() == Some(b'(') {
                                // Sequence match data: an optimisation we may ignore.
                                lx.expect(b'(')?;
                                SeqSet::parse(lx)?;
                                lx.sp()?;
                                SeqSet::parse(lx)?;
                                lx.expect(b')')?;
                            }
                        }
                        lx.expect(b')')?;
                        qresync = Some(Qresync {
                            uidvalidity,
                            modseq,
                            known_uids,
                        });
                        Ok(())
                    } else {
                        Err(syntax("unknown SELECT parameter"))
                    }
                })?;
            }
            C::Select {
                mailbox,
                read_only: name == "EXAMINE",
                condstore,
                qresync,
            }
        }
        "CREATE" => {
            lx.sp()?;
            let mailbox = lx.astring()?;
            if lx.eat(b' ') {
                // RFC 6154 §3 CREATE-SPECIAL-USE is not advertised; parameters are refused.
                return Err(syntax("CREATE parameters are not supported"));
            }
            C::Create(mailbox)
        }
        "DELETE" => {
            lx.sp()?;
            C::Delete(lx.astring()?)
        }
        "RENAME" => {
            lx.sp()?;
            let from = lx.astring()?;
            lx.sp()?;
            C::Rename(from, lx.astring()?)
        }
        "SUBSCRIBE" => {
            lx.sp()?;
            C::Subscribe(lx.astring()?)
        }
        "UNSUBSCRIBE" => {
            lx.sp()?;
            C::Unsubscribe(lx.astring()?)
        }
        "LIST" => list(lx)?,
        "LSUB" => {
            lx.sp()?;
            let reference = lx.astring()?;
            lx.sp()?;
            C::Lsub {
                reference,
                pattern: lx.list_mailbox()?,
            }
        }
        "STATUS" => {
            lx.sp()?;
            let mailbox = lx.astring()?;
            lx.sp()?;
            C::Status {
                mailbox,
                items: lx.list(status_item)?,
            }
        }
        "APPEND" => append(lx)?,
        "COMPRESS" => {
            lx.sp()?;
            C::Compress(lx.atom()?)
        }
        // RFC 4314 §3.
        "SETACL" => {
            lx.sp()?;
            let mailbox = lx.astring()?;
            lx.sp()?;
            let identifier = lx.astring()?;
            lx.sp()?;
            C::SetAcl {
                mailbox,
                identifier,
                rights: lx.astring()?,
            }
        }
        "DELETEACL" => {
            lx.sp()?;
            let mailbox = lx.astring()?;
            lx.sp()?;
            C::DeleteAcl {
                mailbox,
                identifier: lx.astring()?,
            }
        }
        "GETACL" => {
            lx.sp()?;
            C::GetAcl(lx.astring()?)
        }
        "LISTRIGHTS" => {
            lx.sp()?;
            let mailbox = lx.astring()?;
            lx.sp()?;
            C::ListRights {
                mailbox,
                identifier: lx.astring()?,
            }
        }
        "MYRIGHTS" => {
            lx.sp()?;
            C::MyRights(lx.astring()?)
        }
        "GETQUOTA" => {
            lx.sp()?;
            C::GetQuota(lx.astring()?)
        }
        "GETQUOTAROOT" => {
            lx.sp()?;
            C::GetQuotaRoot(lx.astring()?)
        }
        "SETQUOTA" => {
            lx.sp()?;
            let root = lx.astring()?;
            lx.sp()?;
            // (resource limit ...), parsed only to answer it properly.
            lx.list(|lx| {
                lx.atom()?;
                lx.sp()?;
                lx.number()
            })?;
            C::SetQuota(root)
        }
        "SEARCH" => search(lx, false)?,
        "SORT" => sort(lx, false)?,
        "THREAD" => thread(lx, false)?,
        "FETCH" => fetch(lx, false)?,
        "STORE" => store(lx, false)?,
        "COPY" | "MOVE" => copy(lx, false, name == "MOVE")?,
        "UID" => {
            lx.sp()?;
            let sub = lx.atom()?.to_ascii_uppercase();
            match sub.as_str() {
                "SEARCH" => search(lx, true)?,
                "SORT" => sort(lx, true)?,
                "THREAD" => thread(lx, true)?,
                "FETCH" => fetch(lx, true)?,
                "STORE" => store(lx, true)?,
                "COPY" | "MOVE" => copy(lx, true, sub == "MOVE")?,
                "EXPUNGE" => {
                    lx.sp()?;
                    C::Expunge {
                        uids: Some(SeqSet::parse(lx)?),
                    }
                }
                _ => return Err(syntax("unknown UID command")),
            }
        }
        _ => return Err(syntax("unknown command")),
    })
}

impl Lexer<'_> {
    fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.eat(self.peek().unwrap_or(0));
        }
    }
}

fn status_item(lx: &mut Lexer<'_>) -> Result<StatusItem, ParseError> {
    let w = lx.atom()?.to_ascii_uppercase();
    Ok(match w.as_str() {
        "MESSAGES" => StatusItem::Messages,
        "UIDNEXT" => StatusItem::UidNext,
        "UIDVALIDITY" => StatusItem::UidValidity,
        "UNSEEN" => StatusItem::Unseen,
        "DELETED" => StatusItem::Deleted,
        "SIZE" => StatusItem::Size,
        "RECENT" => StatusItem::Recent,
        "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
        "MAILBOXID" => StatusItem::MailboxId,
        "DELETED-STORAGE" => StatusItem::DeletedStorage,
        _ => return Err(ParseError::Syntax(format!("unknown STATUS item {w}"))),
    })
}

/// LIST, with LIST-EXTENDED selection and return options (RFC 5258 §3).
fn list(lx: &mut Lexer<'_>) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let mut options = ListOptions::default();
    if lx.peek() == Some(b'(') {
        options.extended = true;
        lx.list(|lx| {
            let w = lx.atom()?.to_ascii_uppercase();
            match w.as_str() {
                "SUBSCRIBED" => options.subscribed = true,
                "SPECIAL-USE" => options.special_use_only = true,
                "RECURSIVEMATCH" => options.recursive_match = true,
                "REMOTE" => {}
                _ => return Err(ParseError::Syntax(format!("unknown LIST selection {w}"))),
            }
            Ok(())
        })?;
        if options.recursive_match && !options.subscribed {
            // RFC 5258 §3.1: RECURSIVEMATCH alone is an error.
            return Err(syntax("RECURSIVEMATCH needs another selection option"));
        }
        lx.sp()?;
    }
    let reference = lx.astring()?;
    lx.sp()?;
    let patterns = if lx.peek() == Some(b'(') {
        options.extended = true;
        lx.list(|lx| lx.list_mailbox())?
    } else {
        vec![lx.list_mailbox()?]
    };
    if lx.eat(b' ') {
        if !lx.keyword("RETURN") {
            return Err(syntax("expected RETURN"));
        }
        options.extended = true;
        lx.sp()?;
        lx.list(|lx| {
            let w = lx.atom()?.to_ascii_uppercase();
            match w.as_str() {
                "SUBSCRIBED" => options.return_subscribed = true,
                "CHILDREN" => options.return_children = true,
                "SPECIAL-USE" => options.return_special_use = true,
                "STATUS" => {
                    lx.sp()?;
                    options.return_status = Some(lx.list(status_item)?);
                }
                _ => {
                    return Err(ParseError::Syntax(format!(
                        "unknown LIST return option {w}"
                    )))
                }
            }
            Ok(())
        })?;
    }
    Ok(CommandBody::List {
        reference,
        patterns,
        options,
    })
}

/// APPEND, with MULTIAPPEND (RFC 3502) and literal8 (RFC 3516).
fn append(lx: &mut Lexer<'_>) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let mailbox = lx.astring()?;
    let mut messages = Vec::new();
    while lx.eat(b' ') {
        let mut flags = Vec::new();
        if lx.peek() == Some(b'(') {
            flags = lx.list(|lx| lx.flag())?;
            lx.sp()?;
        }
        let mut date = None;
        if lx.peek() == Some(b'"') {
            let raw = lx.quoted()?;
            let text = std::str::from_utf8(&raw).map_err(|_| syntax("bad date-time"))?;
            date = Some(date::parse_date_time(text).ok_or_else(|| syntax("bad date-time"))?);
            lx.sp()?;
        }
        let binary = lx.peek() == Some(b'~');
        let data = if lx.keyword("UTF8") {
            // RFC 6855 §4: "UTF8" SP "(" literal8 ")". The "~" is not optional: a plain
            // literal here would let a NUL through outside a literal8 (RFC 3516 §4.3).
            lx.sp()?;
            lx.expect(b'(')?;
            if lx.peek() != Some(b'~') {
                return Err(syntax("UTF8 APPEND data must be a literal8 (~{n})"));
            }
            let d = lx.literal(true)?;
            lx.expect(b')')?;
            d
        } else {
            lx.literal(binary)?
        };
        messages.push(AppendMessage {
            flags,
            date,
            data,
            binary,
        });
    }
    if messages.is_empty() {
        return Err(syntax("APPEND needs a message"));
    }
    Ok(CommandBody::Append { mailbox, messages })
}

fn search(lx: &mut Lexer<'_>, uid: bool) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let mut returns = None;
    if lx.keyword("RETURN") {
        lx.sp()?;
        let mut r = search::return_options(lx)?;
        if r.is_empty() {
            // RFC 4731 §3.1: RETURN () means RETURN (ALL).
            r.push(SearchReturn::All);
        }
        returns = Some(r);
        lx.sp()?;
    }
    let mut parser = search::SearchParser::new();
    if lx.keyword("CHARSET") {
        lx.sp()?;
        let charset = lx.astring()?;
        let charset = String::from_utf8_lossy(&charset).to_ascii_uppercase();
        if charset != "UTF-8" && charset != "US-ASCII" {
            return Err(ParseError::BadCharset);
        }
        parser.utf8 = true;
        lx.sp()?;
    }
    let key = parser.keys(lx, 0)?;
    Ok(CommandBody::Search { uid, key, returns })
}

/// RFC 5256 §4 search-criteria: unlike SEARCH, the charset is mandatory.
fn search_criteria(lx: &mut Lexer<'_>) -> Result<SearchKey, ParseError> {
    let charset = lx.astring()?;
    let charset = String::from_utf8_lossy(&charset).to_ascii_uppercase();
    if charset != "UTF-8" && charset != "US-ASCII" {
        return Err(ParseError::BadCharset);
    }
    lx.sp()?;
    let mut parser = search::SearchParser::new();
    parser.utf8 = true;
    parser.keys(lx, 0)
}

fn sort(lx: &mut Lexer<'_>, uid: bool) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let criteria = lx.list(|lx| {
        let reverse = lx.keyword("REVERSE");
        if reverse {
            lx.sp()?;
        }
        let key = match lx.atom()?.to_ascii_uppercase().as_str() {
            "ARRIVAL" => SortKey::Arrival,
            "CC" => SortKey::Cc,
            "DATE" => SortKey::Date,
            "FROM" => SortKey::From,
            "SIZE" => SortKey::Size,
            "SUBJECT" => SortKey::Subject,
            "TO" => SortKey::To,
            "DISPLAYFROM" => SortKey::DisplayFrom,
            "DISPLAYTO" => SortKey::DisplayTo,
            _ => return Err(syntax("unknown sort key")),
        };
        Ok(SortCriterion { key, reverse })
    })?;
    if criteria.is_empty() {
        return Err(syntax("SORT needs a sort key"));
    }
    lx.sp()?;
    let key = search_criteria(lx)?;
    Ok(CommandBody::Sort { uid, criteria, key })
}

fn thread(lx: &mut Lexer<'_>, uid: bool) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let algorithm = match lx.atom()?.to_ascii_uppercase().as_str() {
        "ORDEREDSUBJECT" => ThreadAlgorithm::OrderedSubject,
        "REFERENCES" => ThreadAlgorithm::References,
        _ => return Err(syntax("unknown threading algorithm")),
    };
    lx.sp()?;
    let key = search_criteria(lx)?;
    Ok(CommandBody::Thread {
        uid,
        algorithm,
        key,
    })
}

fn fetch(lx: &mut Lexer<'_>, uid: bool) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let set = SeqSet::parse(lx)?;
    lx.sp()?;
    let items = fetch::fetch_items(lx)?;
    let (mut changed_since, mut vanished) = (None, false);
    if lx.eat(b' ') {
        // RFC 7162 fetch modifiers.
        lx.list(|lx| {
            if lx.keyword("CHANGEDSINCE") {
                lx.sp()?;
                changed_since = Some(lx.number()?);
            } else if lx.keyword("VANISHED") {
                vanished = true;
            } else {
                return Err(syntax("unknown FETCH modifier"));
            }
            Ok(())
        })?;
        if vanished && (!uid || changed_since.is_none()) {
            // RFC 7162 §3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
            return Err(syntax("VANISHED needs UID FETCH and CHANGEDSINCE"));
        }
    }
    Ok(CommandBody::Fetch {
        uid,
        set,
        items,
        changed_since,
        vanished,
    })
}

fn store(lx: &mut Lexer<'_>, uid: bool) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let set = SeqSet::parse(lx)?;
    lx.sp()?;
    let mut unchanged_since = None;
    if lx.peek() == Some(b'(') {
        lx.list(|lx| {
            if lx.keyword("UNCHANGEDSINCE") {
                lx.sp()?;
                unchanged_since = Some(lx.number()?);
                Ok(())
            } else {
                Err(syntax("unknown STORE modifier"))
            }
        })?;
        lx.sp()?;
    }
    let op = if lx.eat(b'+') {
        FlagOp::Add
    } else if lx.eat(b'-') {
        FlagOp::Remove
    } else {
        FlagOp::Replace
    };
    let w = lx.word();
    let silent = match w.as_str() {
        "FLAGS" => false,
        "FLAGS.SILENT" => true,
        _ => return Err(syntax("expected FLAGS or FLAGS.SILENT")),
    };
    lx.sp()?;
    let flags = if lx.peek() == Some(b'(') {
        lx.list(|lx| lx.flag())?
    } else {
        let mut f = vec![lx.flag()?];
        while lx.eat(b' ') {
            f.push(lx.flag()?);
        }
        f
    };
    Ok(CommandBody::Store {
        uid,
        set,
        op,
        silent,
        flags,
        unchanged_since,
    })
}

fn copy(lx: &mut Lexer<'_>, uid: bool, remove: bool) -> Result<CommandBody, ParseError> {
    lx.sp()?;
    let set = SeqSet::parse(lx)?;
    lx.sp()?;
    Ok(CommandBody::Copy {
        uid,
        set,
        mailbox: lx.astring()?,
        remove,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> CommandBody {
        parse_command(line.as_bytes())
            .unwrap_or_else(|e| panic!("{line}: {e:?}"))
            .body
    }

    #[test]
    fn commands() {
        assert_eq!(ok("a1 NOOP\r\n"), CommandBody::Noop);
        assert!(
            matches!(ok("a LOGIN \"us\\\"er\" {3}\r\npw!\r\n"), CommandBody::Login { user, password } if user == b"us\"er" && password == b"pw!")
        );
        assert!(matches!(
            ok("a SELECT INBOX (CONDSTORE)\r\n"),
            CommandBody::Select {
                condstore: true,
                ..
            }
        ));
        assert!(matches!(
            ok("a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n"),
            CommandBody::Select {
                qresync: Some(_),
                ..
            }
        ));
        assert!(matches!(
            ok("a UID STORE 1:* (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen $Work)\r\n"),
            CommandBody::Store {
                silent: true,
                op: FlagOp::Add,
                ..
            }
        ));
        assert!(matches!(
            ok("a LIST (SUBSCRIBED) \"\" (\"*\" %) RETURN (CHILDREN STATUS (MESSAGES))\r\n"),
            CommandBody::List { .. }
        ));
        assert!(
            matches!(ok("a APPEND Sent (\\Seen) \" 1-Jan-2026 10:00:00 +0100\" {5+}\r\nhello {2}\r\nhi\r\n"), CommandBody::Append { messages, .. } if messages.len() == 2)
        );
        assert!(
            matches!(ok("a APPEND INBOX UTF8 (~{3}\r\na\0b)\r\n"), CommandBody::Append { messages, .. } if messages[0].data == b"a\0b")
        );
        // Found by fuzzing (fuzz/regressions/imap_command/append-utf8-plain-literal-nul): the
        // UTF8 form with a plain literal smuggled a NUL past the literal8 rule.
        assert!(parse_command(b"b4 APPEND INBOX UTF8 ({6}\r\n\0\0\0%\xa8\x80)\r\n").is_err());
        assert!(matches!(ok("a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR FROM alice (SINCE 1-Feb-2026 NOT SEEN) 1:5\r\n"), CommandBody::Search { uid: true, .. }));
        assert!(
            matches!(ok("a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n"), CommandBody::Authenticate { initial: Some(i), .. } if i == b"AGFsaWNlAHB3")
        );
        assert!(matches!(
            ok("a uid fetch 1:* (FLAGS) (CHANGEDSINCE 7 VANISHED)\r\n"),
            CommandBody::Fetch { vanished: true, .. }
        ));
        assert!(
            matches!(ok("a ID (\"name\" \"x\" \"version\" NIL)\r\n"), CommandBody::Id(f) if f.len() == 2)
        );
    }

    #[test]
    fn rejections_keep_the_tag() {
        for line in [
            "a FETCH\r\n",
            "a NOOP extra\r\n",
            "a BOGUS\r\n",
            "a SEARCH CHARSET KOI8-R x\r\n",
            "a LOGIN {10}\r\nab\r\n",
        ] {
            let e = parse_command(line.as_bytes()).unwrap_err();
            assert_eq!(e.tag.as_deref(), Some("a"), "{line}");
        }
        assert_eq!(parse_command(b"+ NOOP\r\n").unwrap_err().tag, None);
        assert_eq!(parse_command(b"\r\n").unwrap_err().tag, None);
    }
}
