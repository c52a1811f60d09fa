//! DATA (RFC 5321 §4.1.1.4).

use crate::parser::data::{read_data, MessageSink, Overflow};
use crate::reply::{common, Reply};
use crate::session::{Body, Flow, Session};
use trimaran_core::net::ReadError;

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
        let timeout = self.data_timeout();
        if let Err(e) = read_data(&mut self.conn, &mut sink, timeout).await {
            return self.content_read_failed(e);
        }
        self.complete(sink).await;
        Flow::Continue
    }
}

impl Session {
    /// The connection failed while message content was arriving. The transaction dies with it:
    /// nothing of it was acknowledged, so nothing of it is stored.
    pub(super) fn content_read_failed(&mut self, e: ReadError) -> Flow {
        self.tx = None;
        if let ReadError::TimedOut = e {
            self.reply(Reply::new(
                421,
                "4.4.2",
                "Timeout waiting for data, closing connection",
            ));
        }
        Flow::Close
    }

    /// All content is in: store it, or say why it was not kept.
    pub(super) async fn complete(&mut self, sink: MessageSink) {
        match sink.finish() {
            // The memory grant is held until the message is committed.
            Ok((content, _memory)) => self.finish(content).await,
            Err(overflow) => {
                self.tx = None;
                self.reply(overflow_reply(overflow));
            }
        }
    }
}

pub(super) fn overflow_reply(overflow: Overflow) -> Reply {
    match overflow {
        Overflow::TooBig => common::too_big(),
        Overflow::NoMemory => common::storage_full(),
    }
}
