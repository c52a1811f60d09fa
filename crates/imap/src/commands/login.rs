//! LOGIN (RFC 9051 §6.2.3), only under TLS. Also what every way of logging in ends with.

use std::time::Duration;

use trimaran_core::auth::{authenticate, Login};

use crate::session::{Account, Flow, Session};

impl Session {
    pub(crate) async fn login(&mut self, tag: &str, user: Vec<u8>, password: Vec<u8>) -> Flow {
        if !self.conn.tls && self.server.tls.is_some() {
            self.no(tag, "[PRIVACYREQUIRED] STARTTLS first");
            return Flow::Continue;
        }
        let Ok(user) = String::from_utf8(user) else {
            self.no(tag, "[AUTHENTICATIONFAILED] Invalid credentials");
            return Flow::Continue;
        };
        self.finish_login(tag, &user, password).await
    }

    pub(crate) async fn finish_login(&mut self, tag: &str, user: &str, password: Vec<u8>) -> Flow {
        let core = self.server.core.clone();
        let account = match authenticate(&core, self.conn.peer.ip(), user, password).await {
            Ok(Login::Accepted(account)) => account,
            Ok(Login::Rejected) => return self.login_failed(tag).await,
            Ok(Login::Throttled) => {
                tracing::info!(peer = %self.conn.peer, "IMAP login refused: too many failed logins from this address");
                self.no(tag, "[UNAVAILABLE] Too many failed logins, try again later");
                self.untagged("BYE Too many failed logins");
                return Flow::Close;
            }
            Err(e) => {
                tracing::warn!(error = %e, "IMAP login: store unavailable");
                self.no(tag, "[UNAVAILABLE] Temporary failure, try again later");
                return Flow::Continue;
            }
        };
        let Some(slot) = self.server.account_slot(account.id) else {
            self.no(tag, "[LIMIT] Too many sessions for this account");
            return Flow::Continue;
        };
        tracing::info!(peer = %self.conn.peer, user = %account.address, "IMAP login");
        self.account = Some(Account {
            id: account.id,
            address: account.address,
            _slot: slot,
        });
        let caps = self.capabilities();
        self.ok(tag, &format!("[CAPABILITY {caps}] Logged in"));
        Flow::Continue
    }

    async fn login_failed(&mut self, tag: &str) -> Flow {
        self.auth_failures += 1;
        tracing::info!(peer = %self.conn.peer, failures = self.auth_failures, "IMAP authentication failed");
        tokio::time::sleep(Duration::from_millis(300 * self.auth_failures as u64)).await;
        self.no(tag, "[AUTHENTICATIONFAILED] Invalid credentials");
        if self.auth_failures >= self.server.core.config.imap.max_auth_failures {
            self.untagged("BYE Too many authentication failures");
            return Flow::Close;
        }
        Flow::Continue
    }
}
