//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463).

use std::fmt::Write;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code, e.g. "2.1.0".
    pub status: &'static str,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            lines: vec![text.into()],
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Wire form: every line but the last is `code-`, the last `code ` (RFC 5321 §4.2.1).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut text = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Enhanced codes go on every line of a multi-line reply (RFC 2034 §4), but not on
            // the greeting or EHLO keywords, which have no status ("" here).
            if self.status.is_empty() {
                let _ = write!(text, "{}{}{}\r\n", self.code, sep, line);
            } else {
                let _ = write!(text, "{}{}{} {}\r\n", self.code, sep, self.status, line);
            }
        }
        out.extend_from_slice(text.as_bytes());
    }
}

/// Replies used in more than one place.
pub mod common {
    use super::Reply;

    pub fn temporary_failure() -> Reply {
        Reply::new(
            451,
            "4.3.0",
            "Temporary failure in the mail system, please try again later",
        )
    }
    pub fn storage_full() -> Reply {
        Reply::new(
            452,
            "4.3.1",
            "Insufficient system storage, please try again later",
        )
    }
    pub fn bad_sequence(text: &str) -> Reply {
        Reply::new(503, "5.5.1", text)
    }
    pub fn too_big() -> Reply {
        Reply::new(
            552,
            "5.3.4",
            "Message size exceeds the fixed maximum message size",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line() {
        let r = Reply {
            code: 250,
            status: "",
            lines: vec!["mx.test".into(), "PIPELINING".into(), "SIZE 10".into()],
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        let mut out = Vec::new();
        Reply::new(550, "5.1.1", "no").encode(&mut out);
        assert_eq!(out, b"550 5.1.1 no\r\n");
    }
}
