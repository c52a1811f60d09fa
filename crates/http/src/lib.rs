//! The HTTPS front end. Today it serves one thing, a user's own export (`GET /export.zip`,
//! DESIGN.md G7); the web interface will put a button on it.
//!
//! HTTPS only, HTTP/1.1 only: requests carry passwords (HTTP Basic), so they must never
//! travel in clear text, and a streamed download needs nothing HTTP/2 would add. The accept
//! loop, connection limits and TLS are the other listeners' ([`trimaran_core::net`]); axum
//! only routes.

mod auth;
pub mod listener;
pub mod routes;

pub use listener::{HttpListener, HttpServer};
