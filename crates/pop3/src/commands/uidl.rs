//! UIDL (RFC 1939 §7): identifiers that stay the same across sessions, made from the INBOX's
//! UIDVALIDITY and the message's UID, so a client that keeps mail on the server (fetchmail
//! "keep") downloads each message once.

use crate::session::Session;

impl Session {
    pub(crate) fn uidl(&mut self, n: Option<usize>) {
        let Some(drop) = &self.maildrop else { return };
        let validity = drop.uidvalidity;
        match n {
            Some(n) => match self.message(n).map(|m| m.uid) {
                Some(uid) => self.ok(&format!("{n} {validity}.{uid}")),
                None => self.fail("No such message"),
            },
            None => {
                let mut text = String::from("+OK Unique-id listing follows\r\n");
                for (i, m) in drop.messages.iter().enumerate().filter(|(_, m)| !m.deleted) {
                    text.push_str(&format!("{} {validity}.{}\r\n", i + 1, m.uid));
                }
                text.push_str(".\r\n");
                self.conn.queue(text.as_bytes());
            }
        }
    }
}
