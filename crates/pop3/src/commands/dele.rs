//! DELE (RFC 1939 §5): marks a message; it is removed only by QUIT.

use crate::session::Session;

impl Session {
    pub(crate) fn dele(&mut self, n: usize) {
        let marked = self
            .maildrop
            .as_mut()
            .and_then(|d| d.messages.get_mut(n.checked_sub(1)?))
            .filter(|m| !m.deleted)
            .map(|m| m.deleted = true)
            .is_some();
        if marked {
            self.ok(&format!("Message {n} deleted"));
        } else {
            self.fail("No such message");
        }
    }
}
