//! Accepting HTTPS connections: the same gate (connections per address and in all), TLS
//! acceptor and shutdown signal as the IMAPS listener, then hyper's HTTP/1.1 server with
//! bounded request heads and timeouts, and the router of [`crate::routes`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use trimaran_core::net::{accept_tls, accept_until_stopped, Gate};
use trimaran_core::Core;

/// Largest request head hyper buffers; a longer one is answered 431 (RFC 6585 §5) and the
/// connection closed. Room for a future web interface's cookies, not for abuse.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

pub struct HttpListener {
    pub socket: TcpListener,
}

impl HttpListener {
    pub async fn bind(addr: SocketAddr) -> io::Result<HttpListener> {
        Ok(HttpListener {
            socket: TcpListener::bind(addr).await?,
        })
    }
}

/// The client's address, put into every request's extensions for the login throttle.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

pub struct HttpServer {
    pub core: Arc<Core>,
    tls: Arc<TlsAcceptor>,
    gate: Arc<Gate>,
    /// Places for exports streaming at once: each holds a blocking thread and a message body.
    pub(crate) exports: Arc<Semaphore>,
}

impl HttpServer {
    /// TLS is not optional: this listener exists only over TLS.
    pub fn new(core: Arc<Core>, tls: Arc<rustls::ServerConfig>) -> Arc<HttpServer> {
        let limits = &core.config.http;
        let gate = Gate::new(limits.max_connections_per_ip, limits.max_connections);
        let exports = Arc::new(Semaphore::new(limits.max_exports));
        Arc::new(HttpServer {
            core,
            tls: Arc::new(TlsAcceptor::from(tls)),
            gate,
            exports,
        })
    }

    /// Asks open connections to finish their response and close; returns how many were still
    /// open after `grace`.
    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.gate.shut_down(grace).await
    }

    pub async fn run(self: Arc<Self>, listener: HttpListener) {
        let router = crate::routes::router(self.clone());
        accept_until_stopped(listener.socket, &self.gate.clone(), "https", |tcp, peer| {
            let server = self.clone();
            let router = router.clone();
            tokio::spawn(async move { server.handle(router, tcp, peer).await });
        })
        .await;
    }

    async fn handle(self: Arc<Self>, router: Router, tcp: TcpStream, peer: SocketAddr) {
        // Refused before TLS: answering 503 would cost a handshake, the very load refused.
        let Ok(_pass) = self.gate.admit(peer.ip()) else {
            return;
        };
        let limits = &self.core.config.http;
        let header_timeout = Duration::from_secs(limits.header_timeout);
        let stream = match accept_tls(tcp, self.tls.clone(), header_timeout).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTPS TLS handshake failed");
                return;
            }
        };
        let io = TokioIo::new(StallLimit::new(
            stream,
            Duration::from_secs(limits.send_timeout),
        ));
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            // Router's poll_ready is always ready; a clone per request is its intended use.
            router.clone().call(request)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        // With a timer, hyper also applies header_read_timeout while a kept-alive connection
        // waits for its next request, which makes it our idle timeout.
        http.timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(MAX_REQUEST_HEAD);
        let conn = http.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = self.gate.stopping();
        let finished = tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = stopping.wait_for(|s| *s) => None,
        };
        let result = match finished {
            Some(r) => r,
            None => {
                // The response under way (a download) may finish within the grace period.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
        }
    }
}

/// Fails writes (and flushes) that make no progress for `limit`. hyper waits for a client's
/// window without end, and a client that stops reading mid-download would otherwise hold its
/// connection, its export's blocking thread and place for ever; failing the write ends the
/// connection, which drops the response body and so stops the export's writer.
struct StallLimit<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallLimit<S> {
    fn new(inner: S, limit: Duration) -> StallLimit<S> {
        StallLimit {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Called when the inner write is pending: starts the clock, or fails once it ran out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no data within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimit<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimit<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: writes fill the pipe, then fail after the limit instead of
    /// waiting for ever.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_limit() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut io = StallLimit::new(ours, Duration::from_secs(60));
        let chunk = [0u8; 512];
        let started = tokio::time::Instant::now();
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(60));
    }

    /// Progress restarts the clock: a slow reader that keeps taking bytes is never cut off.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_cut_off() {
        use tokio::io::AsyncReadExt;
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let mut total = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(50)).await;
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let mut io = StallLimit::new(ours, Duration::from_secs(60));
        io.write_all(&[1u8; 4096]).await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 4096);
    }
}
