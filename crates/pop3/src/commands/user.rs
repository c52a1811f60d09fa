//! USER and PASS (RFC 1939 §7), only under TLS. Also what every way of logging in ends with:
//! checking the credentials, locking the maildrop and numbering its messages.

use std::time::Duration;

use trimaran_core::auth::{authenticate, Login};
use trimaran_core::delivery::retry;
use trimaran_core::store::{AccountRecord, INBOX};

use crate::session::{Entry, Flow, Maildrop, Session};

impl Session {
    pub(crate) fn user(&mut self, name: String) {
        if !self.conn.tls {
            // RFC 2595 §4 lets a server refuse clear-text passwords; we always do.
            self.fail("[AUTH] USER/PASS only after STLS");
            return;
        }
        self.user = Some(name);
        self.ok("Send PASS");
    }

    pub(crate) async fn pass(&mut self, password: String) -> Flow {
        let Some(user) = self.user.take() else {
            self.fail("USER first");
            return Flow::Continue;
        };
        self.login(&user, password.into_bytes()).await
    }

    /// Checks the credentials and opens the maildrop.
    pub(crate) async fn login(&mut self, user: &str, password: Vec<u8>) -> Flow {
        let core = self.server.core.clone();
        let account = match authenticate(&core, self.conn.peer.ip(), user, password).await {
            Ok(Login::Accepted(account)) => account,
            Ok(Login::Rejected) => return self.login_failed().await,
            Ok(Login::Throttled) => {
                tracing::info!(peer = %self.conn.peer, "POP3 login refused: too many failed logins from this address");
                self.err("[AUTH] Too many failed logins, try again later");
                return Flow::Close;
            }
            Err(e) => {
                tracing::warn!(error = %e, "POP3 login: store unavailable");
                self.err("[SYS/TEMP] Temporary failure, try again later");
                return Flow::Continue;
            }
        };
        self.open_maildrop(account).await;
        Flow::Continue
    }

    async fn login_failed(&mut self) -> Flow {
        self.auth_failures += 1;
        tracing::info!(peer = %self.conn.peer, failures = self.auth_failures, "POP3 authentication failed");
        // Each failure costs the client more time, to slow down guessing.
        tokio::time::sleep(Duration::from_millis(300 * self.auth_failures as u64)).await;
        if self.auth_failures >= self.server.core.config.pop3.max_auth_failures {
            self.err("[AUTH] Too many authentication failures");
            return Flow::Close;
        }
        self.fail("[AUTH] Authentication failed");
        Flow::Continue
    }

    async fn open_maildrop(&mut self, account: AccountRecord) {
        let lock = match self.server.lock_maildrop(account.id).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                self.err("[IN-USE] Maildrop is locked by another session");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "POP3: cannot lock the maildrop");
                self.err("[SYS/TEMP] Cannot open the maildrop now, try again later");
                return;
            }
        };
        let core = self.server.core.clone();
        let wait = core.config.store_wait();
        let meta = core.store.meta();
        let listed = retry(wait, || meta.list_messages(account.id, Some(INBOX))).await;
        let inbox = retry(wait, || meta.mailboxes(account.id)).await;
        let (messages, mailboxes) = match (listed, inbox) {
            (Ok(m), Ok(b)) => (m, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "POP3: cannot open maildrop");
                self.err("[SYS/TEMP] Cannot open the maildrop now, try again later");
                return;
            }
        };
        let Some(inbox) = mailboxes.iter().find(|m| m.name == INBOX) else {
            self.err("[SYS/PERM] The account has no INBOX");
            return;
        };
        let (uidvalidity, inbox) = (inbox.uidvalidity, inbox.id);
        let entries: Vec<Entry> = messages
            .into_iter()
            .map(|m| Entry {
                uid: m.uid,
                size: m.size,
                hash: m.hash,
                deleted: false,
            })
            .collect();
        let octets: u64 = entries.iter().map(|e| e.size).sum();
        let count = entries.len();
        tracing::info!(peer = %self.conn.peer, user = %account.address, messages = count, "POP3 login");
        self.maildrop = Some(Maildrop {
            account: account.id,
            address: account.address,
            uidvalidity,
            inbox,
            messages: entries,
            _lock: lock,
        });
        self.ok(&format!("Maildrop has {count} messages ({octets} octets)"));
    }
}
