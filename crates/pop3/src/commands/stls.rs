//! STLS (RFC 2595 §4).

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn stls(&mut self) -> Flow {
        if self.conn.tls {
            self.fail("TLS is already active");
            return Flow::Continue;
        }
        let Some(acceptor) = self.server.tls.clone() else {
            self.err("[SYS/PERM] TLS is not available");
            return Flow::Continue;
        };
        self.ok("Begin TLS negotiation");
        // Flushes the reply and discards anything pipelined after STLS (RFC 2595 §3.1).
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            tracing::debug!(peer = %self.conn.peer, error = %e, "STLS handshake failed");
            return Flow::Close;
        }
        self.user = None;
        Flow::Continue
    }
}
