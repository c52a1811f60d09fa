//! RSET, NOOP, QUIT, VRFY and HELP (RFC 5321 §4.1.1.5–§4.1.1.10).

use crate::reply::Reply;
use crate::session::{Flow, Session};

impl Session {
    pub(crate) fn rset(&mut self) {
        self.tx = None;
        self.reply(Reply::new(250, "2.0.0", "OK"));
    }

    pub(crate) fn noop(&mut self) {
        self.reply(Reply::new(250, "2.0.0", "OK"));
    }

    pub(crate) fn quit(&mut self) -> Flow {
        self.reply(Reply::new(221, "2.0.0", "Bye"));
        Flow::Close
    }

    /// §3.5.3: 252 says "cannot verify, but will try"; telling which users exist would help
    /// address harvesters.
    pub(crate) fn vrfy(&mut self) {
        self.reply(Reply::new(
            252,
            "2.5.0",
            "Cannot VRFY user, but will accept message and attempt delivery",
        ));
    }

    pub(crate) fn help(&mut self) {
        self.reply(Reply::new(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT STARTTLS AUTH VRFY HELP",
        ));
    }
}
