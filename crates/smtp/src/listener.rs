//! Accepting SMTP connections: admission through the shared gate, implicit TLS, one task per
//! session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use trimaran_core::net::{accept_tls, accept_until_stopped, Conn, Gate, Refusal, Stream};
use trimaran_core::Core;

use crate::reply::Reply;
use crate::session::Session;

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
    pub gate: Arc<Gate>,
}

/// KiB of message content held in memory at once by all sessions together.
const MESSAGE_MEMORY_KIB: usize = 1024 * 1024;

impl SmtpServer {
    pub fn new(core: Arc<Core>, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<SmtpServer> {
        let limits = &core.config.smtp;
        let gate = Gate::new(limits.max_connections_per_ip, limits.max_connections);
        Arc::new(SmtpServer {
            core,
            tls: tls.map(|c| Arc::new(TlsAcceptor::from(c))),
            memory: Arc::new(Semaphore::new(MESSAGE_MEMORY_KIB)),
            gate,
        })
    }

    /// Bound on TLS handshakes and on sending replies to a client that does not read them.
    fn io_timeout(&self) -> Duration {
        Duration::from_secs(self.core.config.smtp.command_timeout)
    }

    /// Stops gently; see [`Gate::shut_down`].
    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.gate.shut_down(grace).await
    }

    /// Accepts connections on `listener` until the server stops.
    pub async fn run(self: Arc<Self>, listener: Listener) {
        let kind = listener.kind;
        accept_until_stopped(
            listener.socket,
            &self.gate.clone(),
            kind.name(),
            |tcp, peer| {
                let server = self.clone();
                tokio::spawn(async move { server.handle(kind, tcp, peer).await });
            },
        )
        .await;
    }

    async fn handle(self: Arc<Self>, kind: ListenerKind, tcp: TcpStream, peer: SocketAddr) {
        let _pass = match self.gate.admit(peer.ip()) {
            Ok(pass) => pass,
            Err(Refusal::Busy) => {
                let r = Reply::new(421, "4.3.2", "Too many connections, try again later");
                return refuse(tcp, kind, &r).await;
            }
            Err(Refusal::TooManyFromAddress) => {
                let r = Reply::new(421, "4.7.0", "Too many connections from your address");
                return refuse(tcp, kind, &r).await;
            }
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
    reply.encode(conn.out());
    conn.shutdown().await;
}
