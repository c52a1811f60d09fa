//! LOGOUT (RFC 9051 §6.1.3).

use crate::session::{Flow, Session};

impl Session {
    pub(crate) fn logout(&mut self, tag: &str) -> Flow {
        if let Some(a) = &self.account {
            tracing::debug!(peer = %self.conn.peer, user = %a.address, "IMAP logout");
        }
        self.untagged("BYE Logging out");
        self.ok(tag, "LOGOUT completed");
        Flow::Close
    }
}
