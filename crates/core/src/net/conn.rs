//! A client connection, plain or TLS, with bounded line reading, buffered replies and timeouts:
//! what every line-based protocol front end (SMTP, POP3, IMAP) needs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::line::{Framed, InBuf};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why reading from the client stopped.
#[derive(Debug)]
pub enum ReadError {
    Closed,
    TimedOut,
    Io(io::Error),
}

/// What the session gets back from asking for a command line.
pub enum LineEvent {
    Line(Vec<u8>),
    TooLong,
}

pub struct Conn {
    stream: Option<Stream>,
    /// Compression inside TLS, once negotiated (IMAP COMPRESS=DEFLATE, RFC 4978).
    deflate: Option<Box<Deflate>>,
    inbuf: InBuf,
    out: Vec<u8>,
    pub peer: SocketAddr,
    pub tls: bool,
    /// Bound on sending replies and on the TLS handshake: a client that stops reading must not
    /// hold its session (and its memory) forever.
    io_timeout: Duration,
}

const READ_CHUNK: usize = 16 * 1024;

/// Most inflated bytes taken into the input buffer per read: a small compressed input may
/// expand a thousandfold, and the client's bytes must stay bounded by what we parse.
const INFLATE_CHUNK: usize = 64 * 1024;

/// Received compressed bytes not inflated yet; more than this without output is abuse.
const MAX_COMPRESSED_BACKLOG: usize = 1024 * 1024;

/// Raw DEFLATE streams in both directions (RFC 4978 §4: RFC 1951, no zlib header).
struct Deflate {
    out: Compress,
    inp: Decompress,
    received: Vec<u8>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Conn {
    pub fn new(stream: Stream, peer: SocketAddr, io_timeout: Duration) -> Conn {
        let tls = matches!(stream, Stream::Tls(_));
        Conn {
            stream: Some(stream),
            deflate: None,
            inbuf: InBuf::default(),
            out: Vec::new(),
            peer,
            tls,
            io_timeout,
        }
    }

    fn stream(&mut self) -> io::Result<&mut Stream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection gone"))
    }

    /// Queues bytes for the client; they are sent at the next flush, which happens at the latest
    /// before waiting for more input (so pipelined commands get their replies together, as
    /// RFC 2920 and RFC 2449 allow, and nobody waits on a reply we hold back).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Buffer for building replies in place.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Input received and not consumed yet.
    pub fn pending(&self) -> &[u8] {
        self.inbuf.pending()
    }

    pub fn consume(&mut self, n: usize) {
        self.inbuf.consume(n)
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.out);
        if let Some(d) = self.deflate.as_mut() {
            out = d.compress(&out)?;
        }
        let limit = self.io_timeout;
        let stream = self.stream()?;
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        tokio::time::timeout(limit, write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client is not reading replies"))?
    }

    /// Reads more input (after sending any queued replies).
    pub async fn fill(&mut self, timeout: Duration) -> Result<(), ReadError> {
        // Never block on the client while replies are unsent (RFC 2920 §3.1).
        self.flush().await.map_err(ReadError::Io)?;
        loop {
            if let Some(d) = self.deflate.as_mut() {
                let plain = d.inflate().map_err(ReadError::Io)?;
                if !plain.is_empty() {
                    self.inbuf.append(&plain);
                    return Ok(());
                }
                if d.received.len() > MAX_COMPRESSED_BACKLOG {
                    return Err(ReadError::Io(invalid("compressed input makes no progress")));
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let stream = self.stream().map_err(ReadError::Io)?;
            let n = match tokio::time::timeout(timeout, stream.read(&mut chunk)).await {
                Err(_) => return Err(ReadError::TimedOut),
                Ok(Err(e)) => return Err(ReadError::Io(e)),
                Ok(Ok(0)) => return Err(ReadError::Closed),
                Ok(Ok(n)) => n,
            };
            match self.deflate.as_mut() {
                Some(d) => d.received.extend_from_slice(&chunk[..n]),
                None => {
                    self.inbuf.append(&chunk[..n]);
                    return Ok(());
                }
            }
        }
    }

    /// Compresses both directions from here on (RFC 4978 §3: right after the tagged OK,
    /// which must already be queued). Input already received is compressed data.
    pub async fn start_deflate(&mut self) -> io::Result<()> {
        self.flush().await?;
        let received = self.inbuf.pending().to_vec();
        self.inbuf.clear();
        self.deflate = Some(Box::new(Deflate {
            out: Compress::new(Compression::fast(), false),
            inp: Decompress::new(false),
            received,
        }));
        Ok(())
    }

    pub fn compressing(&self) -> bool {
        self.deflate.is_some()
    }

    pub async fn read_line(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<LineEvent, ReadError> {
        loop {
            match self.inbuf.take_line(max) {
                Framed::Line(line) => return Ok(LineEvent::Line(line)),
                Framed::TooLong => return Ok(LineEvent::TooLong),
                Framed::Incomplete => self.fill(timeout).await?,
            }
        }
    }

    /// Upgrades to TLS (SMTP STARTTLS, RFC 3207; POP3 STLS, RFC 2595; IMAP STARTTLS). Anything
    /// the client pipelined after the command is discarded: it was sent in clear text and must
    /// not be executed inside the TLS session (RFC 3207 §4.2, RFC 2595 §3.1).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        self.flush().await?;
        self.inbuf.clear();
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio::time::timeout(self.io_timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Some(Stream::Tls(Box::new(tls)));
        self.tls = true;
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        if let Ok(stream) = self.stream() {
            let _ = stream.shutdown().await;
        }
    }
}

impl Deflate {
    /// One batch of replies, ended with a sync flush so the client can act on it at once.
    fn compress(&mut self, plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut zipped = Vec::with_capacity(plain.len() / 2 + 64);
        let mut used = 0;
        loop {
            let before = self.out.total_in();
            self.out
                .compress_vec(&plain[used..], &mut zipped, FlushCompress::Sync)
                .map_err(invalid)?;
            used += (self.out.total_in() - before) as usize;
            // Done when all input is in and the compressor left room unused.
            if used == plain.len() && zipped.len() < zipped.capacity() {
                return Ok(zipped);
            }
            zipped.reserve(zipped.capacity().max(1024));
        }
    }

    /// Inflates at most INFLATE_CHUNK bytes of what was received.
    fn inflate(&mut self) -> io::Result<Vec<u8>> {
        let mut plain = Vec::with_capacity(INFLATE_CHUNK);
        if self.received.is_empty() {
            return Ok(plain);
        }
        let before = self.inp.total_in();
        let status = self
            .inp
            .decompress_vec(&self.received, &mut plain, FlushDecompress::None)
            .map_err(invalid)?;
        let used = (self.inp.total_in() - before) as usize;
        self.received.drain(..used);
        if status == Status::StreamEnd && plain.is_empty() {
            return Err(invalid("the client ended its compressed stream"));
        }
        Ok(plain)
    }
}

/// Accepts TLS on a fresh connection (implicit TLS, RFC 8314), bounded in time.
pub async fn accept_tls(
    tcp: TcpStream,
    acceptor: Arc<TlsAcceptor>,
    timeout: Duration,
) -> io::Result<Stream> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}
