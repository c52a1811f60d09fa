//! Ordering messages for SORT and THREAD (RFC 5256): base subjects, the i;unicode-casemap
//! collation, sort keys and both threading algorithms. Pure functions over what the store
//! already parsed at delivery, so that no message body is read.

use std::cmp::Ordering;
use std::collections::HashMap;

use trimaran_core::store::{HeaderAddress, MessageMeta};
use unicode_normalization::UnicodeNormalization;

use crate::parser::{SortCriterion, SortKey};

/// RFC 5051 i;unicode-casemap: each character's titlecase, then NFKD; compared as octets.
/// Rust has no simple-titlecase mapping; uppercase is the same for every character but the
/// few digraphs (U+01C4..U+01CC, U+01F1..U+01F3), which are rare enough in subjects.
pub fn casemap(s: &str) -> String {
    s.chars().flat_map(char::to_uppercase).nfkd().collect()
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 5256 §5 subj-blob = "[" *BLOBCHAR "]" *WSP; returns the length it covers.
fn blob(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'[') {
        return None;
    }
    let close = s[1..].iter().position(|&b| b == b']' || b == b'[')?;
    if s[1 + close] != b']' {
        return None;
    }
    let mut end = close + 2;
    while s.get(end).is_some_and(|&b| is_wsp(b)) {
        end += 1;
    }
    Some(end)
}

/// RFC 5256 §5 subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
fn refwd(s: &[u8]) -> Option<usize> {
    let lower = |i: usize| s.get(i).map(u8::to_ascii_lowercase);
    let mut p = match (lower(0), lower(1), lower(2)) {
        (Some(b'r'), Some(b'e'), _) => 2,
        (Some(b'f'), Some(b'w'), Some(b'd')) => 3,
        (Some(b'f'), Some(b'w'), _) => 2,
        _ => return None,
    };
    while s.get(p).is_some_and(|&b| is_wsp(b)) {
        p += 1;
    }
    if let Some(n) = blob(&s[p..]) {
        p += n;
    }
    (s.get(p) == Some(&b':')).then_some(p + 1)
}

/// RFC 5256 §5 subj-leader = (*subj-blob subj-refwd) / WSP
fn leader(s: &[u8]) -> Option<usize> {
    if s.first().is_some_and(|&b| is_wsp(b)) {
        return Some(1);
    }
    let mut p = 0;
    loop {
        if let Some(n) = refwd(&s[p..]) {
            return Some(p + n);
        }
        p += blob(&s[p..])?;
    }
}

/// The base subject (RFC 5256 §2.1) and whether the subject marked a reply or forward.
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) Encoded-words were decoded at delivery; whitespace runs become one space.
    let mut s = String::with_capacity(subject.len());
    for word in subject.split([' ', '\t', '\r', '\n']) {
        if word.is_empty() {
            continue;
        }
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(word);
    }
    let mut reply = false;
    loop {
        // (2) subj-trailer = "(fwd)" / WSP
        loop {
            if s.ends_with(' ') {
                s.pop();
            } else if s.len() >= 5 && s.as_bytes()[s.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                s.truncate(s.len() - 5);
                reply = true;
            } else {
                break;
            }
        }
        // (3)-(5): leaders and blobs, until neither matches.
        loop {
            if let Some(n) = leader(s.as_bytes()) {
                reply |= !is_wsp(s.as_bytes()[0]);
                s.drain(..n);
                continue;
            }
            if let Some(n) = blob(s.as_bytes()) {
                if !s[n..].trim_matches([' ', '\t']).is_empty() {
                    s.drain(..n);
                    continue;
                }
            }
            break;
        }
        // (6) "[fwd:" ... "]" wraps a forwarded subject.
        if s.len() >= 6 && s.as_bytes()[..5].eq_ignore_ascii_case(b"[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].to_string();
            reply = true;
            continue;
        }
        return (s, reply);
    }
}

/// What SORT and THREAD know of one message.
pub struct Item {
    /// Sequence number or UID, as the command answers.
    pub number: u32,
    /// Position in the mailbox: the final tie-breaker (RFC 5256 §3).
    pub position: usize,
    pub size: u64,
    pub arrival: i64,
    pub meta: Option<MessageMeta>,
}

impl Item {
    /// RFC 5256 §2.2: the Date: header in UTC, or INTERNALDATE when it is absent or invalid.
    pub fn sent(&self) -> i64 {
        self.meta
            .as_ref()
            .and_then(|m| m.date)
            .unwrap_or(self.arrival)
    }

    fn subject(&self) -> &str {
        self.meta
            .as_ref()
            .and_then(|m| m.subject.as_deref())
            .unwrap_or("")
    }

    fn base(&self) -> (String, bool) {
        let (base, reply) = base_subject(self.subject());
        (casemap(&base), reply)
    }

    fn addresses(&self, key: SortKey) -> &[HeaderAddress] {
        let Some(m) = &self.meta else { return &[] };
        match key {
            SortKey::From | SortKey::DisplayFrom => &m.from,
            SortKey::To | SortKey::DisplayTo => &m.to,
            _ => &m.cc,
        }
    }

    /// RFC 5256 §3: the addr-mailbox (local part) of the first address.
    fn mailbox(&self, key: SortKey) -> String {
        let addr = self
            .addresses(key)
            .iter()
            .find_map(|a| a.address.as_deref())
            .unwrap_or("");
        casemap(addr.rsplit_once('@').map_or(addr, |(local, _)| local))
    }

    /// RFC 5957 §3.1: the first address's display name, else its addr-spec.
    fn display(&self, key: SortKey) -> String {
        let Some(first) = self.addresses(key).first() else {
            return String::new();
        };
        let name = first.name.as_deref().map(str::trim).unwrap_or("");
        casemap(if name.is_empty() {
            first.address.as_deref().unwrap_or("")
        } else {
            name
        })
    }
}

enum Value {
    Number(i64),
    Text(String),
}

fn value(item: &Item, key: SortKey) -> Value {
    match key {
        SortKey::Arrival => Value::Number(item.arrival),
        SortKey::Date => Value::Number(item.sent()),
        SortKey::Size => Value::Number(item.size as i64),
        SortKey::Subject => Value::Text(item.base().0),
        SortKey::From | SortKey::To | SortKey::Cc => Value::Text(item.mailbox(key)),
        SortKey::DisplayFrom | SortKey::DisplayTo => Value::Text(item.display(key)),
    }
}

/// RFC 5256 §3 SORT: by each criterion in turn, REVERSE inverting only its own key; equal
/// messages stay in mailbox order.
pub fn sort(items: &mut [Item], criteria: &[SortCriterion]) {
    let mut keyed: Vec<(Vec<Value>, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (criteria.iter().map(|c| value(it, c.key)).collect(), i))
        .collect();
    keyed.sort_by(|(a, ia), (b, ib)| {
        for (n, c) in criteria.iter().enumerate() {
            let o = match (&a[n], &b[n]) {
                (Value::Number(x), Value::Number(y)) => x.cmp(y),
                (Value::Text(x), Value::Text(y)) => x.cmp(y),
                _ => Ordering::Equal,
            };
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        items[*ia].position.cmp(&items[*ib].position)
    });
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    apply_order(items, &order);
}

fn apply_order(items: &mut [Item], order: &[usize]) {
    let mut taken: Vec<Option<Item>> = Vec::with_capacity(items.len());
    for it in items.iter_mut() {
        taken.push(Some(std::mem::replace(
            it,
            Item {
                number: 0,
                position: 0,
                size: 0,
                arrival: 0,
                meta: None,
            },
        )));
    }
    for (slot, &i) in items.iter_mut().zip(order) {
        *slot = taken[i].take().expect("each index once");
    }
}

/// A thread tree: a message (index into the items) or a dummy standing for a missing one.
#[derive(Debug, PartialEq, Eq)]
pub struct Thread {
    pub item: Option<usize>,
    pub children: Vec<Thread>,
}

/// RFC 5256 §4 thread-list for each thread, numbers as the command answers.
pub fn format_threads(threads: &[Thread], items: &[Item]) -> String {
    fn members(t: &Thread, items: &[Item], out: &mut String) {
        match t.item {
            Some(i) => {
                out.push_str(&items[i].number.to_string());
                match t.children.len() {
                    0 => {}
                    1 => {
                        out.push(' ');
                        members(&t.children[0], items, out);
                    }
                    _ => {
                        out.push(' ');
                        nested(&t.children, items, out);
                    }
                }
            }
            None => nested(&t.children, items, out),
        }
    }
    fn nested(children: &[Thread], items: &[Item], out: &mut String) {
        for c in children {
            out.push('(');
            members(c, items, out);
            out.push(')');
        }
    }
    let mut out = String::new();
    nested(threads, items, &mut out);
    out
}

/// Sort key of a thread node: its message's sent date and position, or for a dummy its first
/// child's (RFC 5256 §4 REFERENCES steps 4 and 6).
fn node_key(t: &Thread, items: &[Item]) -> (i64, usize) {
    match t.item {
        Some(i) => (items[i].sent(), items[i].position),
        None => t
            .children
            .first()
            .map_or((i64::MAX, usize::MAX), |c| node_key(c, items)),
    }
}

fn sort_siblings(list: &mut [Thread], items: &[Item]) {
    for t in list.iter_mut() {
        sort_siblings(&mut t.children, items);
    }
    list.sort_by_key(|t| node_key(t, items));
}

/// RFC 5256 §4 ORDEREDSUBJECT: threads of equal base subject, each a parent with its
/// followers as children, threads in order of their first message.
pub fn ordered_subject(items: &[Item]) -> Vec<Thread> {
    let mut order: Vec<(String, i64, usize, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.base().0, it.sent(), it.position, i))
        .collect();
    order.sort();
    let mut threads: Vec<Thread> = Vec::new();
    let mut current: Option<&str> = None;
    for (base, _, _, i) in &order {
        let leaf = Thread {
            item: Some(*i),
            children: Vec::new(),
        };
        match threads.last_mut() {
            Some(t) if current == Some(base.as_str()) => t.children.push(leaf),
            _ => threads.push(leaf),
        }
        current = Some(base);
    }
    threads.sort_by_key(|t| node_key(t, items));
    threads
}

struct Node {
    item: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Arena {
    nodes: Vec<Node>,
}

impl Arena {
    fn add(&mut self, item: Option<usize>) -> usize {
        self.nodes.push(Node {
            item,
            parent: None,
            children: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Whether `a` is `b` or lies below it.
    fn within(&self, mut a: usize, b: usize) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.nodes[a].parent {
                Some(p) => a = p,
                None => return false,
            }
        }
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn tree(&self, n: usize) -> Thread {
        Thread {
            item: self.nodes[n].item,
            children: self.nodes[n]
                .children
                .iter()
                .map(|&c| self.tree(c))
                .collect(),
        }
    }
}

/// RFC 5256 §4 step 3: dummies without children go; a dummy's children take its place,
/// except at the top when there is more than one of them.
fn prune(list: Vec<Thread>, top: bool) -> Vec<Thread> {
    let mut out = Vec::with_capacity(list.len());
    for mut t in list {
        t.children = prune(std::mem::take(&mut t.children), false);
        if t.item.is_some() {
            out.push(t);
        } else if t.children.is_empty() {
        } else if !top || t.children.len() == 1 {
            out.extend(t.children);
        } else {
            out.push(t);
        }
    }
    out
}

/// The subject of a thread at the top: its message's, or for a dummy its first child's.
fn thread_subject(t: &Thread, items: &[Item]) -> (String, bool) {
    match t.item {
        Some(i) => items[i].base(),
        None => t
            .children
            .first()
            .map_or((String::new(), false), |c| thread_subject(c, items)),
    }
}

/// RFC 5256 §4 REFERENCES (after Zawinski): parent/child links from References and
/// In-Reply-To, then threads at the top gathered by base subject.
pub fn references(items: &[Item]) -> Vec<Thread> {
    let mut arena = Arena { nodes: Vec::new() };
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    // Step 1: messages in mailbox order, so a duplicated Message-ID stays with the first.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].position);
    for &i in &order {
        let meta = items[i].meta.as_ref();
        let id = meta
            .and_then(|m| m.message_id.as_deref())
            .filter(|s| !s.is_empty());
        let node = match id.and_then(|id| by_id.get(id).copied()) {
            Some(n) if arena.nodes[n].item.is_none() => {
                arena.nodes[n].item = Some(i);
                n
            }
            Some(_) => arena.add(Some(i)),
            None => {
                let n = arena.add(Some(i));
                if let Some(id) = id {
                    by_id.insert(id, n);
                }
                n
            }
        };
        let refs: Vec<&str> = match meta {
            Some(m) if !m.references.is_empty() => {
                m.references.iter().map(String::as_str).collect()
            }
            Some(m) => m.in_reply_to.as_deref().into_iter().collect(),
            None => Vec::new(),
        };
        let mut chain = Vec::with_capacity(refs.len());
        for r in refs.into_iter().filter(|r| !r.is_empty()) {
            let n = match by_id.get(r) {
                Some(&n) => n,
                None => {
                    let n = arena.add(None);
                    by_id.insert(r, n);
                    n
                }
            };
            chain.push(n);
        }
        // 1(A): each reference is the parent of the next, unless it already has a parent or
        // the link would make a loop.
        for w in chain.windows(2) {
            let (p, c) = (w[0], w[1]);
            if arena.nodes[c].parent.is_none() && !arena.within(p, c) {
                arena.link(p, c);
            }
        }
        // 1(B): the last reference is the message's parent, replacing any earlier guess.
        arena.unlink(node);
        if let Some(&p) = chain.last() {
            if !arena.within(p, node) {
                arena.link(p, node);
            }
        }
    }
    // Step 2: the root set.
    let roots: Vec<Thread> = (0..arena.nodes.len())
        .filter(|&n| arena.nodes[n].parent.is_none())
        .map(|n| arena.tree(n))
        .collect();
    // Step 3.
    let mut roots = prune(roots, true);
    // Step 4.
    for t in roots.iter_mut() {
        sort_siblings(&mut t.children, items);
    }
    roots.sort_by_key(|t| node_key(t, items));
    // Step 5: gather threads at the top with the same base subject.
    let subjects: Vec<(String, bool)> = roots.iter().map(|t| thread_subject(t, items)).collect();
    let mut table: HashMap<&str, usize> = HashMap::new();
    for (i, (base, _)) in subjects.iter().enumerate() {
        if base.is_empty() {
            continue;
        }
        match table.get(base.as_str()) {
            None => {
                table.insert(base, i);
            }
            Some(&t) => {
                let (t_dummy, c_dummy) = (roots[t].item.is_none(), roots[i].item.is_none());
                if !t_dummy && (c_dummy || (subjects[t].1 && !subjects[i].1)) {
                    table.insert(base, i);
                }
            }
        }
    }
    let mut slots: Vec<Option<Thread>> = roots.into_iter().map(Some).collect();
    for i in 0..slots.len() {
        let base = subjects[i].0.as_str();
        if base.is_empty() {
            continue;
        }
        let Some(&t) = table.get(base) else { continue };
        if t == i {
            continue;
        }
        let Some(current) = slots[i].take() else {
            continue;
        };
        let Some(mut holder) = slots[t].take() else {
            slots[i] = Some(current);
            continue;
        };
        let (t_dummy, c_dummy) = (holder.item.is_none(), current.item.is_none());
        if t_dummy && c_dummy {
            holder.children.extend(current.children);
        } else if t_dummy || (subjects[i].1 && !subjects[t].1) {
            holder.children.push(current);
        } else {
            holder = Thread {
                item: None,
                children: vec![holder, current],
            };
        }
        slots[t] = Some(holder);
    }
    let mut threads: Vec<Thread> = slots.into_iter().flatten().collect();
    // Step 6.
    sort_siblings(&mut threads, items);
    threads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects() {
        let cases = [
            ("Hello", "Hello", false),
            ("Re: Hello", "Hello", true),
            ("RE:   re: Hello  ", "Hello", true),
            ("Fwd: Re: [list] Hello (fwd)", "Hello", true),
            ("[list] Re: Hello", "Hello", true),
            ("[list]", "[list]", false),
            ("[Fwd: Re: Hello]", "Hello", true),
            ("Re [2]: Hello", "Hello", true),
            ("FW: 회의 일정", "회의 일정", true),
            ("Reunion", "Reunion", false),
            ("", "", false),
            ("\tRe:\tHello\t world", "Hello world", true),
        ];
        for (subject, base, reply) in cases {
            assert_eq!(
                base_subject(subject),
                (base.to_string(), reply),
                "{subject:?}"
            );
        }
    }

    fn item(n: u32, date: i64, subject: &str, id: &str, refs: &[&str]) -> Item {
        Item {
            number: n,
            position: n as usize,
            size: 0,
            arrival: date,
            meta: Some(MessageMeta {
                subject: Some(subject.to_string()),
                date: Some(date),
                message_id: (!id.is_empty()).then(|| id.to_string()),
                references: refs.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn references_threads_replies_and_gathers_subjects() {
        let items = vec![
            item(1, 100, "Plan", "a", &[]),
            item(2, 200, "Re: Plan", "b", &["a"]),
            item(3, 150, "Other", "c", &[]),
            item(4, 300, "Re: Plan", "d", &["a", "b"]),
            item(5, 250, "Re: Plan", "e", &["a"]),
            // A reply whose parent is not in the mailbox: a dummy, then promoted.
            item(6, 50, "Re: Lost", "f", &["gone"]),
            // Same subject, no references: gathered under the thread at the top.
            item(7, 400, "Re: Other", "g", &[]),
        ];
        let threads = references(&items);
        assert_eq!(format_threads(&threads, &items), "(6)(1 (2 4)(5))(3 7)");
    }

    #[test]
    fn references_survive_loops_and_duplicate_ids() {
        let items = vec![
            item(1, 100, "x", "a", &["b"]),
            item(2, 200, "y", "b", &["a"]),
            item(3, 300, "z", "a", &[]),
        ];
        let threads = references(&items);
        let text = format_threads(&threads, &items);
        for n in ["1", "2", "3"] {
            assert_eq!(text.matches(n).count(), 1, "{text}");
        }
    }

    #[test]
    fn ordered_subject_groups_flat() {
        let items = vec![
            item(1, 300, "Re: b", "", &[]),
            item(2, 100, "a", "", &[]),
            item(3, 200, "b", "", &[]),
            item(4, 400, "A", "", &[]),
            item(5, 500, "Fwd: a", "", &[]),
        ];
        let threads = ordered_subject(&items);
        assert_eq!(format_threads(&threads, &items), "(2 (4)(5))(3 1)");
    }

    #[test]
    fn sort_keys_reverse_and_ties() {
        let mut items = vec![
            item(1, 300, "b", "", &[]),
            item(2, 100, "a", "", &[]),
            item(3, 200, "b", "", &[]),
        ];
        sort(
            &mut items,
            &[
                SortCriterion {
                    key: SortKey::Subject,
                    reverse: true,
                },
                SortCriterion {
                    key: SortKey::Date,
                    reverse: false,
                },
            ],
        );
        let order: Vec<u32> = items.iter().map(|i| i.number).collect();
        assert_eq!(order, vec![3, 1, 2]);
    }
}
