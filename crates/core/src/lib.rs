//! Trimaran's mail core, shared by every protocol front end: configuration, the message parser
//! that fills the store's metadata, passwords, recipient resolution and delivery.

pub mod address;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod dkim;
pub mod message;
pub mod mime;
pub mod net;
pub mod search_index;
pub mod throttle;
pub mod tls;

use std::sync::Arc;

pub use config::Config;
pub use trimaran_store as store;
use trimaran_store::Store;

/// What every front end needs: the store, the configuration, and state shared across
/// protocols such as the login throttle.
pub struct Core {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    pub logins: throttle::LoginThrottle,
    /// Woken when mail enters the outbound queue, so the runner need not wait for its poll.
    pub queue_wake: tokio::sync::Notify,
}

impl Core {
    pub fn new(store: Arc<Store>, config: Arc<Config>) -> Arc<Core> {
        let logins = throttle::LoginThrottle::new(config.login_throttle.clone());
        Arc::new(Core {
            store,
            config,
            logins,
            queue_wake: tokio::sync::Notify::new(),
        })
    }
}
