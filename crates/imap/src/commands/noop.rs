//! NOOP and CHECK (RFC 9051 §6.1.2; CHECK is NOOP in IMAP4rev2, §6.4.1 of RFC 3501): a chance
//! to hear about changes.

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn noop(&mut self, tag: &str) -> Flow {
        match self.sync(true, true).await {
            Ok(()) => self.ok(tag, "NOOP completed"),
            Err(e)
                if self.selected.is_none()
                    && matches!(e, trimaran_core::store::StoreError::NotFound(_)) =>
            {
                return Flow::Close
            }
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }
}
