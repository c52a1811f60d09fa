//! One module per IMAP command (RFC 9051 §6), each an `impl Session` block.

mod append;
mod authenticate;
mod capability;
mod close;
mod copy;
mod create;
mod delete;
mod enable;
mod expunge;
mod fetch;
mod id;
mod idle;
mod list;
mod login;
mod logout;
mod namespace;
mod noop;
mod quota;
mod rename;
pub(crate) mod search;
mod select;
mod sort;
mod starttls;
mod status;
mod store;
mod subscribe;
mod thread;
