//! The metadata invariants `trimaran scrub` checks, as SQL both back ends run: each query
//! counts the rows that break one. Repairs differ in dialect and live with each back end.

/// (name, query counting violations). The names are what operators read.
pub const CHECKS: &[(&str, &str)] = &[
    (
        "message UID at or above its mailbox's UIDNEXT",
        "SELECT count(*) FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id
         WHERE mm.uid >= mb.uidnext",
    ),
    (
        "message MODSEQ above its mailbox's HIGHESTMODSEQ",
        "SELECT count(*) FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id
         WHERE mm.modseq > mb.highestmodseq",
    ),
    (
        "mailbox or change log MODSEQ above its account's",
        "SELECT (SELECT count(*) FROM mailboxes mb JOIN accounts a ON a.id = mb.account_id
                 WHERE mb.highestmodseq > a.modseq)
              + (SELECT count(*) FROM changes c JOIN accounts a ON a.id = c.account_id
                 WHERE c.modseq > a.modseq)",
    ),
    (
        "message counted to another account than its mailbox's",
        "SELECT count(*) FROM mailbox_messages mm JOIN mailboxes mb ON mb.id = mm.mailbox_id
         WHERE mm.account_id <> mb.account_id",
    ),
    (
        "message without parsed metadata",
        "SELECT count(*) FROM mailbox_messages mm
         WHERE NOT EXISTS (SELECT 1 FROM message_meta m WHERE m.hash = mm.hash)",
    ),
];

/// Repairs for [`CHECKS`], by index, that never lose information: they only raise counters
/// to what the rows already say, or give a message to the account whose mailbox holds it.
/// `None`: reported only.
pub fn repair_sqlite(check: usize) -> Option<&'static str> {
    Some(match check {
        0 => {
            "UPDATE mailboxes SET uidnext = (SELECT max(uid) + 1 FROM mailbox_messages
                 WHERE mailbox_id = mailboxes.id)
             WHERE uidnext <= (SELECT max(uid) FROM mailbox_messages WHERE mailbox_id = mailboxes.id)"
        }
        1 => {
            "UPDATE mailboxes SET highestmodseq = (SELECT max(modseq) FROM mailbox_messages
                 WHERE mailbox_id = mailboxes.id)
             WHERE highestmodseq < (SELECT max(modseq) FROM mailbox_messages
                 WHERE mailbox_id = mailboxes.id)"
        }
        2 => {
            "UPDATE accounts SET modseq = max(modseq,
                 coalesce((SELECT max(highestmodseq) FROM mailboxes WHERE account_id = accounts.id), 0),
                 coalesce((SELECT max(modseq) FROM changes WHERE account_id = accounts.id), 0))"
        }
        3 => {
            "UPDATE mailbox_messages SET account_id = (SELECT account_id FROM mailboxes
                 WHERE id = mailbox_messages.mailbox_id)
             WHERE account_id <> (SELECT account_id FROM mailboxes WHERE id = mailbox_messages.mailbox_id)"
        }
        _ => return None,
    })
}

pub fn repair_postgres(check: usize) -> Option<&'static str> {
    Some(match check {
        0 => {
            "UPDATE mailboxes mb SET uidnext = m.top + 1
             FROM (SELECT mailbox_id, max(uid) AS top FROM mailbox_messages GROUP BY mailbox_id) m
             WHERE m.mailbox_id = mb.id AND mb.uidnext <= m.top"
        }
        1 => {
            "UPDATE mailboxes mb SET highestmodseq = m.top
             FROM (SELECT mailbox_id, max(modseq) AS top FROM mailbox_messages GROUP BY mailbox_id) m
             WHERE m.mailbox_id = mb.id AND mb.highestmodseq < m.top"
        }
        2 => {
            "UPDATE accounts a SET modseq = GREATEST(a.modseq,
                 coalesce((SELECT max(highestmodseq) FROM mailboxes WHERE account_id = a.id), 0),
                 coalesce((SELECT max(modseq) FROM changes WHERE account_id = a.id), 0))"
        }
        3 => {
            "UPDATE mailbox_messages mm SET account_id = mb.account_id FROM mailboxes mb
             WHERE mb.id = mm.mailbox_id AND mm.account_id <> mb.account_id"
        }
        _ => return None,
    })
}
