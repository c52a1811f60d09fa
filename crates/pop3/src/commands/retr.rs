//! RETR and TOP (RFC 1939 §7): the stored bytes, verified against their hash (G5), as a
//! dot-stuffed multi-line response.

use trimaran_core::delivery::retry;
use trimaran_core::store::StoreError;

use crate::parser::{multiline, top};
use crate::session::Session;

impl Session {
    /// RETR when `lines` is None, TOP otherwise.
    pub(crate) async fn retr(&mut self, n: usize, lines: Option<usize>) {
        let Some((hash, size)) = self.message(n).map(|m| (m.hash, m.size)) else {
            self.fail("No such message");
            return;
        };
        let core = self.server.core.clone();
        // Read by hash, as numbered at login: a message IMAP removed meanwhile is still served
        // while its body exists.
        let bytes = match retry(core.config.store_wait(), || core.store.read_blob(&hash)).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                self.err("Message no longer exists");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, %hash, "POP3: cannot read message");
                self.err("[SYS/TEMP] Cannot read the message now, try again later");
                return;
            }
        };
        let content = match lines {
            Some(l) => top(&bytes, l),
            None => &bytes[..],
        };
        let out = self.conn.out();
        out.extend_from_slice(format!("+OK {size} octets\r\n").as_bytes());
        multiline(content, out);
    }
}
