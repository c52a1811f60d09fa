//! One SMTP connection: reads commands, hands each to its module in `commands/`, and enforces
//! the per-connection limits (line length, timeouts, error count).

use std::sync::Arc;
use std::time::Duration;

use smtp_proto::Request;
use trimaran_core::store::{AccountId, Notify, Ret};

use crate::listener::{ListenerKind, SmtpServer};
use crate::parser::data::MessageSink;
use crate::parser::parse_command;
use crate::reply::Reply;
use trimaran_core::net::{Conn, LineEvent, ReadError};

pub(crate) enum Flow {
    Continue,
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    SevenBit,
    EightBitMime,
    /// RFC 3030 §3: only with BDAT.
    BinaryMime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Local {
        accounts: Vec<AccountId>,
        forwards: Vec<String>,
    },
    Remote,
}

pub(crate) struct Recipient {
    pub address: String,
    pub target: Target,
    /// RFC 3461 §4.1 NOTIFY and §4.2 ORCPT (the address, decoded from xtext).
    pub notify: Option<Notify>,
    pub orcpt: Option<String>,
}

/// A mail transaction (RFC 5321 §3.3), from MAIL to end of data.
pub(crate) struct Transaction {
    /// Reverse-path as the client gave it; empty for the null sender.
    pub sender: String,
    pub body: Body,
    pub smtputf8: bool,
    /// RFC 3461 §4.4 ENVID and §4.3 RET.
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    /// RFC 4865 FUTURERELEASE: Unix time of release, 0 for none.
    pub hold_until: i64,
    pub recipients: Vec<Recipient>,
    /// Content received so far by BDAT (RFC 3030), if chunking has begun.
    pub chunks: Option<MessageSink>,
}

pub(crate) struct Authenticated {
    pub account: AccountId,
    pub address: String,
}

pub(crate) struct Session {
    pub server: Arc<SmtpServer>,
    pub kind: ListenerKind,
    pub conn: Conn,
    /// Name from EHLO/HELO; None until the client has greeted.
    pub helo: Option<String>,
    pub esmtp: bool,
    pub auth: Option<Authenticated>,
    pub tx: Option<Transaction>,
    pub errors: usize,
    pub auth_failures: usize,
}

impl Session {
    pub fn new(server: Arc<SmtpServer>, kind: ListenerKind, conn: Conn) -> Session {
        Session {
            server,
            kind,
            conn,
            helo: None,
            esmtp: false,
            auth: None,
            tx: None,
            errors: 0,
            auth_failures: 0,
        }
    }

    pub fn hostname(&self) -> &str {
        &self.server.core.config.hostname
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.server.core.config.smtp.command_timeout)
    }

    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.server.core.config.smtp.data_timeout)
    }

    pub fn reply(&mut self, reply: Reply) {
        reply.encode(self.conn.out());
    }

    /// Replies with a client error and counts it toward the limit.
    pub fn error(&mut self, reply: Reply) {
        self.errors += 1;
        self.reply(reply);
    }

    pub async fn run(mut self) {
        let greeting = Reply::new(220, "", format!("{} ESMTP Trimaran", self.hostname()));
        self.reply(greeting);
        let max_line = self.server.core.config.smtp.max_command_line;
        let max_errors = self.server.core.config.smtp.max_errors;
        let mut stopping = self.server.gate.stopping();
        loop {
            // Between commands is the one safe place to leave: nothing is half done.
            let read = tokio::select! {
                r = self.conn.read_line(max_line, self.command_timeout()) => r,
                _ = stopping.wait_for(|s| *s) => {
                    let host = self.hostname().to_string();
                    self.reply(Reply::new(421, "4.3.2", format!("{host} Service shutting down")));
                    break;
                }
            };
            let flow = match read {
                Ok(LineEvent::Line(line)) => match parse_command(&line) {
                    Ok(request) => self.dispatch(request).await,
                    Err(reply) => {
                        self.error(reply);
                        Flow::Continue
                    }
                },
                Ok(LineEvent::TooLong) => {
                    self.error(Reply::new(500, "5.5.2", "Line too long"));
                    Flow::Continue
                }
                Err(ReadError::TimedOut) => {
                    let host = self.hostname().to_string();
                    self.reply(Reply::new(
                        421,
                        "4.4.2",
                        format!("{host} Timeout, closing connection"),
                    ));
                    Flow::Close
                }
                // The client went away. Whatever transaction was open is dropped: nothing of it
                // was acknowledged, so nothing of it is stored.
                Err(ReadError::Closed) => break,
                Err(ReadError::Io(e)) => {
                    tracing::debug!(peer = %self.conn.peer, error = %e, "connection failed");
                    break;
                }
            };
            if matches!(flow, Flow::Close) {
                break;
            }
            if self.errors >= max_errors {
                self.reply(Reply::new(
                    421,
                    "4.7.0",
                    "Too many errors, closing connection",
                ));
                break;
            }
        }
        self.conn.shutdown().await;
    }

    async fn dispatch(&mut self, request: Request<String>) -> Flow {
        match request {
            Request::Ehlo { host } => self.ehlo(host, true),
            Request::Helo { host } => self.ehlo(host, false),
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => return self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last).await,
            Request::Rset => self.rset(),
            Request::Noop { .. } => self.noop(),
            Request::Quit => return self.quit(),
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response).await,
            Request::Vrfy { .. } => self.vrfy(),
            Request::Help { .. } => self.help(),
            Request::Lhlo { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.error(Reply::new(502, "5.5.1", "Command not implemented"));
            }
        }
        Flow::Continue
    }
}
