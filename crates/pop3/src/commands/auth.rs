//! AUTH (RFC 5034) with SASL PLAIN (RFC 4616), only under TLS.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use trimaran_core::net::LineEvent;

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Flow {
        if !self.conn.tls {
            self.fail("[AUTH] Authentication only after STLS");
            return Flow::Continue;
        }
        if mechanism != "PLAIN" {
            self.fail("Unsupported SASL mechanism");
            return Flow::Continue;
        }
        let response = match initial.as_deref() {
            // RFC 5034 §4: "=" is an empty initial response.
            Some("=") => String::new(),
            Some(ir) => ir.to_string(),
            None => {
                self.conn.queue(b"+ \r\n");
                let max = self.server.core.config.pop3.max_command_line;
                match self.conn.read_line(max, self.server.idle_timeout()).await {
                    Ok(LineEvent::Line(line)) => {
                        String::from_utf8_lossy(&line).trim_end().to_string()
                    }
                    Ok(LineEvent::TooLong) => {
                        self.fail("Authentication response too long");
                        return Flow::Continue;
                    }
                    Err(_) => return Flow::Close,
                }
            }
        };
        if response == "*" {
            self.fail("Authentication cancelled");
            return Flow::Continue;
        }
        let Ok(decoded) = B64.decode(response.trim()) else {
            self.fail("Cannot decode the base64 response");
            return Flow::Continue;
        };
        // authzid NUL authcid NUL passwd (RFC 4616 §2)
        let mut fields = decoded.splitn(3, |&b| b == 0);
        let (Some(authz), Some(authc), Some(password)) =
            (fields.next(), fields.next(), fields.next())
        else {
            self.fail("Malformed PLAIN response");
            return Flow::Continue;
        };
        if !authz.is_empty() && authz != authc {
            self.fail("[AUTH] Authorization identity not permitted");
            return Flow::Continue;
        }
        let Ok(user) = std::str::from_utf8(authc) else {
            self.fail("User name is not UTF-8");
            return Flow::Continue;
        };
        let user = user.to_string();
        self.login(&user, password.to_vec()).await
    }
}
