//! EHLO and HELO (RFC 5321 §4.1.1.1) and the extensions we advertise.

use crate::listener::ListenerKind;
use crate::parser::printable;
use crate::reply::Reply;
use crate::session::Session;

impl Session {
    pub(crate) fn ehlo(&mut self, host: String, extended: bool) {
        // A new greeting resets any transaction (RFC 5321 §4.1.4).
        self.tx = None;
        self.helo = Some(printable(&host));
        self.esmtp = extended;
        let hostname = self.hostname().to_string();
        if !extended {
            self.reply(Reply::new(250, "", hostname));
            return;
        }
        let limits = &self.server.core.config.smtp;
        let mut lines = vec![
            format!("{hostname} Hello {}", printable(&host)),
            "PIPELINING".to_string(),
            format!("SIZE {}", limits.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "CHUNKING".to_string(),
            "BINARYMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "DSN".to_string(),
        ];
        if self.kind.is_submission() {
            // RFC 4865 §3: the longest hold in seconds, and the latest release time.
            let max = self.server.core.config.outbound.max_hold;
            let latest = time::OffsetDateTime::now_utc() + time::Duration::seconds(max as i64);
            let latest = latest.replace_nanosecond(0).unwrap_or(latest);
            lines.push(format!(
                "FUTURERELEASE {max} {}",
                latest
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ));
        }
        if !self.conn.tls && self.server.tls.is_some() && self.kind != ListenerKind::Submissions {
            lines.push("STARTTLS".to_string());
        }
        // Credentials only travel encrypted (RFC 8314 §3; RFC 4954 §4).
        if self.kind.is_submission() && self.conn.tls && self.auth.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push("HELP".to_string());
        self.reply(Reply {
            code: 250,
            status: "",
            lines,
        });
    }
}
