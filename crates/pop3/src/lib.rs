//! Trimaran's POP3 server: RFC 1939 with CAPA and response codes (RFC 2449), STLS (RFC 2595),
//! SASL PLAIN (RFC 5034) and UTF8 (RFC 6856).
//!
//! `parser` turns a line into a command; `commands/` holds one module per command; `session`
//! drives a connection through the AUTHORIZATION, TRANSACTION and UPDATE states.

pub mod commands;
pub mod listener;
pub mod parser;
mod session;

pub use listener::{Pop3Listener, Pop3Server};
