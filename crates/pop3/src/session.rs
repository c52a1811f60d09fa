//! One POP3 connection through its states (RFC 1939 §3): AUTHORIZATION until the client has
//! authenticated and locked its maildrop, TRANSACTION until QUIT, then UPDATE.

use std::sync::Arc;

use trimaran_core::net::{Conn, LineEvent, ReadError};
use trimaran_core::store::{AccountId, BlobHash, MailboxId};

use crate::listener::{MaildropLock, Pop3Server};
use crate::parser::{parse, Command, ParseError};

pub(crate) enum Flow {
    Continue,
    Close,
}

/// One message as the session numbered it at login. The list does not change during the
/// session (RFC 1939 §5): mail arriving meanwhile, or removed by IMAP, does not renumber it.
pub(crate) struct Entry {
    pub uid: u32,
    pub size: u64,
    pub hash: BlobHash,
    pub deleted: bool,
}

pub(crate) struct Maildrop {
    pub account: AccountId,
    pub address: String,
    pub uidvalidity: u32,
    pub inbox: MailboxId,
    pub messages: Vec<Entry>,
    pub _lock: MaildropLock,
}

pub(crate) struct Session {
    pub server: Arc<Pop3Server>,
    pub conn: Conn,
    pub maildrop: Option<Maildrop>,
    /// Name given by USER, waiting for PASS.
    pub user: Option<String>,
    pub errors: usize,
    pub auth_failures: usize,
}

impl Session {
    pub fn new(server: Arc<Pop3Server>, conn: Conn) -> Session {
        Session {
            server,
            conn,
            maildrop: None,
            user: None,
            errors: 0,
            auth_failures: 0,
        }
    }

    pub fn ok(&mut self, text: &str) {
        self.conn.queue(format!("+OK {text}\r\n").as_bytes());
    }

    pub fn err(&mut self, text: &str) {
        self.conn.queue(format!("-ERR {text}\r\n").as_bytes());
    }

    /// A client mistake, counted toward the limit.
    pub fn fail(&mut self, text: &str) {
        self.errors += 1;
        self.err(text);
    }

    pub async fn run(mut self) {
        self.ok("Trimaran POP3 server ready");
        let limits = self.server.core.config.pop3.clone();
        let mut stopping = self.server.gate.stopping();
        loop {
            let read = tokio::select! {
                r = self.conn.read_line(limits.max_command_line, self.server.idle_timeout()) => r,
                // Between commands nothing is half done; deletions are only applied by QUIT.
                _ = stopping.wait_for(|s| *s) => {
                    self.err("[SYS/TEMP] Server shutting down");
                    break;
                }
            };
            let flow = match read {
                Ok(LineEvent::Line(line)) => self.dispatch(&line).await,
                Ok(LineEvent::TooLong) => {
                    self.fail("Line too long");
                    Flow::Continue
                }
                // RFC 1939 §3: an autologout timer expiring closes without entering UPDATE.
                Err(ReadError::TimedOut) => {
                    self.err("Autologout: idle for too long");
                    break;
                }
                Err(_) => break,
            };
            if matches!(flow, Flow::Close) {
                break;
            }
            if self.errors >= limits.max_errors {
                self.err("Too many errors");
                break;
            }
        }
        self.conn.shutdown().await;
    }

    async fn dispatch(&mut self, line: &[u8]) -> Flow {
        let Ok(text) = std::str::from_utf8(line) else {
            self.fail("Command is not valid UTF-8");
            return Flow::Continue;
        };
        let text = text.trim_end_matches(['\r', '\n']);
        let command = match parse(text) {
            Ok(c) => c,
            Err(ParseError::Unknown) => {
                self.fail("Unknown command");
                return Flow::Continue;
            }
            Err(ParseError::Syntax(hint)) => {
                self.fail(&format!("Syntax: {hint}"));
                return Flow::Continue;
            }
        };
        let authorized = self.maildrop.is_some();
        match (command, authorized) {
            (Command::Capa, _) => self.capa(),
            (Command::Quit, _) => return self.quit().await,
            (Command::Noop, true) => self.ok(""),
            (Command::Stls, false) => return self.stls().await,
            (Command::Utf8, false) => self.ok("UTF8 enabled"),
            (Command::User(name), false) => self.user(name),
            (Command::Pass(password), false) => return self.pass(password).await,
            (Command::Auth { mechanism, initial }, false) => {
                return self.auth(mechanism, initial).await
            }
            (Command::Stat, true) => self.stat(),
            (Command::List(n), true) => self.list(n),
            (Command::Uidl(n), true) => self.uidl(n),
            (Command::Retr(n), true) => self.retr(n, None).await,
            (Command::Top(n, lines), true) => self.retr(n, Some(lines)).await,
            (Command::Dele(n), true) => self.dele(n),
            (Command::Rset, true) => self.rset(),
            (_, true) => self.fail("Command not valid in the TRANSACTION state"),
            (_, false) => self.fail("Command not valid in the AUTHORIZATION state"),
        }
        Flow::Continue
    }

    /// The message numbered `n` by this session, unless it does not exist or is marked deleted.
    pub fn message(&mut self, n: usize) -> Option<&Entry> {
        let entry = self.maildrop.as_ref()?.messages.get(n.checked_sub(1)?)?;
        (!entry.deleted).then_some(entry)
    }
}
