//! NAMESPACE (RFC 2342, RFC 9051 §6.3.10): the personal namespace, and the other users'
//! namespace where mailboxes shared with this account appear (RFC 4314); "/" separates.

use crate::session::{Flow, Session};

impl Session {
    pub(crate) fn namespace(&mut self, tag: &str) -> Flow {
        self.untagged(&format!(
            "NAMESPACE ((\"\" \"/\")) ((\"{}/\" \"/\")) NIL",
            crate::rights::OTHER_USERS
        ));
        self.ok(tag, "NAMESPACE completed");
        Flow::Continue
    }
}
