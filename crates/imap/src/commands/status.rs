//! STATUS (RFC 9051 §6.3.11) with SIZE (RFC 8438), HIGHESTMODSEQ (RFC 7162) and MAILBOXID
//! (RFC 8474).

use trimaran_core::delivery::retry;
use trimaran_core::store::{MailboxRecord, StoreError};

use crate::parser::{MailboxArg, StatusItem};
use crate::session::{Flow, IfMissing, Session};

impl Session {
    pub(crate) async fn status(
        &mut self,
        tag: &str,
        raw: MailboxArg,
        items: Vec<StatusItem>,
    ) -> Flow {
        let Some((name, target)) = self.named_mailbox(tag, &raw, IfMissing::Nonexistent).await
        else {
            return Flow::Continue;
        };
        // RFC 4314 §4: STATUS needs "r".
        if !self.require(tag, &target, 'r') {
            return Flow::Continue;
        }
        match self.write_status(&target.record, &name, &items).await {
            Ok(()) => self.ok(tag, "STATUS completed"),
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }

    pub(crate) async fn write_status(
        &mut self,
        record: &MailboxRecord,
        name: &str,
        items: &[StatusItem],
    ) -> Result<(), StoreError> {
        let needs_counts = items.iter().any(|i| {
            matches!(
                i,
                StatusItem::Messages
                    | StatusItem::Unseen
                    | StatusItem::Deleted
                    | StatusItem::Size
                    | StatusItem::DeletedStorage
            )
        });
        let meta = self.server.core.store.meta();
        let counts = if needs_counts {
            Some(retry(self.wait(), || meta.mailbox_counts(record.id)).await?)
        } else {
            None
        };
        let c = counts.unwrap_or_default();
        let parts: Vec<String> = items
            .iter()
            .map(|i| match i {
                StatusItem::Messages => format!("MESSAGES {}", c.messages),
                StatusItem::UidNext => format!("UIDNEXT {}", record.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", record.uidvalidity),
                StatusItem::Unseen => format!("UNSEEN {}", c.unseen),
                StatusItem::Deleted => format!("DELETED {}", c.deleted),
                StatusItem::Size => format!("SIZE {}", c.size),
                StatusItem::Recent => "RECENT 0".to_string(),
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", record.highestmodseq),
                StatusItem::MailboxId => format!("MAILBOXID (F{})", record.id),
                StatusItem::DeletedStorage => {
                    format!("DELETED-STORAGE {}", c.deleted_size.div_ceil(1024))
                }
            })
            .collect();
        self.conn.queue(b"* STATUS ");
        self.write_mailbox(name);
        self.conn
            .queue(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(())
    }
}
