//! Accepting POP3 connections, and the maildrop locks shared by all sessions of the process.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use trimaran_core::net::{accept_tls, Conn, Gate, Stream};
use trimaran_core::store::AccountId;
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
    /// Accounts whose maildrop a session holds (RFC 1939 §4: exclusive access).
    locks: Mutex<HashSet<AccountId>>,
}

/// Holds a maildrop lock; dropping it (at QUIT or when the connection dies) releases it.
pub struct MaildropLock {
    server: Arc<Pop3Server>,
    account: AccountId,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        self.server
            .locks
            .lock()
            .expect("lock set")
            .remove(&self.account);
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
            locks: Mutex::new(HashSet::new()),
        })
    }

    pub fn lock_maildrop(self: &Arc<Self>, account: AccountId) -> Option<MaildropLock> {
        let fresh = self.locks.lock().expect("lock set").insert(account);
        fresh.then(|| MaildropLock {
            server: self.clone(),
            account,
        })
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.core.config.pop3.idle_timeout)
    }

    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.gate.shut_down(grace).await
    }

    pub async fn run(self: Arc<Self>, listener: Pop3Listener) {
        let mut stopping = self.gate.stopping();
        loop {
            let accepted = tokio::select! {
                a = listener.socket.accept() => a,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "POP3 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move { server.handle(listener.kind, tcp, peer).await });
        }
    }

    async fn handle(self: Arc<Self>, kind: Pop3Kind, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
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
