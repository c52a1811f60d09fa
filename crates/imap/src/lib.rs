//! IMAP: `parser` turns bytes into commands, `commands` carries them out (one module per
//! command), `fetch` builds message data and `order` sorts and threads messages from what the
//! store parsed at delivery, `session` holds a connection's state and `listener` accepts
//! connections.

pub mod commands;
pub mod fetch;
pub mod head_cache;
pub mod listener;
pub mod mailbox_cache;
pub mod order;
pub mod parser;
pub mod response;
pub mod rights;
pub mod session;
pub mod utf7;

pub use listener::{ImapKind, ImapListener, ImapServer};
