//! What the protocol front ends share about connections: TLS or plain streams, bounded line
//! framing, and the gate that limits connections per address and stops them on shutdown.

mod conn;
mod gate;
pub mod line;

pub use conn::{accept_tls, Conn, LineEvent, ReadError, Stream};
pub use gate::{accept_until_stopped, Gate, Pass, Refusal};
