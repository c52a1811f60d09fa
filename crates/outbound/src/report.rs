//! Delivery status notifications (RFC 3464 inside an RFC 6522 multipart/report): failures,
//! delays, and the success reports RFC 3461 §5.2 leaves to us.

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;
use trimaran_core::message::header_section;
use trimaran_core::store::{QueueRecord, QueueStatus, Ret};

/// What happened to one recipient, as RFC 3464 §2.3.3 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }

    /// Whether the recipient's NOTIFY asks for this report (RFC 3461 §4.1); without NOTIFY we
    /// report failures and delays.
    pub fn wanted(self, record: &QueueRecord) -> bool {
        let notify = record
            .notify
            .unwrap_or(trimaran_core::store::Notify::DEFAULT);
        match self {
            Action::Failed => notify.failure,
            Action::Delayed => notify.delay,
            Action::Delivered | Action::Relayed => notify.success,
        }
    }

    /// The report a settled recipient is owed, if any; pending ones are owed a delay report.
    pub fn for_record(record: &QueueRecord) -> Option<Action> {
        match record.status {
            QueueStatus::Pending => Some(Action::Delayed),
            QueueStatus::Failed => Some(Action::Failed),
            QueueStatus::Delivered => Some(Action::Delivered),
            QueueStatus::Relayed => Some(Action::Relayed),
            // The peer took the DSN request on (RFC 3461 §5.2.1).
            QueueStatus::Sent => None,
        }
    }

    fn default_status(self) -> &'static str {
        match self {
            Action::Failed => "5.0.0",
            Action::Delayed => "4.0.0",
            Action::Delivered | Action::Relayed => "2.0.0",
        }
    }
}

/// The recipients one report covers, all of one queued message.
pub struct Report<'a> {
    pub hostname: &'a str,
    pub lifetime: i64,
    pub entries: Vec<(&'a QueueRecord, Action)>,
    /// The original message (may be missing if its body could not be read).
    pub original: Option<&'a [u8]>,
    pub now: i64,
}

impl Report<'_> {
    pub fn build(&self, message_id: &str) -> Vec<u8> {
        let first = self.entries[0].0;
        let worst = self
            .entries
            .iter()
            .map(|(_, a)| *a)
            .min_by_key(|a| match a {
                Action::Failed => 0,
                Action::Delayed => 1,
                _ => 2,
            })
            .unwrap_or(Action::Failed);
        let subject = match worst {
            Action::Failed => "Undelivered Mail Returned to Sender",
            Action::Delayed => "Delayed Mail (still being retried)",
            Action::Delivered | Action::Relayed => "Successful Mail Delivery Report",
        };
        let boundary = format!("=_report_{}", &message_id[..message_id.len().min(24)]);
        let mut out = String::new();
        out.push_str(&format!(
            "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: <{message_id}@{host}>\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"{boundary}\"\r\n\r\n\
             This is a MIME-encapsulated delivery status notification.\r\n\r\n",
            host = self.hostname,
            to = first.sender,
            date = rfc2822(self.now),
        ));
        // RFC 6522 §3: first the human-readable part.
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n"
        ));
        out.push_str(&format!(
            "This is the mail system at {}.\r\n\r\n",
            self.hostname
        ));
        for (record, action) in &self.entries {
            let line = match action {
                Action::Failed => format!(
                    "Your message could not be delivered to <{}>.\r\n    {}\r\n",
                    record.recipient,
                    record.last_error.as_deref().unwrap_or("")
                ),
                Action::Delayed => format!(
                    "Your message to <{}> has not been delivered yet; it will be tried until {}.\r\n    Last problem: {}\r\n",
                    record.recipient,
                    rfc2822(record.clock_start() + self.lifetime),
                    record.last_error.as_deref().unwrap_or("none yet")
                ),
                Action::Delivered => format!(
                    "Your message was delivered to <{}>.\r\n",
                    record.recipient
                ),
                Action::Relayed => format!(
                    "Your message to <{}> was passed to {}, which does not send delivery reports.\r\n",
                    record.recipient,
                    record.remote_mta.as_deref().unwrap_or("another mail system")
                ),
            };
            out.push_str(&line);
        }
        // RFC 3464 §2.2: per-message fields, then one block per recipient (§2.3).
        out.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns; {}\r\n",
            self.hostname
        ));
        if let Some(envid) = &first.envelope.envid {
            out.push_str(&format!("Original-Envelope-Id: {}\r\n", xtext_safe(envid)));
        }
        out.push_str(&format!("Arrival-Date: {}\r\n", rfc2822(first.created)));
        for (record, action) in &self.entries {
            out.push_str("\r\n");
            if let Some(orcpt) = &record.orcpt {
                out.push_str(&format!("Original-Recipient: rfc822;{orcpt}\r\n"));
            }
            out.push_str(&format!(
                "Final-Recipient: rfc822;{}\r\nAction: {}\r\nStatus: {}\r\n",
                record.recipient,
                action.word(),
                status_code(record.last_error.as_deref(), *action)
            ));
            if let Some(mta) = &record.remote_mta {
                out.push_str(&format!("Remote-MTA: dns; {mta}\r\n"));
            }
            if let Some(detail) = &record.last_error {
                if is_smtp_reply(detail) {
                    out.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", one_line(detail)));
                }
            }
            if let Some(at) = record.settled.filter(|_| *action != Action::Delayed) {
                out.push_str(&format!("Last-Attempt-Date: {}\r\n", rfc2822(at)));
            }
            if *action == Action::Delayed {
                out.push_str(&format!(
                    "Will-Retry-Until: {}\r\n",
                    rfc2822(record.clock_start() + self.lifetime)
                ));
            }
        }
        let mut bytes = out.into_bytes();
        // RFC 3462 §3 / RFC 3461 §4.3: RET=FULL asks for the whole message, otherwise the
        // header is enough (and keeps reports small).
        let full = first.envelope.ret == Some(Ret::Full);
        if let Some(original) = self.original {
            let (kind, content) = if full {
                ("message/rfc822", original)
            } else {
                ("text/rfc822-headers", header_section(original))
            };
            bytes.extend_from_slice(
                format!("\r\n--{boundary}\r\nContent-Type: {kind}\r\n\r\n").as_bytes(),
            );
            bytes.extend_from_slice(content);
            if !content.ends_with(b"\r\n") {
                bytes.extend_from_slice(b"\r\n");
            }
        }
        bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        bytes
    }
}

fn rfc2822(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc2822).ok())
        .unwrap_or_default()
}

fn is_smtp_reply(detail: &str) -> bool {
    let b = detail.as_bytes();
    b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b[0], b'2'..=b'5')
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn xtext_safe(s: &str) -> String {
    one_line(s)
}

/// RFC 3464 §2.3.4: the RFC 3463 code from the detail (the peer's reply, or our reason that
/// starts with one), else the generic one for the action.
pub fn status_code(detail: Option<&str>, action: Action) -> String {
    let fallback = action.default_status().to_string();
    let Some(detail) = detail else {
        return fallback;
    };
    let found = detail.split_ascii_whitespace().take(2).find(|w| {
        let parts: Vec<&str> = w.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    });
    match found {
        // A delay reports the temporary class even if the last answer was permanent-looking.
        Some(code) if action == Action::Delayed => format!("4{}", &code[1..]),
        Some(code) if action == Action::Failed => format!("5{}", &code[1..]),
        Some(code) => code.to_string(),
        None => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_come_from_the_reply_with_the_action_s_class() {
        assert_eq!(
            status_code(Some("550 5.1.1 no such user"), Action::Failed),
            "5.1.1"
        );
        assert_eq!(
            status_code(Some("451 4.3.0 try later"), Action::Delayed),
            "4.3.0"
        );
        // Expired after temporary failures: reported failed, with the permanent class.
        assert_eq!(
            status_code(Some("451 4.3.0 try later"), Action::Failed),
            "5.3.0"
        );
        assert_eq!(status_code(Some("550 go away"), Action::Failed), "5.0.0");
        assert_eq!(status_code(None, Action::Delivered), "2.0.0");
    }
}
