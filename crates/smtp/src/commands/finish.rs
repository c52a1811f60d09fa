//! End of a transaction, shared by DATA and BDAT LAST: trace fields, the submission From check,
//! and the atomic commit that must happen before the 250 (DESIGN.md G1). Every failure that is
//! ours answers 4xx (G2).

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;
use trimaran_core::address;
use trimaran_core::delivery::{deliver, prepare, transmission_id};
use trimaran_core::store::{
    BodyType, LocalDelivery, NewMessage, OutboundEnvelope, OutboundRecipient, OutboundRequest,
    StoreError,
};

use crate::reply::{common, Reply};
use crate::session::{Body, Session, Target, Transaction};

impl Session {
    pub(crate) async fn finish(&mut self, content: Vec<u8>) {
        let Some(tx) = self.tx.take() else {
            return self.error(common::bad_sequence("No transaction"));
        };
        let recipients: Vec<String> = tx.recipients.iter().map(|r| r.address.clone()).collect();
        let id = transmission_id(&tx.sender, &recipients, &content);
        let short_id = id[..16].to_ascii_uppercase();
        let now = OffsetDateTime::now_utc();

        let mut accounts = Vec::new();
        let mut outbound: Vec<OutboundRecipient> = Vec::new();
        for rcpt in &tx.recipients {
            let queued = |address: &str| OutboundRecipient {
                address: address.to_string(),
                notify: rcpt.notify,
                // RFC 3461 §4.2: an address reached through an alias keeps the one the sender
                // gave, for the report.
                orcpt: rcpt
                    .orcpt
                    .clone()
                    .or_else(|| (address != rcpt.address).then(|| rcpt.address.clone())),
            };
            match &rcpt.target {
                Target::Local {
                    accounts: a,
                    forwards,
                } => {
                    // A held message (RFC 4865) waits in the queue for its local recipients
                    // too, and so does one whose sender asked to hear of its delivery (RFC
                    // 3461 §5.2.3): the queue makes that report once the copy is in.
                    if tx.hold_until > 0 || rcpt.notify.is_some_and(|n| n.success) {
                        outbound.push(queued(&rcpt.address));
                    } else {
                        accounts.extend_from_slice(a);
                    }
                    outbound.extend(forwards.iter().map(|f| queued(f)));
                }
                Target::Remote => outbound.push(queued(&rcpt.address)),
            }
        }
        accounts.sort_unstable();
        accounts.dedup();
        outbound.sort_by(|a, b| a.address.cmp(&b.address));
        outbound.dedup_by(|a, b| a.address == b.address);

        let trace = self.received_field(&tx, &short_id, now);
        let received_at = now.unix_timestamp();
        let local_message = if accounts.is_empty() {
            None
        } else {
            // RFC 5321 §4.4: the final delivery adds Return-Path.
            let mut raw = format!("Return-Path: <{}>\r\n", tx.sender).into_bytes();
            raw.extend_from_slice(trace.as_bytes());
            raw.extend_from_slice(&content);
            Some(prepare(raw, received_at).await)
        };
        let outbound_message = if outbound.is_empty() {
            None
        } else {
            let mut raw = trace.into_bytes();
            raw.extend_from_slice(&content);
            Some(prepare(raw, received_at).await)
        };
        drop(content);
        let (local_message, outbound_message) =
            match (local_message.transpose(), outbound_message.transpose()) {
                (Ok(l), Ok(o)) => (l, o),
                (Err(e), _) | (_, Err(e)) => return self.store_failure(&e),
            };

        if self.kind.is_submission() {
            let parsed = local_message.as_ref().or(outbound_message.as_ref());
            if let Some(reply) = self.check_from(parsed).await {
                return self.reply(reply);
            }
        }

        let size = local_message
            .as_ref()
            .or(outbound_message.as_ref())
            .map(|m| m.blob.size);
        let local = local_message.map(|message| LocalDelivery { message, accounts });
        let outbound = outbound_message.map(|message| OutboundRequest {
            message,
            sender: tx.sender.clone(),
            recipients: outbound,
            submitted_by: self.auth.as_ref().map(|a| a.account),
            envelope: OutboundEnvelope {
                envid: tx.envid.clone(),
                ret: tx.ret,
                body: match tx.body {
                    Body::SevenBit => BodyType::SevenBit,
                    Body::EightBitMime => BodyType::EightBitMime,
                    Body::BinaryMime => BodyType::BinaryMime,
                },
                smtputf8: tx.smtputf8,
                hold_until: tx.hold_until,
            },
        });
        let store = &self.server.core.store;
        match deliver(
            store,
            id,
            local,
            outbound,
            self.server.core.config.store_wait(),
        )
        .await
        {
            Ok(receipt) if receipt.already_committed => {
                tracing::info!(id = %short_id, peer = %self.conn.peer, "retransmission of a message already accepted");
                self.reply(Reply::new(
                    250,
                    "2.0.0",
                    format!("Ok: queued as {short_id}"),
                ));
            }
            Ok(receipt) => {
                if receipt.queue_id.is_some() {
                    self.server.core.queue_wake.notify_one();
                }
                tracing::info!(
                    id = %short_id,
                    peer = %self.conn.peer,
                    sender = %tx.sender,
                    recipients = tx.recipients.len(),
                    size,
                    copies = receipt.copies.len(),
                    queued = receipt.queue_id,
                    "message accepted"
                );
                self.reply(Reply::new(
                    250,
                    "2.0.0",
                    format!("Ok: queued as {short_id}"),
                ));
            }
            Err(e) => self.store_failure(&e),
        }
    }

    fn store_failure(&mut self, e: &StoreError) {
        tracing::error!(peer = %self.conn.peer, error = %e, "message not accepted: store failure");
        // G2: whatever went wrong on our side, the sender keeps the message and retries.
        self.reply(match e {
            StoreError::Full(_) => common::storage_full(),
            _ => common::temporary_failure(),
        });
    }

    /// RFC 6409 §8 lets a submission server check the message; every From address must be one
    /// the authenticated user may send as.
    async fn check_from(&self, message: Option<&NewMessage>) -> Option<Reply> {
        let from = message.map(|m| m.meta.from.as_slice()).unwrap_or_default();
        if from.is_empty() {
            return Some(Reply::new(550, "5.7.1", "Message has no From address"));
        }
        for addr in from {
            let Some(normalized) = addr.address.as_deref().and_then(address::normalize) else {
                return Some(Reply::new(550, "5.7.1", "From address is not valid"));
            };
            match self.owns(&normalized).await {
                Ok(true) => {}
                Ok(false) => {
                    return Some(Reply::new(
                        550,
                        "5.7.1",
                        "From address not owned by the authenticated user",
                    ))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "From check failed");
                    return Some(common::temporary_failure());
                }
            }
        }
        None
    }

    /// The Received: field (RFC 5321 §4.4) with the protocol names of RFC 3848 and RFC 6531.
    fn received_field(&self, tx: &Transaction, id: &str, now: OffsetDateTime) -> String {
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let mut with = String::from(if tx.smtputf8 {
            "UTF8SMTP"
        } else if self.esmtp {
            "ESMTP"
        } else {
            "SMTP"
        });
        if self.esmtp || tx.smtputf8 {
            if self.conn.tls {
                with.push('S');
            }
            if self.auth.is_some() {
                with.push('A');
            }
        }
        let date = now.format(&Rfc2822).unwrap_or_default();
        let ip = self.conn.peer.ip();
        let for_clause = match tx.recipients.as_slice() {
            // Naming the recipient only when there is one keeps Bcc recipients private.
            [only] => format!("\r\n\tfor <{}>", only.address),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (Trimaran) with {with} id {id}{for_clause};\r\n\t{date}\r\n",
            host = self.hostname(),
        )
    }
}
