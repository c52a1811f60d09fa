//! STARTTLS (RFC 9051 §6.2.1). Anything the client pipelined after the command is discarded,
//! so that clear-text commands cannot be injected into the protected session.

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn starttls(&mut self, tag: &str) -> Flow {
        let Some(acceptor) = self.server.tls.clone().filter(|_| !self.conn.tls) else {
            self.bad(tag, "TLS is not available or already active");
            return Flow::Continue;
        };
        self.ok(tag, "Begin TLS negotiation now");
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            tracing::debug!(peer = %self.conn.peer, error = %e, "IMAP STARTTLS failed");
            return Flow::Close;
        }
        Flow::Continue
    }
}
