//! The IMAP command parser (`trimaran_imap::parser::parse_command`) on arbitrary bytes.
//!
//! The parser is given one command with its literals inlined, as the session assembles it. The
//! input is used twice: as it is, and with literals spliced in (bytes 0x01/0x02 open a literal
//! `{n}`/`{n+}` whose length is computed, the next 0x01/0x02 closes it), so that the fuzzer
//! reaches past literals without having to guess their lengths.
//!
//! The date parsers behind APPEND and SEARCH also get the input directly, as text.
//!
//! Checked, beyond "no panic": the same bytes always give the same answer; a tag, when one is
//! read, is the first bytes of the input and made of ASTRING-CHARs other than "+"; literal data
//! comes from the input and only a literal8 may carry NUL; strings never carry NUL; and every
//! accepted command, written back in canonical form (once with quoted strings, once with
//! literals only), parses to the same command.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trimaran_core::store::{flags, FlagOp};
use trimaran_fuzz::{hex, is_subslice};
use trimaran_imap::parser::date::{format_date_time, parse_date, parse_date_time};
use trimaran_imap::parser::{
    parse_command, Bound, Command, CommandBody, FetchAtt, ParseError, SearchKey, SearchReturn,
    Section, SectionText, SeqSet, SortKey, StatusItem, ThreadAlgorithm,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_dates(text);
    }
    check(data);
    if let Some(spliced) = splice_literals(data) {
        check(&spliced);
    }
});

/// Replaces each pair of markers with a literal of the bytes between them.
fn splice_literals(data: &[u8]) -> Option<Vec<u8>> {
    if !data.iter().any(|&b| b == 1 || b == 2) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut rest = data;
    loop {
        let Some(open) = rest.iter().position(|&b| b == 1 || b == 2) else {
            out.extend_from_slice(rest);
            return Some(out);
        };
        out.extend_from_slice(&rest[..open]);
        let plus = if rest[open] == 2 { "+" } else { "" };
        rest = &rest[open + 1..];
        let close = rest
            .iter()
            .position(|&b| b == 1 || b == 2)
            .unwrap_or(rest.len());
        out.extend_from_slice(format!("{{{close}{plus}}}\r\n").as_bytes());
        out.extend_from_slice(&rest[..close]);
        rest = rest.get(close + 1..).unwrap_or_default();
    }
}

/// `date-time` (APPEND) and `date` (SEARCH): what is accepted is written back the same.
fn check_dates(text: &str) {
    if let Some(t) = parse_date_time(text) {
        assert_eq!(
            parse_date_time(&format_date_time(t)),
            Some(t),
            "date-time {text:?} ({t}) does not survive INTERNALDATE"
        );
    }
    if let Some(d) = parse_date(text) {
        assert_eq!(d.rem_euclid(86_400), 0, "date {text:?} is not a midnight");
        if !text.contains(char::is_whitespace) {
            assert_eq!(parse_date_time(&format!("{text} 00:00:00 +0000")), Some(d));
        }
    }
}

/// RFC 9051 §9 ASTRING-CHAR.
fn is_astring_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

fn check(buf: &[u8]) {
    let first = parse_command(buf);
    assert_eq!(first, parse_command(buf), "parse is not deterministic");
    let cmd = match first {
        Ok(cmd) => cmd,
        Err(rejected) => {
            if let Some(tag) = &rejected.tag {
                check_tag(buf, tag);
            }
            if let ParseError::Syntax(why) = &rejected.error {
                assert!(!why.is_empty(), "empty syntax error");
            }
            return;
        }
    };
    check_tag(buf, &cmd.tag);
    check_payload(buf, &cmd.body);
    for literals in [false, true] {
        let Some(wire) = Writer::command(&cmd, literals) else {
            return;
        };
        match parse_command(&wire) {
            Ok(again) => assert_eq!(
                again,
                cmd,
                "round trip changed the command\n input: {}\n wire:  {}",
                hex(buf),
                hex(&wire)
            ),
            Err(e) => panic!(
                "canonical form of an accepted command is refused: {e:?}\n input: {}\n wire:  {}",
                hex(buf),
                hex(&wire)
            ),
        }
    }
}

fn check_tag(buf: &[u8], tag: &str) {
    assert!(!tag.is_empty(), "empty tag");
    assert!(
        buf.starts_with(tag.as_bytes()),
        "tag is not the input's start"
    );
    assert!(
        tag.bytes().all(|b| is_astring_char(b) && b != b'+'),
        "tag {tag:?} has a character RFC 9051 forbids"
    );
}

/// What the parser took from literals and strings.
fn check_payload(buf: &[u8], body: &CommandBody) {
    let no_nul = |what: &str, s: &[u8]| {
        assert!(!s.contains(&0), "NUL in {what} {s:?}");
        assert!(s.len() <= buf.len(), "{what} longer than the input");
    };
    match body {
        CommandBody::Login { user, password } => {
            no_nul("user name", user);
            no_nul("password", password);
        }
        CommandBody::Append { mailbox, messages } => {
            no_nul("mailbox", mailbox);
            for m in messages {
                assert!(
                    is_subslice(buf, &m.data),
                    "APPEND data is not bytes of the input"
                );
                if !m.binary {
                    // A NUL is only allowed in a literal8 (RFC 3516 §4.3; RFC 6855 §4 UTF8).
                    let utf8_form = is_subslice(&buf.to_ascii_uppercase(), b"UTF8 (~{");
                    assert!(
                        !m.data.contains(&0) || utf8_form,
                        "NUL in APPEND data outside a literal8"
                    );
                }
                if let Some(date) = m.date {
                    // What APPEND accepts is given back as INTERNALDATE.
                    assert_eq!(
                        parse_date_time(&format_date_time(date)),
                        Some(date),
                        "APPEND date {date} does not survive INTERNALDATE"
                    );
                }
            }
        }
        CommandBody::Select { mailbox, .. }
        | CommandBody::Create(mailbox)
        | CommandBody::Delete(mailbox)
        | CommandBody::Subscribe(mailbox)
        | CommandBody::Unsubscribe(mailbox)
        | CommandBody::Status { mailbox, .. }
        | CommandBody::Copy { mailbox, .. } => no_nul("mailbox", mailbox),
        CommandBody::Rename(a, b) => {
            no_nul("mailbox", a);
            no_nul("mailbox", b);
        }
        _ => {}
    }
}

/// Writes a parsed command back in canonical form.
struct Writer {
    out: Vec<u8>,
    /// Every string as a literal; otherwise quoted where it can be.
    literals: bool,
}

impl Writer {
    fn command(cmd: &Command, literals: bool) -> Option<Vec<u8>> {
        let mut w = Writer {
            out: Vec::new(),
            literals,
        };
        w.raw(cmd.tag.as_bytes());
        w.raw(b" ");
        w.body(&cmd.body)?;
        w.raw(b"\r\n");
        Some(w.out)
    }

    fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    fn num(&mut self, n: impl std::fmt::Display) {
        self.raw(n.to_string().as_bytes());
    }

    fn string(&mut self, s: &[u8]) {
        assert!(!s.contains(&0), "NUL in a parsed string");
        if !self.literals && !s.iter().any(|&b| b == b'\r' || b == b'\n') {
            self.raw(b"\"");
            for &b in s {
                if b == b'"' || b == b'\\' {
                    self.raw(b"\\");
                }
                self.raw(&[b]);
            }
            self.raw(b"\"");
        } else {
            self.raw(format!("{{{}}}\r\n", s.len()).as_bytes());
            self.raw(s);
        }
    }

    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.raw(b"(");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.raw(b" ");
            }
            each(self, item);
        }
        self.raw(b")");
    }

    fn words(&mut self, words: &[String]) {
        self.list(words, |w, s| w.raw(s.as_bytes()));
    }

    fn set(&mut self, set: &SeqSet) {
        match set {
            SeqSet::Saved => self.raw(b"$"),
            SeqSet::Ranges(ranges) => {
                assert!(!ranges.is_empty(), "empty sequence set");
                for (i, &(a, b)) in ranges.iter().enumerate() {
                    if i > 0 {
                        self.raw(b",");
                    }
                    self.bound(a);
                    if a != b {
                        self.raw(b":");
                        self.bound(b);
                    }
                }
            }
        }
    }

    fn bound(&mut self, b: Bound) {
        match b {
            Bound::Star => self.raw(b"*"),
            Bound::Num(n) => {
                assert!(n > 0, "sequence number 0");
                self.num(n);
            }
        }
    }

    fn uid(&mut self, uid: bool) {
        if uid {
            self.raw(b"UID ");
        }
    }

    #[allow(unreachable_patterns)] // commands added later are not written back (yet)
    fn body(&mut self, body: &CommandBody) -> Option<()> {
        use CommandBody as C;
        match body {
            C::Capability => self.raw(b"CAPABILITY"),
            C::Noop => self.raw(b"NOOP"),
            C::Logout => self.raw(b"LOGOUT"),
            C::StartTls => self.raw(b"STARTTLS"),
            C::Namespace => self.raw(b"NAMESPACE"),
            C::Check => self.raw(b"CHECK"),
            C::Close => self.raw(b"CLOSE"),
            C::Unselect => self.raw(b"UNSELECT"),
            C::Idle => self.raw(b"IDLE"),
            C::Expunge { uids: None } => self.raw(b"EXPUNGE"),
            C::Expunge { uids: Some(set) } => {
                self.raw(b"UID EXPUNGE ");
                self.set(set);
            }
            C::Authenticate { mechanism, initial } => {
                self.raw(b"AUTHENTICATE ");
                self.raw(mechanism.as_bytes());
                if let Some(i) = initial {
                    assert!(!i.contains(&b'\r') && !i.contains(&b'\n'));
                    self.raw(b" ");
                    self.raw(i);
                }
            }
            C::Login { user, password } => {
                self.raw(b"LOGIN ");
                self.string(user);
                self.raw(b" ");
                self.string(password);
            }
            C::Enable(caps) => {
                assert!(!caps.is_empty());
                self.raw(b"ENABLE");
                for c in caps {
                    self.raw(b" ");
                    self.raw(c.as_bytes());
                }
            }
            C::Id(fields) => {
                self.raw(b"ID ");
                if fields.is_empty() {
                    self.raw(b"NIL");
                } else {
                    self.list(fields, |w, (k, v)| {
                        w.string(k);
                        w.raw(b" ");
                        match v {
                            Some(v) => w.string(v),
                            None => w.raw(b"NIL"),
                        }
                    });
                }
            }
            C::Select {
                mailbox,
                read_only,
                condstore,
                qresync,
            } => {
                self.raw(if *read_only { b"EXAMINE " } else { b"SELECT " });
                self.string(mailbox);
                let mut params: Vec<Vec<u8>> = Vec::new();
                if *condstore {
                    params.push(b"CONDSTORE".to_vec());
                }
                if let Some(q) = qresync {
                    let mut w = Writer {
                        out: Vec::new(),
                        literals: self.literals,
                    };
                    w.raw(b"QRESYNC (");
                    w.num(q.uidvalidity);
                    w.raw(b" ");
                    w.num(q.modseq);
                    if let Some(known) = &q.known_uids {
                        w.raw(b" ");
                        w.set(known);
                    }
                    w.raw(b")");
                    params.push(w.out);
                }
                if !params.is_empty() {
                    self.raw(b" ");
                    self.list(&params, |w, p| w.raw(p));
                }
            }
            C::Create(m) => {
                self.raw(b"CREATE ");
                self.string(m);
            }
            C::Delete(m) => {
                self.raw(b"DELETE ");
                self.string(m);
            }
            C::Rename(a, b) => {
                self.raw(b"RENAME ");
                self.string(a);
                self.raw(b" ");
                self.string(b);
            }
            C::Subscribe(m) => {
                self.raw(b"SUBSCRIBE ");
                self.string(m);
            }
            C::Unsubscribe(m) => {
                self.raw(b"UNSUBSCRIBE ");
                self.string(m);
            }
            C::List {
                reference,
                patterns,
                options: o,
            } => {
                self.raw(b"LIST ");
                if o.extended {
                    let mut sel = Vec::new();
                    if o.subscribed {
                        sel.push("SUBSCRIBED".to_string());
                    }
                    if o.special_use_only {
                        sel.push("SPECIAL-USE".to_string());
                    }
                    if o.recursive_match {
                        sel.push("RECURSIVEMATCH".to_string());
                    }
                    self.words(&sel);
                    self.raw(b" ");
                }
                self.string(reference);
                self.raw(b" ");
                if o.extended {
                    self.list(patterns, |w, p| w.string(p));
                    let mut ret = Vec::new();
                    if o.return_subscribed {
                        ret.push("SUBSCRIBED".to_string());
                    }
                    if o.return_children {
                        ret.push("CHILDREN".to_string());
                    }
                    if o.return_special_use {
                        ret.push("SPECIAL-USE".to_string());
                    }
                    if let Some(items) = &o.return_status {
                        let mut w = Writer {
                            out: b"STATUS ".to_vec(),
                            literals: self.literals,
                        };
                        w.status_items(items);
                        ret.push(String::from_utf8(w.out).expect("ASCII"));
                    }
                    self.raw(b" RETURN ");
                    self.words(&ret);
                } else {
                    assert_eq!(patterns.len(), 1, "plain LIST has one pattern");
                    self.string(&patterns[0]);
                }
            }
            C::Lsub { reference, pattern } => {
                self.raw(b"LSUB ");
                self.string(reference);
                self.raw(b" ");
                self.string(pattern);
            }
            C::Status { mailbox, items } => {
                self.raw(b"STATUS ");
                self.string(mailbox);
                self.raw(b" ");
                self.status_items(items);
            }
            C::Append { mailbox, messages } => {
                assert!(!messages.is_empty());
                self.raw(b"APPEND ");
                self.string(mailbox);
                for m in messages {
                    self.raw(b" ");
                    if !m.flags.is_empty() {
                        self.words(&m.flags);
                        self.raw(b" ");
                    }
                    if let Some(d) = m.date {
                        let text = format_date_time(d);
                        if parse_date_time(&text) != Some(d) {
                            return None; // reported by check_payload
                        }
                        self.raw(b"\"");
                        self.raw(text.as_bytes());
                        self.raw(b"\" ");
                    }
                    let len = m.data.len();
                    if m.binary {
                        self.raw(format!("~{{{len}}}\r\n").as_bytes());
                        self.raw(&m.data);
                    } else if m.data.contains(&0) {
                        self.raw(format!("UTF8 (~{{{len}}}\r\n").as_bytes());
                        self.raw(&m.data);
                        self.raw(b")");
                    } else {
                        self.raw(format!("{{{len}}}\r\n").as_bytes());
                        self.raw(&m.data);
                    }
                }
            }
            C::Search { uid, key, returns } => {
                self.uid(*uid);
                self.raw(b"SEARCH ");
                if let Some(r) = returns {
                    self.raw(b"RETURN ");
                    self.list(r, |w, r| {
                        w.raw(match r {
                            SearchReturn::Min => b"MIN",
                            SearchReturn::Max => b"MAX",
                            SearchReturn::All => b"ALL",
                            SearchReturn::Count => b"COUNT",
                            SearchReturn::Save => b"SAVE",
                        })
                    });
                    self.raw(b" ");
                }
                self.key(key, true)?;
            }
            C::Fetch {
                uid,
                set,
                items,
                changed_since,
                vanished,
            } => {
                self.uid(*uid);
                self.raw(b"FETCH ");
                self.set(set);
                self.raw(b" ");
                self.list(items, |w, a| w.fetch_att(a));
                let mut mods = Vec::new();
                if let Some(m) = changed_since {
                    mods.push(format!("CHANGEDSINCE {m}"));
                }
                if *vanished {
                    mods.push("VANISHED".into());
                }
                if !mods.is_empty() {
                    self.raw(b" ");
                    self.words(&mods);
                }
            }
            C::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => {
                self.uid(*uid);
                self.raw(b"STORE ");
                self.set(set);
                self.raw(b" ");
                if let Some(u) = unchanged_since {
                    self.raw(format!("(UNCHANGEDSINCE {u}) ").as_bytes());
                }
                self.raw(match op {
                    FlagOp::Add => b"+",
                    FlagOp::Remove => b"-",
                    FlagOp::Replace => b"",
                });
                self.raw(if *silent { b"FLAGS.SILENT " } else { b"FLAGS " });
                self.words(flags);
            }
            C::Copy {
                uid,
                set,
                mailbox,
                remove,
            } => {
                self.uid(*uid);
                self.raw(if *remove { b"MOVE " } else { b"COPY " });
                self.set(set);
                self.raw(b" ");
                self.string(mailbox);
            }
            C::GetQuota(root) => {
                self.raw(b"GETQUOTA ");
                self.string(root);
            }
            C::GetQuotaRoot(m) => {
                self.raw(b"GETQUOTAROOT ");
                self.string(m);
            }
            C::SetQuota(root) => {
                self.raw(b"SETQUOTA ");
                self.string(root);
                self.raw(b" ()");
            }
            C::Sort { uid, criteria, key } => {
                assert!(!criteria.is_empty(), "SORT without criteria");
                self.uid(*uid);
                self.raw(b"SORT ");
                self.list(criteria, |w, c| {
                    if c.reverse {
                        w.raw(b"REVERSE ");
                    }
                    w.raw(match c.key {
                        SortKey::Arrival => b"ARRIVAL".as_slice(),
                        SortKey::Cc => b"CC",
                        SortKey::Date => b"DATE",
                        SortKey::From => b"FROM",
                        SortKey::Size => b"SIZE",
                        SortKey::Subject => b"SUBJECT",
                        SortKey::To => b"TO",
                        SortKey::DisplayFrom => b"DISPLAYFROM",
                        SortKey::DisplayTo => b"DISPLAYTO",
                    });
                });
                self.raw(b" UTF-8 ");
                self.key(key, true)?;
            }
            C::Thread {
                uid,
                algorithm,
                key,
            } => {
                self.uid(*uid);
                self.raw(match algorithm {
                    ThreadAlgorithm::OrderedSubject => b"THREAD ORDEREDSUBJECT UTF-8 ",
                    ThreadAlgorithm::References => b"THREAD REFERENCES UTF-8 ".as_slice(),
                });
                self.key(key, true)?;
            }
            C::Compress(mechanism) => {
                self.raw(b"COMPRESS ");
                self.raw(mechanism.as_bytes());
            }
            C::SetAcl {
                mailbox,
                identifier,
                rights,
            } => {
                self.raw(b"SETACL ");
                self.string(mailbox);
                self.raw(b" ");
                self.string(identifier);
                self.raw(b" ");
                self.string(rights);
            }
            C::DeleteAcl {
                mailbox,
                identifier,
            } => {
                self.raw(b"DELETEACL ");
                self.string(mailbox);
                self.raw(b" ");
                self.string(identifier);
            }
            C::GetAcl(mailbox) => {
                self.raw(b"GETACL ");
                self.string(mailbox);
            }
            C::ListRights {
                mailbox,
                identifier,
            } => {
                self.raw(b"LISTRIGHTS ");
                self.string(mailbox);
                self.raw(b" ");
                self.string(identifier);
            }
            C::MyRights(mailbox) => {
                self.raw(b"MYRIGHTS ");
                self.string(mailbox);
            }
            _ => return None,
        }
        Some(())
    }

    fn status_items(&mut self, items: &[StatusItem]) {
        self.list(items, |w, i| {
            w.raw(match i {
                StatusItem::Messages => b"MESSAGES".as_slice(),
                StatusItem::UidNext => b"UIDNEXT",
                StatusItem::UidValidity => b"UIDVALIDITY",
                StatusItem::Unseen => b"UNSEEN",
                StatusItem::Deleted => b"DELETED",
                StatusItem::Size => b"SIZE",
                StatusItem::Recent => b"RECENT",
                StatusItem::HighestModSeq => b"HIGHESTMODSEQ",
                StatusItem::MailboxId => b"MAILBOXID",
                StatusItem::DeletedStorage => b"DELETED-STORAGE",
            })
        });
    }

    fn parts(&mut self, part: &[u32]) {
        for (i, p) in part.iter().enumerate() {
            assert!(*p > 0, "part number 0");
            if i > 0 {
                self.raw(b".");
            }
            self.num(p);
        }
    }

    fn partial(&mut self, partial: &Option<(u32, u32)>) {
        if let Some((offset, len)) = partial {
            assert!(*len > 0, "partial of length 0");
            self.raw(format!("<{offset}.{len}>").as_bytes());
        }
    }

    fn section(&mut self, s: &Section) {
        self.raw(b"[");
        self.parts(&s.part);
        if let Some(text) = &s.text {
            if !s.part.is_empty() {
                self.raw(b".");
            }
            let fields = |w: &mut Self, name: &[u8], names: &[String]| {
                assert!(!names.is_empty(), "empty header field list");
                w.raw(name);
                w.list(names, |w, n| w.string(n.as_bytes()));
            };
            match text {
                SectionText::Header => self.raw(b"HEADER"),
                SectionText::Text => self.raw(b"TEXT"),
                SectionText::Mime => {
                    assert!(!s.part.is_empty(), "MIME of the whole message");
                    self.raw(b"MIME")
                }
                SectionText::HeaderFields(names) => fields(self, b"HEADER.FIELDS ", names),
                SectionText::HeaderFieldsNot(names) => fields(self, b"HEADER.FIELDS.NOT ", names),
            }
        }
        self.raw(b"]");
    }

    fn fetch_att(&mut self, a: &FetchAtt) {
        use FetchAtt as F;
        match a {
            F::Envelope => self.raw(b"ENVELOPE"),
            F::Flags => self.raw(b"FLAGS"),
            F::InternalDate => self.raw(b"INTERNALDATE"),
            F::Rfc822 => self.raw(b"RFC822"),
            F::Rfc822Header => self.raw(b"RFC822.HEADER"),
            F::Rfc822Size => self.raw(b"RFC822.SIZE"),
            F::Rfc822Text => self.raw(b"RFC822.TEXT"),
            F::Body => self.raw(b"BODY"),
            F::BodyStructure => self.raw(b"BODYSTRUCTURE"),
            F::Uid => self.raw(b"UID"),
            F::ModSeq => self.raw(b"MODSEQ"),
            F::EmailId => self.raw(b"EMAILID"),
            F::ThreadId => self.raw(b"THREADID"),
            F::BodySection {
                peek,
                section,
                partial,
            } => {
                self.raw(if *peek { b"BODY.PEEK" } else { b"BODY" });
                self.section(section);
                self.partial(partial);
            }
            F::Binary {
                peek,
                part,
                partial,
            } => {
                self.raw(if *peek { b"BINARY.PEEK[" } else { b"BINARY[" });
                self.parts(part);
                self.raw(b"]");
                self.partial(partial);
            }
            F::BinarySize(part) => {
                self.raw(b"BINARY.SIZE[");
                self.parts(part);
                self.raw(b"]");
            }
        }
    }

    fn date(&mut self, midnight: i64) -> Option<()> {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let t = time::OffsetDateTime::from_unix_timestamp(midnight).ok()?;
        assert_eq!(
            (t.hour(), t.minute(), t.second()),
            (0, 0, 0),
            "search date is not a midnight"
        );
        // RFC 9051 §9 date-year = 4DIGIT: year 25 is "0025".
        let text = format!(
            "\"{}-{}-{:04}\"",
            t.day(),
            MONTHS[t.month() as usize - 1],
            t.year()
        );
        self.raw(text.as_bytes());
        Some(())
    }

    /// A search key; `top`: a list of keys needs no parentheses at the top of the command.
    fn key(&mut self, k: &SearchKey, top: bool) -> Option<()> {
        use SearchKey as K;
        match k {
            K::All => self.raw(b"ALL"),
            K::And(keys) => {
                assert!(keys.len() >= 2, "AND of fewer than two keys");
                if !top {
                    self.raw(b"(");
                }
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        self.raw(b" ");
                    }
                    self.key(k, false)?;
                }
                if !top {
                    self.raw(b")");
                }
            }
            K::Or(a, b) => {
                self.raw(b"OR ");
                self.key(a, false)?;
                self.raw(b" ");
                self.key(b, false)?;
            }
            K::Not(a) => {
                self.raw(b"NOT ");
                self.key(a, false)?;
            }
            K::Seq(set) => self.set(set),
            K::Uid(set) => {
                self.raw(b"UID ");
                self.set(set);
            }
            K::Flag { bit, set } => {
                let name: &[u8] = match *bit {
                    flags::ANSWERED => b"ANSWERED",
                    flags::DELETED => b"DELETED",
                    flags::DRAFT => b"DRAFT",
                    flags::FLAGGED => b"FLAGGED",
                    flags::SEEN => b"SEEN",
                    other => panic!("search on unknown flag bit {other}"),
                };
                if !*set {
                    self.raw(b"UN");
                }
                self.raw(name);
            }
            K::Keyword { name, set } => {
                self.raw(if *set { b"KEYWORD " } else { b"UNKEYWORD " });
                self.raw(name.as_bytes());
            }
            K::Recent => self.raw(b"RECENT"),
            K::New => self.raw(b"NEW"),
            K::Old => self.raw(b"OLD"),
            K::Larger(n) => self.raw(format!("LARGER {n}").as_bytes()),
            K::Smaller(n) => self.raw(format!("SMALLER {n}").as_bytes()),
            K::Before(d) => {
                self.raw(b"BEFORE ");
                self.date(*d)?;
            }
            K::On(d) => {
                self.raw(b"ON ");
                self.date(*d)?;
            }
            K::Since(d) => {
                self.raw(b"SINCE ");
                self.date(*d)?;
            }
            K::SentBefore(d) => {
                self.raw(b"SENTBEFORE ");
                self.date(*d)?;
            }
            K::SentOn(d) => {
                self.raw(b"SENTON ");
                self.date(*d)?;
            }
            K::SentSince(d) => {
                self.raw(b"SENTSINCE ");
                self.date(*d)?;
            }
            K::Header(name, value) => {
                self.raw(b"HEADER ");
                self.string(name.as_bytes());
                self.raw(b" ");
                self.string(value.as_bytes());
            }
            K::Body(s) => {
                self.raw(b"BODY ");
                self.string(s.as_bytes());
            }
            K::Text(s) => {
                self.raw(b"TEXT ");
                self.string(s.as_bytes());
            }
            K::ModSeq(n) => self.raw(format!("MODSEQ {n}").as_bytes()),
            K::EmailId(id) => {
                self.raw(b"EMAILID ");
                self.raw(id.as_bytes());
            }
            K::ThreadId(id) => {
                self.raw(b"THREADID ");
                self.raw(id.as_bytes());
            }
        }
        Some(())
    }
}
