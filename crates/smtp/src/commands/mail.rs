//! MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY (RFC 6152, RFC 3030) and
//! SMTPUTF8 (RFC 6531).

use smtp_proto::{
    MailFrom, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_RET_FULL,
    MAIL_RET_HDRS, MAIL_SMTPUTF8,
};
use trimaran_core::address;

use crate::reply::{common, Reply};
use crate::session::{Body, Session, Transaction};

impl Session {
    pub(crate) async fn mail(&mut self, from: MailFrom<String>) {
        if self.helo.is_none() {
            return self.error(common::bad_sequence("Send EHLO or HELO first"));
        }
        if self.tx.is_some() {
            return self.error(common::bad_sequence("Nested MAIL command"));
        }
        if self.kind.is_submission() && self.auth.is_none() {
            return self.error(Reply::new(530, "5.7.0", "Authentication required"));
        }
        // Parameters of extensions we do not advertise are refused (RFC 5321 §4.1.1.11 / §4.5.3).
        if from.env_id.is_some()
            || from.flags & (MAIL_RET_FULL | MAIL_RET_HDRS | MAIL_REQUIRETLS) != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.by != 0
            || from.mt_priority != 0
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
        {
            return self.error(Reply::new(555, "5.5.4", "Unsupported MAIL parameter"));
        }
        let limit = self.server.core.config.smtp.max_message_size;
        if from.size as u64 > limit {
            // RFC 1870 §6.1: a declared size over the fixed maximum is a permanent failure.
            return self.error(common::too_big());
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let body = if from.flags & MAIL_BODY_BINARYMIME != 0 {
            Body::BinaryMime
        } else if from.flags & MAIL_BODY_8BITMIME != 0 {
            Body::EightBitMime
        } else {
            Body::SevenBit
        };
        let sender = from.address;
        if sender.is_empty() {
            if self.kind.is_submission() {
                return self.error(Reply::new(
                    550,
                    "5.7.1",
                    "Null sender not allowed for submission",
                ));
            }
        } else {
            if !sender.is_ascii() && !smtputf8 {
                // RFC 6531 §3.4: a non-ASCII address needs the SMTPUTF8 parameter.
                return self.error(Reply::new(
                    553,
                    "5.6.7",
                    "Non-ASCII sender address requires SMTPUTF8",
                ));
            }
            let Some(normalized) = address::normalize(&sender) else {
                return self.error(Reply::new(501, "5.1.7", "Bad sender address syntax"));
            };
            if self.kind.is_submission() {
                match self.owns(&normalized).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return self.error(Reply::new(
                            553,
                            "5.7.1",
                            "Sender address not owned by the authenticated user",
                        ))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sender check failed");
                        return self.reply(common::temporary_failure());
                    }
                }
            }
        }
        self.tx = Some(Transaction {
            sender,
            body,
            smtputf8,
            recipients: Vec::new(),
            chunks: None,
        });
        self.reply(Reply::new(250, "2.1.0", "Sender OK"));
    }
}
