//! CAPABILITY (RFC 9051 §6.1.1). Only what fully works is advertised.

use crate::session::{Flow, Session};

impl Session {
    pub(crate) fn capabilities(&self) -> String {
        let mut caps = vec!["IMAP4rev1", "IMAP4rev2"];
        let tls_pending = !self.conn.tls && self.server.tls.is_some();
        if self.account.is_none() {
            if tls_pending {
                // RFC 9051 §6.2.1, §7.2.2: no passwords in clear text.
                caps.extend(["STARTTLS", "LOGINDISABLED"]);
            } else {
                caps.extend(["AUTH=PLAIN", "SASL-IR"]);
            }
        }
        caps.extend([
            "LITERAL+",
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "SPECIAL-USE",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "STATUS=SIZE",
            "ESEARCH",
            "SEARCHRES",
            "CONDSTORE",
            "QRESYNC",
            "OBJECTID",
            "UTF8=ACCEPT",
            "MULTIAPPEND",
            "BINARY",
            "SORT",
            "SORT=DISPLAY",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "ACL",
            "COMPRESS=DEFLATE",
            "RIGHTS=kxte",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "QUOTA=RES-MESSAGE",
        ]);
        let mut text = caps.join(" ");
        text.push_str(&format!(
            " APPENDLIMIT={}",
            self.server.core.config.imap.max_message_size
        ));
        text
    }

    pub(crate) fn capability(&mut self, tag: &str) -> Flow {
        let caps = self.capabilities();
        self.untagged(&format!("CAPABILITY {caps}"));
        self.ok(tag, "CAPABILITY completed");
        Flow::Continue
    }
}
