//! Accepting POP3 connections, and the maildrop locks shared by all sessions of the process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use trimaran_core::delivery::retry;
use trimaran_core::net::{accept_tls, accept_until_stopped, Conn, Gate, Stream};
use trimaran_core::store::{now_unix, AccountId, Store, StoreError};
use trimaran_core::Core;

use crate::session::Session;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pop3Kind {
    /// Port 110: clear text until STLS (RFC 2595).
    Plain,
    /// Port 995: TLS from the first byte (RFC 8314).
    Tls,
}

pub struct Pop3Listener {
    pub kind: Pop3Kind,
    pub socket: TcpListener,
}

impl Pop3Listener {
    pub async fn bind(kind: Pop3Kind, addr: SocketAddr) -> std::io::Result<Pop3Listener> {
        Ok(Pop3Listener {
            kind,
            socket: TcpListener::bind(addr).await?,
        })
    }
}

pub struct Pop3Server {
    pub core: Arc<Core>,
    pub tls: Option<Arc<TlsAcceptor>>,
    pub gate: Arc<Gate>,
    sessions: AtomicU64,
}

/// How long a maildrop lease lasts unless renewed: how long a maildrop stays locked after the
/// process holding it died without releasing it.
const LEASE: Duration = Duration::from_secs(30);

/// Exclusive access to a maildrop (RFC 1939 §4) for one session, as a lease in the store so
/// that it holds across every Trimaran process on the store. Renewed while the session lives;
/// dropping it (QUIT, or the connection dying) gives it back.
pub struct MaildropLock {
    store: Arc<Store>,
    account: AccountId,
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        self.renewal.abort();
        let (store, account, holder) = (self.store.clone(), self.account, self.holder.clone());
        // If this fails the lease simply lapses.
        tokio::spawn(async move {
            if let Err(e) = store.meta().release_maildrop(account, &holder).await {
                tracing::warn!(error = %e, account, "releasing a maildrop lease failed");
            }
        });
    }
}

impl Pop3Server {
    pub fn new(core: Arc<Core>, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<Pop3Server> {
        let limits = &core.config.pop3;
        let gate = Gate::new(limits.max_connections_per_ip, limits.max_connections);
        Arc::new(Pop3Server {
            core,
            tls: tls.map(|c| Arc::new(TlsAcceptor::from(c))),
            gate,
            sessions: AtomicU64::new(0),
        })
    }

    /// Takes the maildrop lease for a new session; None when another session holds it.
    pub async fn lock_maildrop(
        &self,
        account: AccountId,
    ) -> Result<Option<MaildropLock>, StoreError> {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        let holder = format!("{}:{}:{n}", self.core.config.hostname, std::process::id());
        let store = self.core.store.clone();
        let wait = self.core.config.store_wait();
        let taken = retry(wait, || {
            store
                .meta()
                .lease_maildrop(account, &holder, now_unix() + LEASE.as_secs() as i64)
        })
        .await?;
        if !taken {
            return Ok(None);
        }
        let renewal = tokio::spawn({
            let (store, holder) = (store.clone(), holder.clone());
            async move {
                let mut tick = tokio::time::interval(LEASE / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let until = now_unix() + LEASE.as_secs() as i64;
                    match store.meta().lease_maildrop(account, &holder, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(account, "maildrop lease lost to another session")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, account, "renewing a maildrop lease failed")
                        }
                    }
                }
            }
        });
        Ok(Some(MaildropLock {
            store,
            account,
            holder,
            renewal,
        }))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.core.config.pop3.idle_timeout)
    }

    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.gate.shut_down(grace).await
    }

    pub async fn run(self: Arc<Self>, listener: Pop3Listener) {
        let kind = listener.kind;
        let name = match kind {
            Pop3Kind::Plain => "pop3",
            Pop3Kind::Tls => "pop3s",
        };
        accept_until_stopped(listener.socket, &self.gate.clone(), name, |tcp, peer| {
            let server = self.clone();
            tokio::spawn(async move { server.handle(kind, tcp, peer).await });
        })
        .await;
    }

    async fn handle(self: Arc<Self>, kind: Pop3Kind, tcp: TcpStream, peer: SocketAddr) {
        let Ok(_pass) = self.gate.admit(peer.ip()) else {
            if kind == Pop3Kind::Plain {
                let mut conn = Conn::new(Stream::Plain(tcp), peer, Duration::from_secs(10));
                conn.queue(b"-ERR [SYS/TEMP] Too many connections, try again later\r\n");
                conn.shutdown().await;
            }
            return;
        };
        let stream = match kind {
            Pop3Kind::Plain => Stream::Plain(tcp),
            Pop3Kind::Tls => {
                let Some(acceptor) = self.tls.clone() else {
                    return;
                };
                match accept_tls(tcp, acceptor, self.idle_timeout()).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "POP3 TLS handshake failed");
                        return;
                    }
                }
            }
        };
        let conn = Conn::new(stream, peer, self.idle_timeout());
        Session::new(self.clone(), conn).run().await;
    }
}
