//! STARTTLS (RFC 3207).

use crate::listener::ListenerKind;
use crate::reply::Reply;
use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn starttls(&mut self) -> Flow {
        if self.conn.tls || self.kind == ListenerKind::Submissions {
            self.error(Reply::new(503, "5.5.1", "TLS already active"));
            return Flow::Continue;
        }
        let Some(acceptor) = self.server.tls.clone() else {
            self.reply(Reply::new(454, "4.7.0", "TLS not available"));
            return Flow::Continue;
        };
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        // start_tls flushes the reply and discards anything pipelined after the command.
        if let Err(e) = self.conn.start_tls(&acceptor).await {
            tracing::debug!(peer = %self.conn.peer, error = %e, "STARTTLS handshake failed");
            return Flow::Close;
        }
        // §4.2: forget everything learnt before TLS; the client must greet again.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.auth = None;
        Flow::Continue
    }
}
