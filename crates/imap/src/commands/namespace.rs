//! NAMESPACE (RFC 2342, RFC 9051 §6.3.10): one personal namespace, "/" as separator.

use crate::session::{Flow, Session};

impl Session {
    pub(crate) fn namespace(&mut self, tag: &str) -> Flow {
        self.untagged("NAMESPACE ((\"\" \"/\")) NIL NIL");
        self.ok(tag, "NAMESPACE completed");
        Flow::Continue
    }
}
