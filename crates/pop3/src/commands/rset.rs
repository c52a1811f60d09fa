//! RSET (RFC 1939 §5): unmarks every message marked deleted.

use crate::session::Session;

impl Session {
    pub(crate) fn rset(&mut self) {
        if let Some(drop) = self.maildrop.as_mut() {
            drop.messages.iter_mut().for_each(|m| m.deleted = false);
            let count = drop.messages.len();
            self.ok(&format!("Maildrop has {count} messages"));
        }
    }
}
