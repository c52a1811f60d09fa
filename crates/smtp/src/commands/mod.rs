//! One module per SMTP command. Each adds methods to the session; `finish` completes a
//! transaction for both DATA and BDAT.

mod auth;
mod bdat;
mod data;
mod ehlo;
mod finish;
mod mail;
mod misc;
mod rcpt;
mod starttls;

use trimaran_core::delivery::{resolve, retry, Resolved};
use trimaran_core::store::StoreError;

use crate::session::Session;

impl Session {
    /// Resolves an address against the store, waiting out a store outage up to the G2 bound.
    pub(crate) async fn resolve(&self, address: &str) -> Result<Resolved, StoreError> {
        let store = &self.server.core.store;
        retry(self.server.core.config.store_wait(), || {
            resolve(store, address)
        })
        .await
    }

    /// Whether `address` (normalised) delivers to the authenticated account: its own address,
    /// a sub-address of it, or an alias that includes it.
    pub(crate) async fn owns(&self, address: &str) -> Result<bool, StoreError> {
        let Some(auth) = &self.auth else {
            return Ok(false);
        };
        if address == auth.address {
            return Ok(true);
        }
        Ok(matches!(self.resolve(address).await?,
            Resolved::Local { accounts, .. } if accounts.contains(&auth.account)))
    }
}
