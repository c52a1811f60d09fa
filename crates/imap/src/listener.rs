//! Accepting IMAP connections, and what all sessions of the process share.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use trimaran_core::net::{accept_tls, accept_until_stopped, Conn, Gate, Stream};
use trimaran_core::store::AccountId;
use trimaran_core::Core;

use crate::session::Session;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImapKind {
    /// Port 143: clear text until STARTTLS (RFC 9051 §6.2.1).
    Plain,
    /// Port 993: TLS from the first byte (RFC 8314).
    Tls,
}

pub struct ImapListener {
    pub kind: ImapKind,
    pub socket: TcpListener,
}

impl ImapListener {
    pub async fn bind(kind: ImapKind, addr: SocketAddr) -> std::io::Result<ImapListener> {
        Ok(ImapListener {
            kind,
            socket: TcpListener::bind(addr).await?,
        })
    }
}

/// Bytes of literals all sessions may hold in memory at once, in KiB: a burst of large
/// APPENDs waits or is refused instead of exhausting memory.
const LITERAL_BUDGET_KIB: usize = 512 * 1024;

pub struct ImapServer {
    pub core: Arc<Core>,
    pub tls: Option<Arc<TlsAcceptor>>,
    pub gate: Arc<Gate>,
    pub literal_budget: Arc<Semaphore>,
    /// Message lists of recently selected mailboxes.
    pub mailbox_cache: crate::mailbox_cache::MailboxCache,
    /// Metadata and header copies of recently fetched messages.
    pub head_cache: crate::head_cache::HeadCache,
    sessions: Mutex<HashMap<AccountId, usize>>,
}

/// A session's place in its account's session count; given back when dropped.
pub struct AccountSlot {
    server: Arc<ImapServer>,
    account: AccountId,
}

impl Drop for AccountSlot {
    fn drop(&mut self) {
        let mut sessions = self.server.sessions.lock().expect("session count lock");
        if let Some(n) = sessions.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                sessions.remove(&self.account);
            }
        }
    }
}

impl ImapServer {
    pub fn new(core: Arc<Core>, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<ImapServer> {
        let limits = &core.config.imap;
        let gate = Gate::new(limits.max_connections_per_ip, limits.max_connections);
        Arc::new(ImapServer {
            core,
            tls: tls.map(|c| Arc::new(TlsAcceptor::from(c))),
            gate,
            literal_budget: Arc::new(Semaphore::new(LITERAL_BUDGET_KIB)),
            mailbox_cache: Default::default(),
            head_cache: Default::default(),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new session for `account`; None past the per-account limit.
    pub fn account_slot(self: &Arc<Self>, account: AccountId) -> Option<AccountSlot> {
        let mut sessions = self.sessions.lock().expect("session count lock");
        let n = sessions.entry(account).or_insert(0);
        if *n >= self.core.config.imap.max_sessions_per_account {
            return None;
        }
        *n += 1;
        Some(AccountSlot {
            server: self.clone(),
            account,
        })
    }

    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.gate.shut_down(grace).await
    }

    pub async fn run(self: Arc<Self>, listener: ImapListener) {
        let kind = listener.kind;
        let name = match kind {
            ImapKind::Plain => "imap",
            ImapKind::Tls => "imaps",
        };
        accept_until_stopped(listener.socket, &self.gate.clone(), name, |tcp, peer| {
            let server = self.clone();
            tokio::spawn(async move { server.handle(kind, tcp, peer).await });
        })
        .await;
    }

    async fn handle(self: Arc<Self>, kind: ImapKind, tcp: TcpStream, peer: SocketAddr) {
        let login_timeout = Duration::from_secs(self.core.config.imap.login_timeout);
        let Ok(_pass) = self.gate.admit(peer.ip()) else {
            if kind == ImapKind::Plain {
                let mut conn = Conn::new(Stream::Plain(tcp), peer, Duration::from_secs(10));
                conn.queue(b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n");
                conn.shutdown().await;
            }
            return;
        };
        let stream = match kind {
            ImapKind::Plain => Stream::Plain(tcp),
            ImapKind::Tls => {
                let Some(acceptor) = self.tls.clone() else {
                    return;
                };
                match accept_tls(tcp, acceptor, login_timeout).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "IMAP TLS handshake failed");
                        return;
                    }
                }
            }
        };
        let conn = Conn::new(stream, peer, login_timeout);
        Session::new(self.clone(), conn).run().await;
    }
}
