//! The SMTP wire: framing of command lines with a length bound, parsing of commands
//! (through smtp-proto), and decoding of DATA (dot-unstuffing, RFC 5321 §4.5.2). Pure functions
//! over buffers, apart from the network, so that they can be tested byte by byte.

pub mod data;

use smtp_proto::{Error as ProtoError, Request};

use crate::reply::Reply;

/// Parses one complete command line (ending in LF) into an owned request.
pub fn parse_command(line: &[u8]) -> Result<Request<String>, Reply> {
    // Commands are ASCII, or UTF-8 with SMTPUTF8 (RFC 6531 §3.3). smtp-proto would replace
    // invalid bytes with U+FFFD and carry on; an address must never be guessed at.
    if std::str::from_utf8(line).is_err() {
        return Err(Reply::new(501, "5.5.2", "Command is not valid UTF-8"));
    }
    let mut iter = line.iter();
    let request = Request::parse(&mut iter).map_err(reply_for)?;
    Ok(match request {
        Request::Ehlo { host } => Request::Ehlo {
            host: host.into_owned(),
        },
        Request::Lhlo { host } => Request::Lhlo {
            host: host.into_owned(),
        },
        Request::Helo { host } => Request::Helo {
            host: host.into_owned(),
        },
        Request::Mail { from } => Request::Mail {
            from: smtp_proto::MailFrom {
                address: from.address.into_owned(),
                flags: from.flags,
                size: from.size,
                trans_id: from.trans_id.map(|v| v.into_owned()),
                by: from.by,
                env_id: from.env_id.map(|v| v.into_owned()),
                solicit: from.solicit.map(|v| v.into_owned()),
                mtrk: from.mtrk.map(|m| smtp_proto::Mtrk {
                    certifier: m.certifier.into_owned(),
                    timeout: m.timeout,
                }),
                auth: from.auth.map(|v| v.into_owned()),
                hold_for: from.hold_for,
                hold_until: from.hold_until,
                mt_priority: from.mt_priority,
            },
        },
        Request::Rcpt { to } => Request::Rcpt {
            to: smtp_proto::RcptTo {
                address: to.address.into_owned(),
                orcpt: to.orcpt.map(|v| v.into_owned()),
                rrvs: to.rrvs,
                flags: to.flags,
            },
        },
        Request::Bdat {
            chunk_size,
            is_last,
        } => Request::Bdat {
            chunk_size,
            is_last,
        },
        Request::Auth {
            mechanism,
            initial_response,
        } => Request::Auth {
            mechanism,
            initial_response: initial_response.into_owned(),
        },
        Request::Noop { value } => Request::Noop {
            value: value.into_owned(),
        },
        Request::Vrfy { value } => Request::Vrfy {
            value: value.into_owned(),
        },
        Request::Expn { value } => Request::Expn {
            value: value.into_owned(),
        },
        Request::Help { value } => Request::Help {
            value: value.into_owned(),
        },
        Request::Etrn { name } => Request::Etrn {
            name: name.into_owned(),
        },
        Request::Atrn { domains } => Request::Atrn {
            domains: domains.into_iter().map(|d| d.into_owned()).collect(),
        },
        Request::Burl { uri, is_last } => Request::Burl {
            uri: uri.into_owned(),
            is_last,
        },
        Request::StartTls => Request::StartTls,
        Request::Data => Request::Data,
        Request::Rset => Request::Rset,
        Request::Quit => Request::Quit,
    })
}

fn reply_for(e: ProtoError) -> Reply {
    match e {
        ProtoError::UnknownCommand => Reply::new(500, "5.5.1", "Command unrecognized"),
        ProtoError::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "Bad recipient address syntax")
        }
        ProtoError::SyntaxError { syntax } => {
            Reply::new(501, "5.5.2", format!("Syntax error, expected: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid value for parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => Reply::new(
            555,
            "5.5.4",
            format!("Unsupported parameter {}", printable(&param)),
        ),
        ProtoError::NeedsMoreData { .. }
        | ProtoError::ResponseTooLong
        | ProtoError::InvalidResponse { .. } => Reply::new(500, "5.5.2", "Syntax error"),
    }
}

/// Client text echoed back in a reply: printable ASCII only, bounded.
pub fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert!(
            matches!(parse_command(b"EHLO client.test\r\n"), Ok(Request::Ehlo { host }) if host == "client.test")
        );
        assert!(
            matches!(parse_command(b"mail from:<a@b.test> SIZE=100\r\n"), Ok(Request::Mail { from }) if from.address == "a@b.test" && from.size == 100)
        );
        assert!(
            matches!(parse_command(b"MAIL FROM:<>\r\n"), Ok(Request::Mail { from }) if from.address.is_empty())
        );
        assert!(matches!(
            parse_command(b"BDAT 10 LAST\r\n"),
            Ok(Request::Bdat {
                chunk_size: 10,
                is_last: true
            })
        ));
        assert_eq!(parse_command(b"FOO\r\n").unwrap_err().code, 500);
        assert_eq!(
            parse_command(b"MAIL FROM:foo\r\n").unwrap_err().code / 100,
            5
        );
        assert_eq!(
            parse_command(b"RCPT TO:<a@b> FOO=bar\r\n")
                .unwrap_err()
                .code,
            555
        );
        assert_eq!(parse_command(b"\xff\xfe\r\n").unwrap_err().code, 501);
    }

    #[test]
    fn invalid_utf8_address_is_refused() {
        let r = parse_command(b"MAIL FROM:<\xff\xfe@example.test> SMTPUTF8\r\n");
        assert!(matches!(r, Err(ref e) if e.code / 100 == 5), "{r:?}");
    }
}

#[cfg(test)]
mod robustness {
    //! Whatever bytes a client sends, the parsers answer or refuse; they never panic.

    use super::data::{DataDecoder, MessageSink};
    use super::parse_command;

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            const PIECES: &[&[u8]] = &[
                b"MAIL FROM:<",
                b"RCPT TO:<",
                b"EHLO ",
                b"BDAT ",
                b"AUTH PLAIN ",
                b">",
                b"<",
                b"@",
                b" SIZE=",
                b" BODY=8BITMIME",
                b" SMTPUTF8",
                b"\r\n",
                b".",
                b"\"",
                b"\\",
                b"=",
                b" ",
                b"\xff",
                b"\x00",
                "é".as_bytes(),
                b"99999999999999999999",
            ];
            let len = (self.next() % max as u64) as usize;
            let mut out = Vec::with_capacity(len);
            while out.len() < len {
                if self.next().is_multiple_of(3) {
                    out.extend_from_slice(PIECES[(self.next() % PIECES.len() as u64) as usize]);
                } else {
                    out.push(self.next() as u8);
                }
            }
            out
        }
    }

    #[test]
    fn command_parser_never_panics() {
        let mut rng = Rng(0x5eed);
        for _ in 0..200_000 {
            let mut line = rng.bytes(120);
            line.extend_from_slice(b"\r\n");
            let _ = parse_command(&line);
        }
    }

    #[test]
    fn data_decoder_never_panics_and_respects_the_limit() {
        let mut rng = Rng(0xda7a);
        let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(1 << 20));
        for _ in 0..20_000 {
            let mut decoder = DataDecoder::default();
            let mut sink = MessageSink::new(300, budget.clone());
            let input = rng.bytes(1000);
            let mut at = 0;
            while at < input.len() {
                let step = 1 + (rng.next() % 64) as usize;
                let end = (at + step).min(input.len());
                let (used, done) = decoder.feed(&input[at..end], &mut sink);
                assert!(used <= end - at);
                at += used;
                if done {
                    break;
                }
            }
            if let Ok((bytes, _)) = sink.finish() {
                assert!(bytes.len() <= 300);
            }
        }
    }
}
