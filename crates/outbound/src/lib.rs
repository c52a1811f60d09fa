//! Trimaran's outbound mail: the queue runner that sends what the store's outbound queue
//! holds.
//!
//! - `route`: where a domain's mail goes (routes, smarthost, MX per RFC 5321 §5.1).
//! - `client`: the SMTP client (STARTTLS, PIPELINING, DSN parameters).
//! - `transport`, `downgrade`: what the peer must support, and 8-bit to 7-bit conversion.
//! - `sign`: DKIM signatures.
//! - `worker`: claiming under leases, connection reuse, concurrency limits, retries.
//! - `notify`, `report`: RFC 3464 delivery reports.

pub mod client;
pub mod downgrade;
mod notify;
pub mod report;
pub mod route;
pub mod sign;
pub mod transport;
mod worker;

use std::sync::Arc;

use trimaran_core::Core;

/// The queue runner of this process.
pub struct Outbound {
    runner: Arc<worker::Runner>,
}

impl Outbound {
    /// Starts sending.
    pub fn start(core: Arc<Core>) -> Result<Outbound, String> {
        let runner = worker::Runner::new(core)?;
        tokio::spawn(runner.clone().run());
        Ok(Outbound { runner })
    }

    /// Stops claiming work and waits up to `grace` for the sends under way; returns how many
    /// recipients were still in progress (their leases lapse and another process, or this
    /// one restarted, takes them over).
    pub async fn stop(&self, grace: std::time::Duration) -> usize {
        self.runner.stop(grace).await
    }
}
