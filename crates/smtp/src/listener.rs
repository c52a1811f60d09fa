//! Accepting connections: per-address and total connection limits, implicit TLS, and one task
//! per session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use trimaran_core::Core;

use crate::reply::Reply;
use crate::session::Session;
use crate::stream::{accept_tls, Conn, Stream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// Incoming mail for local domains (MX, port 25).
    Mx,
    /// Submission with STARTTLS (RFC 6409, port 587).
    Submission,
    /// Submission over implicit TLS (RFC 8314, port 465).
    Submissions,
}

impl ListenerKind {
    pub fn is_submission(self) -> bool {
        !matches!(self, ListenerKind::Mx)
    }

    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Mx => "smtp",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }
}

pub struct Listener {
    pub kind: ListenerKind,
    pub socket: TcpListener,
}

impl Listener {
    pub async fn bind(kind: ListenerKind, addr: SocketAddr) -> std::io::Result<Listener> {
        let socket = TcpListener::bind(addr).await?;
        Ok(Listener { kind, socket })
    }
}

/// State shared by every SMTP session of the process.
pub struct SmtpServer {
    pub core: Arc<Core>,
    pub tls: Option<Arc<TlsAcceptor>>,
    /// KiB of message content that may be held in memory at once, across all sessions.
    pub memory: Arc<Semaphore>,
    connections: Mutex<HashMap<IpAddr, usize>>,
    total: Semaphore,
    /// Becomes true when the server is stopping.
    stopping: watch::Sender<bool>,
}

/// Holds a connection's place in the per-address count.
struct Slot {
    server: Arc<SmtpServer>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.server.connections.lock().expect("connection map");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// KiB of message content held in memory at once by all sessions together.
const MESSAGE_MEMORY_KIB: usize = 1024 * 1024;

impl SmtpServer {
    pub fn new(core: Arc<Core>, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<SmtpServer> {
        let total = core.config.smtp.max_connections;
        Arc::new(SmtpServer {
            core,
            tls: tls.map(|c| Arc::new(TlsAcceptor::from(c))),
            memory: Arc::new(Semaphore::new(MESSAGE_MEMORY_KIB)),
            connections: Mutex::new(HashMap::new()),
            total: Semaphore::new(total),
            stopping: watch::channel(false).0,
        })
    }

    /// Bound on TLS handshakes and on sending replies to a client that does not read them.
    fn io_timeout(&self) -> Duration {
        Duration::from_secs(self.core.config.smtp.command_timeout)
    }

    /// A receiver that sessions watch to learn that the server is stopping.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Stops the server gently: idle sessions are told 421 and closed at once, sessions in the
    /// middle of a transaction finish it (its reply included), up to `grace`. Returns the number
    /// of sessions still open when the grace period ended.
    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open = self.core.config.smtp.max_connections - self.total.available_permits();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn take_slot(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut map = self.connections.lock().expect("connection map");
        let n = map.entry(ip).or_insert(0);
        if *n >= self.core.config.smtp.max_connections_per_ip {
            return None;
        }
        *n += 1;
        Some(Slot {
            server: self.clone(),
            ip,
        })
    }

    /// Accepts connections on `listener` until the server stops.
    pub async fn run(self: Arc<Self>, listener: Listener) {
        let kind = listener.kind;
        let mut stopping = self.stopping();
        loop {
            let accepted = tokio::select! {
                a = listener.socket.accept() => a,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = kind.name(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            tokio::spawn(async move { server.handle(kind, tcp, peer).await });
        }
    }

    async fn handle(self: Arc<Self>, kind: ListenerKind, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let Ok(_total) = self.total.try_acquire() else {
            refuse(
                tcp,
                kind,
                &Reply::new(421, "4.3.2", "Too many connections, try again later"),
            )
            .await;
            return;
        };
        let Some(_slot) = self.take_slot(peer.ip()) else {
            refuse(
                tcp,
                kind,
                &Reply::new(421, "4.7.0", "Too many connections from your address"),
            )
            .await;
            return;
        };
        let stream = if kind == ListenerKind::Submissions {
            let Some(acceptor) = self.tls.clone() else {
                return;
            };
            match accept_tls(tcp, acceptor, self.io_timeout()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            }
        } else {
            Stream::Plain(tcp)
        };
        let conn = Conn::new(stream, peer, self.io_timeout());
        Session::new(self.clone(), kind, conn).run().await;
    }
}

async fn refuse(tcp: TcpStream, kind: ListenerKind, reply: &Reply) {
    // On implicit TLS a clear-text reply would be garbage to the client: just close.
    if kind == ListenerKind::Submissions {
        return;
    }
    let peer = tcp.peer_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let mut conn = Conn::new(Stream::Plain(tcp), peer, Duration::from_secs(10));
    conn.reply(reply);
    conn.shutdown().await;
}
