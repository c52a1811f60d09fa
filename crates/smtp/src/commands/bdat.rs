//! BDAT (RFC 3030): message content in counted chunks, the only way to send BINARYMIME.

use crate::parser::data::{read_chunk, MessageSink};
use crate::reply::{common, Reply};
use crate::session::{Flow, Session};

use super::data::overflow_reply;

impl Session {
    pub(crate) async fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let config = &self.server.core.config.smtp;
        let limit = config.max_message_size;
        // Whatever we answer, the chunk's bytes follow the command and must be read (§2), or
        // they would be taken for commands.
        let refusal = match self.tx.as_ref() {
            None => Some(common::bad_sequence("Need MAIL command first")),
            Some(tx) if tx.recipients.is_empty() => {
                Some(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            _ => None,
        };
        let mut sink = match self.tx.as_mut().and_then(|tx| tx.chunks.take()) {
            Some(sink) => sink,
            None => MessageSink::new(
                if refusal.is_some() { 0 } else { limit },
                self.server.memory.clone(),
            ),
        };
        let timeout = self.data_timeout();
        if let Err(e) = read_chunk(&mut self.conn, size, &mut sink, timeout).await {
            return self.content_read_failed(e);
        }
        if let Some(reply) = refusal {
            self.error(reply);
            return Flow::Continue;
        }
        if !last {
            if let Err(overflow) = sink.check() {
                // The transaction cannot succeed any more; later chunks get 503 (§2).
                self.tx = None;
                self.reply(overflow_reply(overflow));
                return Flow::Continue;
            }
            let received = sink.len();
            if let Some(tx) = self.tx.as_mut() {
                tx.chunks = Some(sink);
            }
            self.reply(Reply::new(
                250,
                "2.0.0",
                format!("{size} octets received, {received} in total"),
            ));
            return Flow::Continue;
        }
        self.complete(sink).await;
        Flow::Continue
    }
}
