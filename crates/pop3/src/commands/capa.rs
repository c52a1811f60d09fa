//! CAPA (RFC 2449 §5). Credentials are not offered before TLS (RFC 2595 §4, RFC 8314).

use crate::session::Session;

impl Session {
    pub(crate) fn capa(&mut self) {
        let tls = self.conn.tls;
        let mut caps = vec![
            "TOP",
            "UIDL",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "UTF8",
            "EXPIRE NEVER",
            "IMPLEMENTATION Trimaran",
        ];
        if self.maildrop.is_none() {
            if tls {
                caps.push("USER");
                caps.push("SASL PLAIN");
            } else if self.server.tls.is_some() {
                caps.push("STLS");
            }
        }
        let mut text = String::from("+OK Capability list follows\r\n");
        for cap in caps {
            text.push_str(cap);
            text.push_str("\r\n");
        }
        text.push_str(".\r\n");
        self.conn.queue(text.as_bytes());
    }
}
