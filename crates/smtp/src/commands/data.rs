//! DATA (RFC 5321 §4.1.1.4).

use crate::parser::data::{MessageSink, Overflow};
use crate::reply::{common, Reply};
use crate::session::{Body, Flow, Session};
use crate::stream::ReadError;

impl Session {
    pub(crate) async fn data(&mut self) -> Flow {
        let Some(tx) = self.tx.as_ref() else {
            self.error(common::bad_sequence("Need MAIL command first"));
            return Flow::Continue;
        };
        if tx.chunks.is_some() {
            self.error(common::bad_sequence("DATA not allowed after BDAT"));
            return Flow::Continue;
        }
        if tx.recipients.is_empty() {
            // RFC 2920 §3.1: with no valid recipient, DATA fails (and its content never comes).
            self.error(Reply::new(554, "5.5.1", "No valid recipients"));
            return Flow::Continue;
        }
        if tx.body == Body::BinaryMime {
            // RFC 3030 §3: BINARYMIME content can only be sent with BDAT.
            self.error(common::bad_sequence("BODY=BINARYMIME requires BDAT"));
            return Flow::Continue;
        }
        self.reply(Reply::new(
            354,
            "",
            "Start mail input; end with <CRLF>.<CRLF>",
        ));
        let config = &self.server.core.config.smtp;
        let mut sink = MessageSink::new(config.max_message_size, self.server.memory.clone());
        match self.conn.read_data(&mut sink, self.data_timeout()).await {
            Ok(()) => {}
            Err(ReadError::TimedOut) => {
                self.tx = None;
                self.reply(Reply::new(
                    421,
                    "4.4.2",
                    "Timeout waiting for data, closing connection",
                ));
                return Flow::Close;
            }
            // Disconnected mid-DATA: the transaction dies with the connection, nothing stored.
            Err(_) => return Flow::Close,
        }
        match sink.finish() {
            Ok((content, _memory)) => self.finish(content).await,
            Err(overflow) => {
                self.tx = None;
                self.reply(overflow_reply(overflow));
            }
        }
        Flow::Continue
    }
}

pub(super) fn overflow_reply(overflow: Overflow) -> Reply {
    match overflow {
        Overflow::TooBig => common::too_big(),
        Overflow::NoMemory => common::storage_full(),
    }
}
