//! Server configuration: a TOML file (`--config`), overridden by command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A listener address, or `none` to disable that listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(ListenAddr(None));
        }
        s.parse::<SocketAddr>()
            .map(|a| ListenAddr(Some(a)))
            .map_err(|_| format!("{s:?} is not ADDR:PORT (e.g. 0.0.0.0:2525) or \"none\""))
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn listen(addr: &str) -> ListenAddr {
    addr.parse().expect("built-in listener address")
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// SMTP for incoming mail (MX), RFC 5321; STARTTLS offered.
    pub smtp: ListenAddr,
    /// Message submission, RFC 6409; STARTTLS, then AUTH.
    pub submission: ListenAddr,
    /// Submission over implicit TLS, RFC 8314.
    pub submissions: ListenAddr,
    /// POP3 with STLS (RFC 1939, RFC 2595).
    pub pop3: ListenAddr,
    /// POP3 over implicit TLS (RFC 8314).
    pub pop3s: ListenAddr,
    /// IMAP with STARTTLS (RFC 9051 §6.2.1).
    pub imap: ListenAddr,
    /// IMAP over implicit TLS (RFC 8314).
    pub imaps: ListenAddr,
    /// HTTPS (self-service export). TLS only: Basic credentials never travel in clear text.
    pub https: ListenAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            smtp: listen("0.0.0.0:2525"),
            submission: listen("0.0.0.0:2587"),
            submissions: listen("0.0.0.0:2465"),
            pop3: listen("0.0.0.0:2110"),
            pop3s: listen("0.0.0.0:2995"),
            imap: listen("0.0.0.0:2143"),
            imaps: listen("0.0.0.0:2993"),
            https: listen("0.0.0.0:2443"),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain; a self-signed one is generated in the data directory if unset.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpLimits {
    /// Largest message accepted, in bytes (advertised with SIZE, RFC 1870).
    pub max_message_size: u64,
    /// Most recipients per message; RFC 5321 §4.5.3.1.8 asks servers to take at least 100.
    pub max_recipients: usize,
    /// Longest command line, including CRLF. RFC 5321 §4.5.3.1.4 says 512; extensions
    /// (SMTPUTF8 addresses, DSN parameters, AUTH initial responses) need more.
    pub max_command_line: usize,
    /// Simultaneous connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// Simultaneous connections in all.
    pub max_connections: usize,
    /// Seconds to wait for a command (RFC 5321 §4.5.3.2.7: at least 5 minutes).
    pub command_timeout: u64,
    /// Seconds to wait for each block of message data (RFC 5321 §4.5.3.2.5: 3 minutes).
    pub data_timeout: u64,
    /// Protocol errors tolerated before the connection is closed.
    pub max_errors: usize,
    /// Failed AUTH attempts tolerated per connection.
    pub max_auth_failures: usize,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 4096,
            max_connections_per_ip: 20,
            max_connections: 2000,
            command_timeout: 300,
            data_timeout: 180,
            max_errors: 20,
            max_auth_failures: 3,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Pop3Limits {
    pub max_connections_per_ip: usize,
    pub max_connections: usize,
    /// Seconds of inactivity before the session ends (RFC 1939 §3: at least 10 minutes).
    pub idle_timeout: u64,
    /// Longest command line, including CRLF (RFC 2449 §4 allows 255; SASL needs more).
    pub max_command_line: usize,
    pub max_errors: usize,
    pub max_auth_failures: usize,
}

impl Default for Pop3Limits {
    fn default() -> Self {
        Pop3Limits {
            max_connections_per_ip: 20,
            max_connections: 1000,
            idle_timeout: 600,
            max_command_line: 4096,
            max_errors: 20,
            max_auth_failures: 3,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImapLimits {
    pub max_connections_per_ip: usize,
    pub max_connections: usize,
    /// Sessions one account may have open at once.
    pub max_sessions_per_account: usize,
    /// Seconds before an authenticated idle session is logged out (RFC 9051 §5.4: at least 30
    /// minutes).
    pub idle_timeout: u64,
    /// Seconds before a session that has not logged in is closed (RFC 9051 §5.4 allows less).
    pub login_timeout: u64,
    /// Longest command line without its literals, including CRLF.
    pub max_command_line: usize,
    /// Largest message APPEND accepts (RFC 7889 APPENDLIMIT).
    pub max_message_size: usize,
    /// Largest literal in any other command.
    pub max_literal: usize,
    pub max_errors: usize,
    pub max_auth_failures: usize,
}

impl Default for ImapLimits {
    fn default() -> Self {
        ImapLimits {
            max_connections_per_ip: 50,
            max_connections: 5000,
            max_sessions_per_account: 50,
            idle_timeout: 1800,
            login_timeout: 60,
            max_command_line: 65536,
            max_message_size: 50 * 1024 * 1024,
            max_literal: 64 * 1024,
            max_errors: 50,
            max_auth_failures: 3,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    pub max_connections_per_ip: usize,
    pub max_connections: usize,
    /// Seconds for the TLS handshake and for each request's head, also while a kept-alive
    /// connection waits for its next request (a slow or idle client holds no place longer).
    pub header_timeout: u64,
    /// Seconds a client may take no bytes of a response before the connection is dropped, so
    /// a stalled download frees its place and stops its export.
    pub send_timeout: u64,
    /// Exports streaming at once; more are answered 503 with Retry-After.
    pub max_exports: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections_per_ip: 20,
            max_connections: 1000,
            header_timeout: 30,
            send_timeout: 60,
            max_exports: 8,
        }
    }
}

/// The outbound queue and its SMTP client.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Outbound {
    /// Sends all outbound mail through this relay (HOST:PORT) instead of looking up MX
    /// records.
    pub smarthost: Option<String>,
    /// Relays for single domains, `"example.org" = "HOST:PORT"`; they win over the smarthost.
    pub routes: BTreeMap<String, String>,
    /// Port of the MX hosts found in DNS (RFC 5321 §4.5.4: 25; others only for tests).
    pub port: u16,
    /// DNS servers to ask (IP or IP:PORT) instead of those in /etc/resolv.conf.
    pub dns_servers: Vec<String>,
    /// Seconds a message is tried before it fails (RFC 5321 §4.5.4.1: at least 4-5 days).
    pub lifetime: u64,
    /// Seconds after which the sender is told the message is delayed; 0: never.
    pub delay_notice: u64,
    /// Seconds before the first retry; each later one waits twice as long, up to `retry_max`.
    pub retry_base: u64,
    pub retry_max: u64,
    /// Connections open at once, in all and to one destination.
    pub max_connections: usize,
    pub max_connections_per_destination: usize,
    /// Seconds a process holds claimed work before another may take it over; renewed while
    /// sending.
    pub lease: u64,
    /// Longest FUTURERELEASE hold accepted, in seconds (RFC 4865).
    pub max_hold: u64,
    /// Seconds to wait for each reply of a peer (RFC 5321 §4.5.3.2 gives 2-10 minutes).
    pub timeout: u64,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            smarthost: None,
            routes: BTreeMap::new(),
            port: 25,
            dns_servers: Vec::new(),
            lifetime: 5 * 24 * 3600,
            delay_notice: 4 * 3600,
            retry_base: 60,
            retry_max: 3600,
            max_connections: 64,
            max_connections_per_destination: 8,
            lease: 30,
            max_hold: 30 * 24 * 3600,
            timeout: 300,
        }
    }
}

/// A relay's address as configured: a host name or IP address and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relay {
    pub host: String,
    pub port: u16,
}

impl FromStr for Relay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not HOST:PORT (e.g. smtp.example.net:587)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.chars().any(|c| c.is_whitespace()) {
            return Err(bad());
        }
        Ok(Relay {
            host: host.to_string(),
            port,
        })
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `sqlite:PATH` or `postgres://...`; default `sqlite:<data_dir>/trimaran.db`.
    pub store: Option<String>,
    /// Message bodies in an S3 object store (`[blobs]`); absent: in the `store` database.
    pub blobs: Option<trimaran_store::s3::S3Config>,
    /// Name used in greetings and trace fields.
    pub hostname: String,
    /// Seconds a reply may wait for an unreachable store before answering 4xx (DESIGN.md G2).
    pub store_wait: f64,
    pub listen: Listen,
    pub tls: TlsFiles,
    pub smtp: SmtpLimits,
    pub pop3: Pop3Limits,
    pub imap: ImapLimits,
    pub http: HttpLimits,
    /// Failed-login throttling, for every protocol together.
    pub login_throttle: crate::throttle::ThrottleConfig,
    pub outbound: Outbound,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("trimaran-data"),
            store: None,
            blobs: None,
            hostname: system_hostname(),
            store_wait: 60.0,
            listen: Listen::default(),
            tls: TlsFiles::default(),
            smtp: SmtpLimits::default(),
            pop3: Pop3Limits::default(),
            imap: ImapLimits::default(),
            http: HttpLimits::default(),
            login_throttle: crate::throttle::ThrottleConfig::default(),
            outbound: Outbound::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The store URL in force.
    pub fn store_url(&self) -> String {
        match &self.store {
            Some(url) => url.clone(),
            None => format!("sqlite:{}", self.data_dir.join("trimaran.db").display()),
        }
    }

    pub fn store_wait(&self) -> Duration {
        Duration::from_secs_f64(self.store_wait.max(0.0))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.hostname.is_empty() || self.hostname.chars().any(|c| c.is_whitespace()) {
            return bad("hostname must be a single non-empty word");
        }
        if !(self.store_wait.is_finite() && self.store_wait >= 0.0) {
            return bad("store_wait must be a non-negative number of seconds");
        }
        if let Some(blobs) = &self.blobs {
            blobs
                .bucket_and_prefix()
                .map_err(|e| ConfigError::Invalid(format!("blobs: {e}")))?;
        }
        if self.smtp.max_recipients == 0 || self.smtp.max_message_size == 0 {
            return bad("smtp.max_recipients and smtp.max_message_size must be positive");
        }
        if self.smtp.max_command_line < 512 {
            return bad("smtp.max_command_line must be at least 512 (RFC 5321 §4.5.3.1.4)");
        }
        let http = &self.http;
        if http.header_timeout == 0
            || http.send_timeout == 0
            || http.max_exports == 0
            || http.max_connections == 0
            || http.max_connections_per_ip == 0
        {
            return bad("http: every limit and timeout must be positive");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key go together");
        }
        let out = &self.outbound;
        for relay in out.smarthost.iter().chain(out.routes.values()) {
            relay
                .parse::<Relay>()
                .map_err(|e| ConfigError::Invalid(format!("outbound: {e}")))?;
        }
        if out.lease < 2 || out.retry_base == 0 || out.retry_max < out.retry_base {
            return bad("outbound: lease must be at least 2 s, retry_base positive, retry_max >= retry_base");
        }
        if out.max_connections == 0 || out.max_connections_per_destination == 0 || out.port == 0 {
            return bad("outbound: max_connections, max_connections_per_destination and port must be positive");
        }
        Ok(())
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_file() {
        let c = Config::parse(
            r#"
            hostname = "mx.example.org"
            store = "postgres://trimaran@db/mail"
            store_wait = 30
            [listen]
            smtp = "127.0.0.1:25"
            submission = "none"
            [smtp]
            max_recipients = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.hostname, "mx.example.org");
        assert_eq!(c.listen.smtp.0, Some("127.0.0.1:25".parse().unwrap()));
        assert_eq!(c.listen.submission.0, None);
        assert_eq!(c.listen.submissions, Listen::default().submissions);
        assert_eq!(c.smtp.max_recipients, 10);
        assert_eq!(c.store_wait(), Duration::from_secs(30));
        c.validate().unwrap();
    }

    #[test]
    fn blobs_section() {
        let c = Config::parse(
            r#"
            [blobs]
            url = "s3://mail"
            endpoint = "http://127.0.0.1:3900"
            region = "garage"
            "#,
        )
        .unwrap();
        let blobs = c.blobs.as_ref().unwrap();
        assert_eq!(blobs.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(blobs.access_key_id, None);
        c.validate().unwrap();
        assert_eq!(Config::default().blobs, None);
        let bad = Config::parse("[blobs]\nurl = \"mail\"").unwrap();
        assert!(bad.validate().is_err());
        assert!(Config::parse("[blobs]\nurl = \"s3://m\"\nbucket = \"m\"").is_err());
    }

    #[test]
    fn rejects_unknown_keys() {
        assert!(Config::parse("hostnme = \"x\"").is_err());
        assert!(Config::parse("[listen]\nsmtp = \"nowhere\"").is_err());
    }

    #[test]
    fn default_store_is_in_data_dir() {
        let c = Config {
            data_dir: "/var/lib/trimaran".into(),
            ..Config::default()
        };
        assert_eq!(c.store_url(), "sqlite:/var/lib/trimaran/trimaran.db");
    }
}

#[cfg(test)]
mod example {
    /// The example shipped in docs/ must stay a valid configuration.
    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../docs/config.example.toml");
        let config = super::Config::parse(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen.smtp.0, Some("0.0.0.0:25".parse().unwrap()));
    }
}
