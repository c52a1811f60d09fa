//! LIST (RFC 9051 §6.3.9) with LIST-EXTENDED (RFC 5258), CHILDREN (RFC 3348), SPECIAL-USE
//! (RFC 6154) and LIST-STATUS (RFC 5819); LSUB (RFC 3501 §6.3.9).

use std::collections::BTreeSet;

use trimaran_core::delivery::retry;
use trimaran_core::store::{MailboxRecord, INBOX};

use crate::parser::{ListOptions, MailboxArg};
use crate::rights::{shared_name, Rights};
use crate::session::{Flow, Session};

/// RFC 9051 §6.3.9: `*` matches anything, `%` anything but the hierarchy separator.
pub fn matches(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|i| matches(&pattern[1..], &name[i..])),
        Some('%') => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != '/')
            .any(|i| matches(&pattern[1..], &name[i..])),
        Some(&c) => name.first() == Some(&c) && matches(&pattern[1..], &name[1..]),
    }
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    // INBOX is case-insensitive, also as the start of a pattern.
    // `get`, not indexing: byte 5 may fall inside a multi-byte character ("INBOü").
    let pattern = if pattern
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case(INBOX))
        && (pattern.len() == 5 || pattern[5..].starts_with('/'))
    {
        format!("{INBOX}{}", &pattern[5..])
    } else {
        pattern.to_string()
    };
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    if p.len() > 1000 || p.iter().filter(|c| **c == '*' || **c == '%').count() > 20 {
        return false;
    }
    matches(&p, &n)
}

/// A mailbox as this account lists it: name, record, and its rights on it.
type Listed = (String, MailboxRecord, Rights);

impl Session {
    pub(crate) async fn list(
        &mut self,
        tag: &str,
        reference: MailboxArg,
        patterns: Vec<MailboxArg>,
        options: ListOptions,
    ) -> Flow {
        self.list_as(tag, reference, patterns, options, "LIST")
            .await
    }

    pub(crate) async fn lsub(
        &mut self,
        tag: &str,
        reference: MailboxArg,
        pattern: MailboxArg,
    ) -> Flow {
        // LSUB is LIST (SUBSCRIBED) under its old name (RFC 5258 §3.1).
        let options = ListOptions {
            subscribed: true,
            ..ListOptions::default()
        };
        self.list_as(tag, reference, vec![pattern], options, "LSUB")
            .await
    }

    async fn list_as(
        &mut self,
        tag: &str,
        reference: MailboxArg,
        patterns: Vec<MailboxArg>,
        options: ListOptions,
        verb: &str,
    ) -> Flow {
        let lsub = verb == "LSUB";
        let decode = |s: &Session, raw: &[u8]| -> Option<String> {
            if raw.is_empty() {
                return Some(String::new());
            }
            if s.utf8 || !raw.is_ascii() {
                String::from_utf8(raw.to_vec()).ok()
            } else {
                crate::utf7::decode(raw)
            }
        };
        let Some(reference) = decode(self, &reference) else {
            self.bad(tag, "Invalid reference name");
            return Flow::Continue;
        };
        let mut pats = Vec::new();
        for p in &patterns {
            match decode(self, p) {
                Some(p) => pats.push(p),
                None => {
                    self.bad(tag, "Invalid mailbox pattern");
                    return Flow::Continue;
                }
            }
        }
        if pats.len() == 1 && pats[0].is_empty() && !options.extended {
            // RFC 9051 §6.3.9: the hierarchy delimiter and root.
            self.untagged(&format!("{verb} (\\Noselect) \"/\" \"\""));
            self.ok(tag, &format!("{verb} completed"));
            return Flow::Continue;
        }
        let account = self.account_id();
        let meta = self.server.core.store.meta();
        let (own, shared, subs) = match (
            retry(self.wait(), || meta.mailboxes(account)).await,
            retry(self.wait(), || meta.shared_with(account)).await,
            retry(self.wait(), || meta.subscriptions(account)).await,
        ) {
            (Ok(b), Ok(sh), Ok(s)) => (b, sh, s),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                self.store_failed(tag, &e);
                return Flow::Continue;
            }
        };
        // Every mailbox under the name this account sees it by: its own, and those other
        // accounts let it look up ("l", RFC 4314 §4) in the Other Users namespace, where a
        // special use is the owner's business and not shown.
        let mut boxes: Vec<Listed> = own
            .into_iter()
            .map(|b| (b.name.clone(), b, Rights::ALL))
            .collect();
        for s in shared {
            let rights = Rights::from_stored(&s.rights);
            if rights.has('l') {
                let mut record = s.mailbox;
                record.special_use = None;
                boxes.push((shared_name(&s.owner, &record.name), record, rights));
            }
        }
        let subs: BTreeSet<String> = subs.into_iter().collect();
        let existing: BTreeSet<&str> = boxes.iter().map(|b| b.0.as_str()).collect();
        // Names to consider: every mailbox, the parents they imply, and (with SUBSCRIBED)
        // subscribed names that no longer exist.
        let mut names: BTreeSet<String> = BTreeSet::new();
        for (name, _, _) in &boxes {
            let parts: Vec<&str> = name.split('/').collect();
            for d in 1..=parts.len() {
                names.insert(parts[..d].join("/"));
            }
        }
        if options.subscribed {
            names.extend(subs.iter().cloned());
        }
        let has_children = |n: &str| {
            let prefix = format!("{n}/");
            names.iter().any(|m| m.starts_with(&prefix))
        };
        let mut lines: Vec<(String, Option<&Listed>)> = Vec::new();
        for name in &names {
            let full_patterns = pats.iter().map(|p| format!("{reference}{p}"));
            let mut matched = false;
            for p in full_patterns {
                if pattern_matches(&p, name) {
                    matched = true;
                }
            }
            let found = boxes.iter().find(|b| &b.0 == name);
            let record = found.map(|b| &b.1);
            let subscribed = subs.contains(name);
            let mut attrs: Vec<&str> = Vec::new();
            let mut child_info = false;
            if options.subscribed && !subscribed {
                // RECURSIVEMATCH: a parent of a subscribed name still shows, with CHILDINFO.
                let prefix = format!("{name}/");
                if !(options.recursive_match
                    && matched
                    && subs.iter().any(|s| s.starts_with(&prefix)))
                {
                    continue;
                }
                child_info = true;
            }
            if !matched {
                continue;
            }
            if options.special_use_only && record.and_then(|r| r.special_use.as_ref()).is_none() {
                continue;
            }
            if !existing.contains(name.as_str()) {
                attrs.push(if (self.rev2 || options.extended) && !lsub {
                    "\\NonExistent"
                } else {
                    "\\Noselect"
                });
            }
            if has_children(name) {
                attrs.push("\\HasChildren");
            } else {
                attrs.push("\\HasNoChildren");
            }
            if subscribed && !lsub && (options.subscribed || options.return_subscribed) {
                attrs.push("\\Subscribed");
            }
            if let Some(su) = record.and_then(|r| r.special_use.as_deref()) {
                attrs.push(su);
            }
            let mut line = format!("* {verb} ({}) \"/\" ", attrs.join(" "));
            let mut name_bytes = Vec::new();
            crate::response::mailbox(&mut name_bytes, name, self.utf8);
            line.push_str(&String::from_utf8_lossy(&name_bytes));
            if child_info && !lsub {
                line.push_str(" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            lines.push((line, found));
        }
        for (line, found) in lines {
            self.conn.queue(line.as_bytes());
            self.conn.queue(b"\r\n");
            if let (Some(items), Some((name, record, rights))) = (&options.return_status, found) {
                let rights = *rights;
                // RFC 5819: STATUS for each selectable mailbox listed (RFC 4314: if readable).
                if !rights.has('r') {
                    continue;
                }
                if let Err(e) = self.write_status(record, name, items).await {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            }
        }
        self.ok(tag, &format!("{verb} completed"));
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(pattern_matches("*", "a/b/c"));
        assert!(pattern_matches("%", "a"));
        assert!(!pattern_matches("%", "a/b"));
        assert!(pattern_matches("a/%", "a/b"));
        assert!(pattern_matches("inbox", "INBOX"));
        assert!(pattern_matches("INBOX/*", "INBOX/x"));
        assert!(!pattern_matches("a", "ab"));
        assert!(pattern_matches("*b%", "ab"));
    }
}
