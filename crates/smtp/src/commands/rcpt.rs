//! RCPT TO (RFC 5321 §4.1.1.3): local recipients, aliases, and relaying only for
//! authenticated submission.

use smtp_proto::{
    RcptTo, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
};
use trimaran_core::address;
use trimaran_core::delivery::Resolved;
use trimaran_core::store::Notify;

use crate::reply::{common, Reply};
use crate::session::{Recipient, Session, Target};

impl Session {
    pub(crate) async fn rcpt(&mut self, to: RcptTo<String>) {
        let max = self.server.core.config.smtp.max_recipients;
        let Some(tx) = self.tx.as_ref() else {
            return self.error(common::bad_sequence("Need MAIL command first"));
        };
        if tx.chunks.is_some() {
            return self.error(common::bad_sequence(
                "RCPT not allowed during BDAT transfer",
            ));
        }
        if tx.recipients.len() >= max {
            // RFC 5321 §4.5.3.1.10: 452 makes the client send the rest in another transaction.
            return self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        if to.rrvs != 0 {
            return self.error(Reply::new(555, "5.5.4", "Unsupported RCPT parameter"));
        }
        let notify = match notify_of(to.flags) {
            Ok(n) => n,
            Err(reply) => return self.error(reply),
        };
        if !to.address.is_ascii() && !tx.smtputf8 {
            return self.error(Reply::new(
                553,
                "5.6.7",
                "Non-ASCII recipient address requires SMTPUTF8",
            ));
        }
        let Some(addr) = address::normalize(&to.address) else {
            return self.error(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
        };
        let target = match self.resolve(&addr).await {
            Ok(Resolved::Local { accounts, forwards }) => Target::Local { accounts, forwards },
            Ok(Resolved::Remote) if self.kind.is_submission() && self.auth.is_some() => {
                Target::Remote
            }
            Ok(Resolved::Remote) => {
                return self.error(Reply::new(550, "5.7.1", "Relaying denied"));
            }
            Ok(Resolved::UnknownLocal) => {
                return self.error(Reply::new(
                    550,
                    "5.1.1",
                    "Recipient address rejected: user unknown",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "recipient lookup failed");
                return self.reply(common::temporary_failure());
            }
        };
        if let Target::Local { accounts, forwards } = &target {
            // A mailbox at its quota refuses more for now: RFC 3463 4.2.2, temporary, so the
            // sender retries while the user makes room. Aliases to several accounts are not
            // held back by one full member.
            if let ([account], []) = (accounts.as_slice(), forwards.as_slice()) {
                let store = self.server.core.store.clone();
                match store.meta().quota(*account).await {
                    Ok(q) if q.full() => {
                        return self.reply(Reply::new(
                            452,
                            "4.2.2",
                            "Mailbox full, try again later",
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "quota lookup failed");
                        return self.reply(common::temporary_failure());
                    }
                }
            }
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(Recipient {
                address: addr,
                target,
                notify,
                orcpt: to.orcpt,
            });
        }
        self.reply(Reply::new(250, "2.1.5", "Recipient OK"));
    }
}

/// RFC 3461 §4.1: NEVER stands alone; otherwise any of SUCCESS, FAILURE, DELAY.
fn notify_of(flags: u64) -> Result<Option<Notify>, Reply> {
    let any = RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY;
    match (flags & RCPT_NOTIFY_NEVER != 0, flags & any) {
        (false, 0) => Ok(None),
        (true, 0) => Ok(Some(Notify::NEVER)),
        (true, _) => Err(Reply::new(501, "5.5.4", "NOTIFY=NEVER stands alone")),
        (false, f) => Ok(Some(Notify {
            success: f & RCPT_NOTIFY_SUCCESS != 0,
            failure: f & RCPT_NOTIFY_FAILURE != 0,
            delay: f & RCPT_NOTIFY_DELAY != 0,
        })),
    }
}
