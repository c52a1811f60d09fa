//! MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8
//! (RFC 6531), RET and ENVID (RFC 3461) and, on submission, HOLDFOR/HOLDUNTIL (RFC 4865).

use smtp_proto::{
    MailFrom, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_RET_FULL,
    MAIL_RET_HDRS, MAIL_SMTPUTF8,
};
use trimaran_core::address;
use trimaran_core::store::{now_unix, Ret};

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
        if from.flags & MAIL_REQUIRETLS != 0
            || from.by != 0
            || from.mt_priority != 0
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || (!self.kind.is_submission() && (from.hold_for != 0 || from.hold_until != 0))
        {
            return self.error(Reply::new(555, "5.5.4", "Unsupported MAIL parameter"));
        }
        let ret = match from.flags & (MAIL_RET_FULL | MAIL_RET_HDRS) {
            0 => None,
            MAIL_RET_FULL => Some(Ret::Full),
            MAIL_RET_HDRS => Some(Ret::Headers),
            _ => return self.error(Reply::new(501, "5.5.4", "RET given twice")),
        };
        // RFC 3461 §4.4: ENVID is at most 100 characters.
        if from
            .env_id
            .as_ref()
            .is_some_and(|e| e.len() > 100 || e.is_empty())
        {
            return self.error(Reply::new(501, "5.5.4", "ENVID too long"));
        }
        let hold_until = match self.release_time(from.hold_for, from.hold_until) {
            Ok(t) => t,
            Err(reply) => return self.error(reply),
        };
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
            envid: from.env_id,
            ret,
            hold_until,
            recipients: Vec::new(),
            chunks: None,
        });
        self.reply(Reply::new(250, "2.1.0", "Sender OK"));
    }

    /// RFC 4865 §3: HOLDFOR (seconds) or HOLDUNTIL (a time), not both, within the interval we
    /// advertise. A time already past releases the message at once.
    fn release_time(&self, hold_for: u64, hold_until: u64) -> Result<i64, Reply> {
        let max = self.server.core.config.outbound.max_hold;
        let now = now_unix();
        let until = match (hold_for, hold_until) {
            (0, 0) => return Ok(0),
            (f, 0) if f <= max => now + f as i64,
            (0, u) if (u as i64) <= now => return Ok(0),
            (0, u) if u as i64 - now <= max as i64 => u as i64,
            (f, u) if f != 0 && u != 0 => {
                return Err(Reply::new(
                    501,
                    "5.5.4",
                    "Use HOLDFOR or HOLDUNTIL, not both",
                ))
            }
            _ => {
                return Err(Reply::new(
                    501,
                    "5.5.4",
                    format!("Release time more than {max} seconds ahead"),
                ))
            }
        };
        Ok(until)
    }
}
