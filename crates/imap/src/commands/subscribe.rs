//! SUBSCRIBE and UNSUBSCRIBE (RFC 9051 §6.3.7, §6.3.8).

use trimaran_core::delivery::retry;

use crate::parser::MailboxArg;
use crate::session::{Flow, Session};

impl Session {
    pub(crate) async fn subscribe(&mut self, tag: &str, raw: MailboxArg, on: bool) -> Flow {
        let name = match self.mailbox_name(&raw) {
            Ok(n) => n,
            Err(why) => {
                self.no(tag, why);
                return Flow::Continue;
            }
        };
        if on {
            match self.resolve_mailbox(&name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.no(tag, "[NONEXISTENT] No such mailbox");
                    return Flow::Continue;
                }
                Err(e) => {
                    self.store_failed(tag, &e);
                    return Flow::Continue;
                }
            }
        }
        let account = self.account_id();
        let meta = self.server.core.store.meta();
        match retry(self.wait(), || meta.set_subscribed(account, &name, on)).await {
            Ok(()) => self.ok(
                tag,
                if on {
                    "SUBSCRIBE completed"
                } else {
                    "UNSUBSCRIBE completed"
                },
            ),
            Err(e) => self.store_failed(tag, &e),
        }
        Flow::Continue
    }
}
