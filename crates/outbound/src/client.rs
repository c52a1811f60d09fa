//! The SMTP client (RFC 5321 §4, as the sending side): greeting, EHLO, opportunistic STARTTLS
//! (RFC 3207, RFC 7435), pipelined transactions (RFC 2920), DSN parameters (RFC 3461) and
//! dot-stuffed DATA. One [`Connection`] carries any number of transactions (RFC 5321 §4.1.4).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest reply line we read (RFC 5321 §4.5.3.1.5 says 512; extensions make them longer).
const MAX_LINE: u64 = 4096;
/// Most lines in one reply: a peer cannot make us keep an endless one.
const MAX_LINES: usize = 100;
/// RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to the end of data.
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// A reply of the peer (RFC 5321 §4.2), with its enhanced status code (RFC 3463) if it gave
/// one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The RFC 3463 code at the head of the first line, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let word = first.split(' ').next()?;
        let mut parts = word.split('.');
        let class = parts.next()?;
        let ok = matches!(class, "2" | "4" | "5")
            && parts.clone().count() == 2
            && parts
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(word)
    }

    fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("connection to {0} lost: {1}")]
    Io(String, std::io::Error),
    #[error("TLS with {0} failed: {1}")]
    Tls(String, std::io::Error),
    #[error("{0} broke the protocol: {1}")]
    Protocol(String, String),
    /// A reply that ends the session or the transaction, e.g. a refused greeting or MAIL.
    #[error("{0} said: {1}")]
    Refused(String, Reply),
}

impl ClientError {
    /// Whether the same message can never succeed with this peer: only a 5xx reply says so.
    pub fn permanent_reply(&self) -> Option<&Reply> {
        match self {
            ClientError::Refused(_, r) if r.is_permanent() => Some(r),
            _ => None,
        }
    }
}

/// What the peer said it supports in its EHLO reply (RFC 5321 §4.1.1.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub binary_mime: bool,
    pub chunking: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    /// RFC 1870 SIZE: `Some(0)` when advertised without a fixed limit.
    pub size: Option<u64>,
}

impl Extensions {
    fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "8BITMIME" => ext.eight_bit_mime = true,
                "BINARYMIME" => ext.binary_mime = true,
                "CHUNKING" => ext.chunking = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                _ => {}
            }
        }
        ext
    }
}

/// The MAIL and RCPT parameters of one transaction.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<RecipientParams>,
    /// BODY=8BITMIME (RFC 6152) or BINARYMIME (RFC 3030); `None` for 7bit.
    pub body: Option<&'static str>,
    pub smtputf8: bool,
    pub ret: Option<&'static str>,
    pub envid: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct RecipientParams {
    pub address: String,
    /// `NOTIFY=` value, sent only to peers that advertise DSN.
    pub notify: Option<String>,
    /// The original recipient's address, sent as `ORCPT=rfc822;xtext`.
    pub orcpt: Option<String>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Connection {
    /// Reads are buffered; writes go out whole (every command group and the data are built
    /// first), so nothing waits in a write buffer.
    stream: BufReader<Box<dyn Io>>,
    /// Host name (or address) as the reports name it: `dns; name` (RFC 3464 §2.3.5).
    pub peer: String,
    pub extensions: Extensions,
    pub tls: bool,
    timeout: Duration,
}

/// How to reach one host and who we are.
pub struct Dial<'a> {
    pub addr: SocketAddr,
    /// The host's name (for TLS SNI and the reports) or its address as text.
    pub host: &'a str,
    pub helo: &'a str,
    /// `None`: never STARTTLS (after a failed handshake with this host, RFC 7435 §3 lets us
    /// go on in clear).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub timeout: Duration,
}

impl Connection {
    pub async fn open(dial: Dial<'_>) -> Result<Connection, ClientError> {
        let tcp = tokio::time::timeout(dial.timeout, TcpStream::connect(dial.addr))
            .await
            .map_err(|_| ClientError::Timeout(dial.addr.to_string()))?
            .map_err(|e| ClientError::Connect(dial.addr, e))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            stream: BufReader::new(Box::new(tcp) as Box<dyn Io>),
            peer: dial.host.to_string(),
            extensions: Extensions::default(),
            tls: false,
            timeout: dial.timeout,
        };
        // RFC 5321 §3.1: a greeting other than 220 means no service here.
        let greeting = conn.read_reply(dial.timeout).await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused(conn.peer, greeting));
        }
        conn.hello(dial.helo).await?;
        if let (true, Some(config)) = (conn.extensions.starttls, dial.tls) {
            conn.command("STARTTLS").await?;
            let reply = conn.read_reply(conn.timeout).await?;
            if reply.code == 220 {
                conn = conn.start_tls(config, dial.host).await?;
                // RFC 3207 §4.2: forget what was learnt before TLS and greet again.
                conn.hello(dial.helo).await?;
            }
        }
        Ok(conn)
    }

    async fn start_tls(
        self,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<Connection, ClientError> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| ClientError::Protocol(host.to_string(), e.to_string()))?;
        // Nothing may be buffered across the handshake (RFC 3207 §4.2; CVE-2011-0411).
        if !self.stream.buffer().is_empty() {
            return Err(ClientError::Protocol(
                self.peer,
                "sent data after its STARTTLS reply".into(),
            ));
        }
        let inner = self.stream.into_inner();
        let tls = tokio::time::timeout(
            self.timeout,
            TlsConnector::from(config).connect(name, inner),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.peer.clone()))?
        .map_err(|e| ClientError::Tls(self.peer.clone(), e))?;
        Ok(Connection {
            stream: BufReader::new(Box::new(tls) as Box<dyn Io>),
            peer: self.peer,
            extensions: Extensions::default(),
            tls: true,
            timeout: self.timeout,
        })
    }

    /// EHLO, or HELO where the peer does not know EHLO (RFC 5321 §4.1.4, §3.2).
    async fn hello(&mut self, helo: &str) -> Result<(), ClientError> {
        self.command(&format!("EHLO {helo}")).await?;
        let reply = self.read_reply(self.timeout).await?;
        if reply.code == 250 {
            self.extensions = Extensions::parse(&reply);
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(ClientError::Refused(self.peer.clone(), reply));
        }
        self.command(&format!("HELO {helo}")).await?;
        let reply = self.read_reply(self.timeout).await?;
        if reply.code != 250 {
            return Err(ClientError::Refused(self.peer.clone(), reply));
        }
        self.extensions = Extensions::default();
        Ok(())
    }

    /// One transaction. Returns the reply for each recipient in order: the RCPT reply where it
    /// was refused, otherwise the reply to the end of data. An error means the whole
    /// transaction failed (every recipient shares that outcome) and the connection is spent.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Vec<Reply>, ClientError> {
        let ext = self.extensions.clone();
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender);
        if let Some(max) = ext.size {
            // RFC 1870 §6: a message over the peer's fixed limit is not even offered.
            if max > 0 && message.len() as u64 > max {
                return Err(ClientError::Refused(
                    self.peer.clone(),
                    Reply {
                        code: 552,
                        lines: vec![format!(
                            "5.3.4 Message of {} bytes exceeds the peer's limit of {max}",
                            message.len()
                        )],
                    },
                ));
            }
            mail.push_str(&format!(" SIZE={}", message.len()));
        }
        if let Some(body) = envelope.body {
            mail.push_str(&format!(" BODY={body}"));
        }
        if envelope.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        if ext.dsn {
            if let Some(ret) = envelope.ret {
                mail.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = &envelope.envid {
                mail.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        let rcpts: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| {
                let mut line = format!("RCPT TO:<{}>", r.address);
                if ext.dsn {
                    if let Some(n) = &r.notify {
                        line.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some(o) = &r.orcpt {
                        line.push_str(&format!(" ORCPT=rfc822;{}", xtext(o)));
                    }
                }
                line
            })
            .collect();
        let chunked = envelope.body == Some("BINARYMIME");

        let (mail_reply, rcpt_replies, data_reply) = if ext.pipelining {
            // RFC 2920 §3.1: MAIL, the RCPTs and DATA go in one group; DATA ends it.
            let mut group = String::new();
            group.push_str(&mail);
            group.push_str("\r\n");
            for r in &rcpts {
                group.push_str(r);
                group.push_str("\r\n");
            }
            if !chunked {
                group.push_str("DATA\r\n");
            }
            self.write(group.as_bytes()).await?;
            let mail_reply = self.read_reply(self.timeout).await?;
            let mut rcpt_replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                rcpt_replies.push(self.read_reply(self.timeout).await?);
            }
            let data_reply = if chunked {
                None
            } else {
                Some(self.read_reply(self.timeout).await?)
            };
            (mail_reply, rcpt_replies, data_reply)
        } else {
            self.command(&mail).await?;
            let mail_reply = self.read_reply(self.timeout).await?;
            let mut rcpt_replies = Vec::with_capacity(rcpts.len());
            if mail_reply.is_positive() {
                for r in &rcpts {
                    self.command(r).await?;
                    rcpt_replies.push(self.read_reply(self.timeout).await?);
                }
            }
            (mail_reply, rcpt_replies, None)
        };
        if !mail_reply.is_positive() {
            self.abandon(data_reply.as_ref()).await?;
            return Err(ClientError::Refused(self.peer.clone(), mail_reply));
        }
        if !rcpt_replies.iter().any(Reply::is_positive) {
            self.abandon(data_reply.as_ref()).await?;
            return Ok(rcpt_replies);
        }
        let end = if chunked {
            // RFC 3030 §2: one BDAT LAST chunk carries the whole message.
            self.write(format!("BDAT {} LAST\r\n", message.len()).as_bytes())
                .await?;
            self.write(message).await?;
            self.read_reply(DATA_END_TIMEOUT.max(self.timeout)).await?
        } else {
            let data_reply = match data_reply {
                Some(r) => r,
                None => {
                    self.command("DATA").await?;
                    self.read_reply(self.timeout).await?
                }
            };
            if data_reply.code != 354 {
                return Err(ClientError::Refused(self.peer.clone(), data_reply));
            }
            self.write(&dot_stuff(message)).await?;
            self.read_reply(DATA_END_TIMEOUT.max(self.timeout)).await?
        };
        Ok(rcpt_replies
            .into_iter()
            .map(|r| if r.is_positive() { end.clone() } else { r })
            .collect())
    }

    /// After a refused MAIL or every RCPT refused: a pipelined DATA may have been accepted
    /// (RFC 2920 §3.1 says it must not be, but a peer can), in which case the empty message
    /// is ended with a lone dot and forgotten by RSET; otherwise RSET alone.
    async fn abandon(&mut self, data_reply: Option<&Reply>) -> Result<(), ClientError> {
        if data_reply.is_some_and(|r| r.code == 354) {
            self.write(b".\r\n").await?;
            let _ = self.read_reply(self.timeout).await?;
        }
        self.reset().await
    }

    /// RSET (RFC 5321 §4.1.1.5), so the connection can carry another transaction.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        self.command("RSET").await?;
        let reply = self.read_reply(self.timeout).await?;
        if reply.code != 250 {
            return Err(ClientError::Refused(self.peer.clone(), reply));
        }
        Ok(())
    }

    /// QUIT (RFC 5321 §4.1.1.10), waiting briefly for the answer.
    pub async fn quit(mut self) {
        if self.command("QUIT").await.is_ok() {
            let _ = self.read_reply(Duration::from_secs(5)).await;
        }
        let _ = self.stream.get_mut().shutdown().await;
    }

    async fn command(&mut self, line: &str) -> Result<(), ClientError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let peer = &self.peer;
        let io = async {
            let inner = self.stream.get_mut();
            inner.write_all(bytes).await?;
            inner.flush().await
        };
        tokio::time::timeout(self.timeout.max(DATA_END_TIMEOUT), io)
            .await
            .map_err(|_| ClientError::Timeout(peer.clone()))?
            .map_err(|e| ClientError::Io(peer.clone(), e))
    }

    /// One reply, all its lines (RFC 5321 §4.2.1: `code-text` until `code text`).
    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, ClientError> {
        let peer = self.peer.clone();
        let read = async {
            let mut code = 0u16;
            let mut lines = Vec::new();
            loop {
                let mut raw = Vec::new();
                let n = (&mut self.stream)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut raw)
                    .await
                    .map_err(|e| ClientError::Io(peer.clone(), e))?;
                if n == 0 {
                    return Err(ClientError::Io(
                        peer.clone(),
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                if raw.last() != Some(&b'\n') {
                    return Err(ClientError::Protocol(
                        peer.clone(),
                        "reply line too long".into(),
                    ));
                }
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\r', '\n']);
                let bytes = line.as_bytes();
                let this: u16 = match line.get(..3).map(str::parse) {
                    Some(Ok(c)) if (200..600).contains(&c) => c,
                    _ => {
                        return Err(ClientError::Protocol(
                            peer.clone(),
                            format!("not a reply: {:?}", truncate(line)),
                        ))
                    }
                };
                if code != 0 && this != code {
                    return Err(ClientError::Protocol(
                        peer.clone(),
                        "reply lines with different codes".into(),
                    ));
                }
                code = this;
                lines.push(line.get(4..).unwrap_or("").to_string());
                match bytes.get(3) {
                    Some(b'-') if lines.len() < MAX_LINES => continue,
                    Some(b'-') => {
                        return Err(ClientError::Protocol(peer.clone(), "reply too long".into()))
                    }
                    _ => return Ok(Reply { code, lines }),
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ClientError::Timeout(self.peer.clone()))?
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// RFC 5321 §4.5.2: a line starting with "." gets another; the data ends with CRLF.CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// RFC 3461 §4: xtext, with "+", "=", controls, space and non-ASCII as "+XX".
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Opportunistic TLS (RFC 7435): encrypt whenever the peer offers it, without insisting on a
/// certificate we can verify — MX hosts' certificates rarely name the MX, and refusing would
/// only send the mail in clear instead. The handshake's own signatures are still checked.
pub fn opportunistic_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_the_data() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
    }

    #[test]
    fn xtext_encodes_plus_equals_and_non_ascii() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("é"), "+C3+A9");
    }

    #[test]
    fn enhanced_codes_are_recognised_only_when_well_formed() {
        let r = |s: &str| Reply {
            code: 550,
            lines: vec![s.to_string()],
        };
        assert_eq!(r("5.1.1 no such user").enhanced(), Some("5.1.1"));
        assert_eq!(r("no such user").enhanced(), None);
        assert_eq!(r("5.1 short").enhanced(), None);
    }
}
