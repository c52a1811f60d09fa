//! LIST (RFC 1939 §5): message numbers and sizes.

use crate::session::Session;

impl Session {
    pub(crate) fn list(&mut self, n: Option<usize>) {
        match n {
            Some(n) => match self.message(n).map(|m| m.size) {
                Some(size) => self.ok(&format!("{n} {size}")),
                None => self.fail("No such message"),
            },
            None => {
                let Some(drop) = &self.maildrop else { return };
                let mut text = String::from("+OK Scan listing follows\r\n");
                for (i, m) in drop.messages.iter().enumerate().filter(|(_, m)| !m.deleted) {
                    text.push_str(&format!("{} {}\r\n", i + 1, m.size));
                }
                text.push_str(".\r\n");
                self.conn.queue(text.as_bytes());
            }
        }
    }
}
