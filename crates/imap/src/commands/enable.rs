//! ENABLE (RFC 5161): IMAP4rev2 (RFC 9051 §6.3.1), UTF8=ACCEPT (RFC 6855), CONDSTORE and
//! QRESYNC (RFC 7162).

use crate::session::{Flow, Session};

impl Session {
    pub(crate) fn enable(&mut self, tag: &str, caps: Vec<String>) -> Flow {
        let mut enabled = Vec::new();
        for cap in caps {
            match cap.as_str() {
                "IMAP4REV2" => {
                    self.rev2 = true;
                    self.utf8 = true;
                    enabled.push("IMAP4rev2");
                }
                "UTF8=ACCEPT" => {
                    self.utf8 = true;
                    enabled.push("UTF8=ACCEPT");
                }
                "CONDSTORE" => {
                    self.condstore = true;
                    enabled.push("CONDSTORE");
                }
                "QRESYNC" => {
                    // RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
                    self.condstore = true;
                    self.qresync = true;
                    enabled.push("QRESYNC");
                }
                _ => {}
            }
        }
        self.untagged(format!("ENABLED {}", enabled.join(" ")).trim_end());
        self.ok(tag, "ENABLE completed");
        Flow::Continue
    }
}
