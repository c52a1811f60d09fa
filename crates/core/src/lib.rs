//! Trimaran's mail core, shared by every protocol front end: configuration, the message parser
//! that fills the store's metadata, passwords, recipient resolution and delivery.

pub mod address;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod message;
pub mod net;
pub mod tls;

use std::sync::Arc;

pub use config::Config;
pub use trimaran_store as store;
use trimaran_store::Store;

/// What every front end needs: the store and the configuration.
pub struct Core {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
}

impl Core {
    pub fn new(store: Arc<Store>, config: Arc<Config>) -> Arc<Core> {
        Arc::new(Core { store, config })
    }
}
