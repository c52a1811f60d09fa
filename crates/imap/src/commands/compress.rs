//! COMPRESS (RFC 4978): DEFLATE in both directions after the tagged OK, inside TLS if any.

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn compress(&mut self, tag: &str, mechanism: String) -> Flow {
        if !mechanism.eq_ignore_ascii_case("DEFLATE") {
            self.bad(tag, "Only DEFLATE is supported");
            return Flow::Continue;
        }
        // RFC 4978 §3: once is enough; a second one is refused.
        if self.conn.compressing() {
            self.no(tag, "[COMPRESSIONACTIVE] DEFLATE is already active");
            return Flow::Continue;
        }
        self.ok(tag, "DEFLATE active");
        if let Err(e) = self.conn.start_deflate().await {
            tracing::debug!(peer = %self.conn.peer, error = %e, "IMAP COMPRESS failed");
            return Flow::Close;
        }
        Flow::Continue
    }
}
