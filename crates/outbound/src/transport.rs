//! What a message needs from the peer, and what we do when the peer lacks it: 8BITMIME (RFC
//! 6152 §3: convert to 7 bit or fail), BINARYMIME (RFC 3030 §3: no conversion here, fail), and
//! SMTPUTF8 (RFC 6531 §3.2: never downgraded, fail).

use trimaran_core::store::{BodyType, QueueRecord};

use crate::client::{Envelope, Extensions};
use crate::downgrade;

pub struct Prepared {
    pub message: Vec<u8>,
    /// The BODY parameter to send.
    pub body: Option<&'static str>,
    pub smtputf8: bool,
}

/// The bytes and MAIL parameters for this peer, or the reason (an RFC 3463 code and text) why
/// the message can never go to it.
pub fn prepare(
    message: &[u8],
    record: &QueueRecord,
    envelope: &Envelope,
    peer: &Extensions,
) -> Result<Prepared, String> {
    let header_end = trimaran_core::message::header_section(message).len();
    let addresses_ascii =
        envelope.sender.is_ascii() && envelope.recipients.iter().all(|r| r.address.is_ascii());
    // RFC 6531 §3.2: only what truly needs SMTPUTF8 is refused by a peer without it; a message
    // whose sender said SMTPUTF8 but whose addresses and header are ASCII goes as it is.
    let needs_utf8 = !addresses_ascii || !message[..header_end].is_ascii();
    let smtputf8 = record.envelope.smtputf8 && needs_utf8 || !addresses_ascii;
    if needs_utf8 && !peer.smtputf8 {
        return Err(
            "5.6.7 the message needs SMTPUTF8 (non-ASCII addresses or header) and the receiving server does not support it"
                .into(),
        );
    }
    if record.envelope.body == BodyType::BinaryMime {
        if peer.binary_mime && peer.chunking {
            return Ok(Prepared {
                message: message.to_vec(),
                body: Some("BINARYMIME"),
                smtputf8,
            });
        }
        return Err(
            "5.6.3 the message is BINARYMIME and the receiving server does not support it".into(),
        );
    }
    // A client may have sent 8-bit data without saying so: what counts is the bytes.
    let eight_bit = !message[header_end..].is_ascii();
    if !eight_bit && record.envelope.body == BodyType::SevenBit {
        return Ok(Prepared {
            message: message.to_vec(),
            body: None,
            smtputf8,
        });
    }
    if peer.eight_bit_mime {
        return Ok(Prepared {
            message: message.to_vec(),
            body: Some("8BITMIME"),
            smtputf8,
        });
    }
    if !eight_bit {
        return Ok(Prepared {
            message: message.to_vec(),
            body: None,
            smtputf8,
        });
    }
    match downgrade::to_seven_bit(message) {
        Some(converted) => Ok(Prepared {
            message: converted,
            body: None,
            smtputf8,
        }),
        None => Err(
            "5.6.3 the message has 8-bit content that cannot be converted and the receiving server does not support 8BITMIME"
                .into(),
        ),
    }
}
