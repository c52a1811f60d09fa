//! One module per POP3 command; each adds a method to the session.

mod auth;
mod capa;
mod dele;
mod list;
mod quit;
mod retr;
mod rset;
mod stat;
mod stls;
mod uidl;
mod user;
