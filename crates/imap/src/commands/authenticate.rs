//! AUTHENTICATE (RFC 9051 §6.2.2) with SASL PLAIN (RFC 4616) and SASL-IR (RFC 4959).

use base64::Engine;
use trimaran_core::net::LineEvent;

use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: String,
        initial: Option<Vec<u8>>,
    ) -> Flow {
        if mechanism != "PLAIN" {
            self.no(tag, "[CANNOT] Only PLAIN is supported");
            return Flow::Continue;
        }
        if !self.conn.tls && self.server.tls.is_some() {
            self.no(tag, "[PRIVACYREQUIRED] STARTTLS first");
            return Flow::Continue;
        }
        let response = match initial {
            Some(r) => r,
            None => {
                self.conn.queue(b"+ \r\n");
                let limit = self.server.core.config.imap.max_command_line;
                match self.conn.read_line(limit, self.autologout()).await {
                    Ok(LineEvent::Line(l)) => l
                        .strip_suffix(b"\r\n")
                        .or_else(|| l.strip_suffix(b"\n"))
                        .unwrap_or(&l)
                        .to_vec(),
                    Ok(LineEvent::TooLong) => {
                        self.bad(tag, "Response too long");
                        return Flow::Continue;
                    }
                    Err(_) => return Flow::Close,
                }
            }
        };
        if response == b"*" {
            // RFC 9051 §6.2.2: the client cancelled.
            self.bad(tag, "Authentication cancelled");
            return Flow::Continue;
        }
        let decoded = if response == b"=" {
            Vec::new()
        } else {
            match base64::engine::general_purpose::STANDARD.decode(&response) {
                Ok(d) => d,
                Err(_) => {
                    self.bad(tag, "Invalid base64");
                    return Flow::Continue;
                }
            }
        };
        // authzid NUL authcid NUL passwd; only authorising as oneself is allowed.
        let mut fields = decoded.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            self.bad(tag, "Malformed PLAIN response");
            return Flow::Continue;
        };
        let (Ok(user), Ok(authz)) = (std::str::from_utf8(user), std::str::from_utf8(authz)) else {
            self.no(tag, "[AUTHENTICATIONFAILED] Invalid credentials");
            return Flow::Continue;
        };
        if !authz.is_empty() && !authz.eq_ignore_ascii_case(user) {
            self.no(tag, "[AUTHORIZATIONFAILED] Cannot act as another user");
            return Flow::Continue;
        }
        self.finish_login(tag, user, password.to_vec()).await
    }
}
