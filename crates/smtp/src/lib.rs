//! Trimaran's SMTP server: receiving for local domains (RFC 5321) on the MX listener, and
//! message submission (RFC 6409) with STARTTLS or implicit TLS (RFC 8314).
//!
//! `parser/` is the wire (framing, command syntax, DATA decoding); `commands/` holds one module
//! per command; `session` drives a connection; `listener` accepts them.

pub mod commands;
pub mod listener;
pub mod parser;
pub mod reply;
mod session;

pub use listener::{Listener, ListenerKind, SmtpServer};
