//! ID (RFC 2971): logged, answered with our name.

use crate::session::{Flow, Session};

impl Session {
    pub(crate) fn id(&mut self, tag: &str, fields: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Flow {
        if !fields.is_empty() {
            let text: Vec<String> = fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(k),
                        v.as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default()
                    )
                })
                .collect();
            tracing::debug!(peer = %self.conn.peer, client = %text.join(", "), "IMAP ID");
        }
        self.untagged("ID (\"name\" \"Trimaran\" \"vendor\" \"Trimaran\")");
        self.ok(tag, "ID completed");
        Flow::Continue
    }
}
