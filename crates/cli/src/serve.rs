//! `trimaran serve`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use trimaran_core::config::{Config, ListenAddr};
use trimaran_core::store::s3::S3Config;
use trimaran_core::store::{Store, StoreUrl};
use trimaran_core::{tls, Core};
use trimaran_http::{HttpListener, HttpServer};
use trimaran_imap::{ImapKind, ImapListener, ImapServer};
use trimaran_pop3::listener::Pop3Kind;
use trimaran_pop3::{Pop3Listener, Pop3Server};
use trimaran_smtp::{Listener, ListenerKind, SmtpServer};

#[derive(Args)]
pub struct ServeArgs {
    /// SMTP (MX) listener, ADDR:PORT or "none" [default: 0.0.0.0:2525]
    #[arg(long, value_name = "ADDR")]
    smtp: Option<ListenAddr>,
    /// Submission listener with STARTTLS (RFC 6409), or "none" [default: 0.0.0.0:2587]
    #[arg(long, value_name = "ADDR")]
    submission: Option<ListenAddr>,
    /// Submission listener with implicit TLS (RFC 8314), or "none" [default: 0.0.0.0:2465]
    #[arg(long, value_name = "ADDR")]
    submissions: Option<ListenAddr>,
    /// POP3 listener with STLS, or "none" [default: 0.0.0.0:2110]
    #[arg(long, value_name = "ADDR")]
    pop3: Option<ListenAddr>,
    /// POP3 listener with implicit TLS, or "none" [default: 0.0.0.0:2995]
    #[arg(long, value_name = "ADDR")]
    pop3s: Option<ListenAddr>,
    /// IMAP listener with STARTTLS, or "none" [default: 0.0.0.0:2143]
    #[arg(long, value_name = "ADDR")]
    imap: Option<ListenAddr>,
    /// IMAP listener with implicit TLS, or "none" [default: 0.0.0.0:2993]
    #[arg(long, value_name = "ADDR")]
    imaps: Option<ListenAddr>,
    /// HTTPS listener (self-service export; TLS only, never plain HTTP), or "none"
    /// [default: 0.0.0.0:2443]
    #[arg(long, value_name = "ADDR")]
    https: Option<ListenAddr>,
    /// Host name used in greetings and Received: fields [default: the system's host name]
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// PEM certificate chain (with --tls-key); default: a self-signed one in the data directory
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest message accepted, in bytes [default: 52428800]
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<u64>,
    /// Most recipients per message [default: 100]
    #[arg(long, value_name = "N")]
    max_recipients: Option<usize>,
    /// Seconds a reply may wait for an unreachable store before answering 4xx [default: 60]
    #[arg(long, value_name = "SECONDS")]
    store_wait: Option<f64>,
    /// Send all outbound mail through this relay instead of to the recipients' MX hosts
    #[arg(long, value_name = "HOST:PORT")]
    smarthost: Option<String>,
}

impl ServeArgs {
    fn apply(self, config: &mut Config) {
        if let Some(a) = self.smtp {
            config.listen.smtp = a;
        }
        if let Some(a) = self.submission {
            config.listen.submission = a;
        }
        if let Some(a) = self.submissions {
            config.listen.submissions = a;
        }
        if let Some(a) = self.pop3 {
            config.listen.pop3 = a;
        }
        if let Some(a) = self.pop3s {
            config.listen.pop3s = a;
        }
        if let Some(a) = self.imap {
            config.listen.imap = a;
        }
        if let Some(a) = self.imaps {
            config.listen.imaps = a;
        }
        if let Some(a) = self.https {
            config.listen.https = a;
        }
        if let Some(h) = self.hostname {
            config.hostname = h;
        }
        if self.tls_cert.is_some() {
            config.tls.cert = self.tls_cert;
            config.tls.key = self.tls_key;
        }
        if let Some(n) = self.max_message_size {
            config.smtp.max_message_size = n;
        }
        if let Some(n) = self.max_recipients {
            config.smtp.max_recipients = n;
        }
        if let Some(s) = self.store_wait {
            config.store_wait = s;
        }
        if let Some(relay) = self.smarthost {
            config.outbound.smarthost = Some(relay);
        }
    }
}

pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    args.apply(&mut config);
    config.validate()?;
    init_logging();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let url: StoreUrl = config.store_url().parse()?;
    let store = open_store(&url, config.blobs.as_ref()).await?;
    match &config.blobs {
        Some(blobs) => tracing::info!(store = %url, blobs = %blobs.url, "store open"),
        None => tracing::info!(store = %url, "store open"),
    }
    tokio::spawn(maintenance(store.clone()));
    tokio::spawn(trimaran_core::search_index::index_backlog(store.clone()));
    let tls = tls::server_config(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.data_dir,
        &config.hostname,
    )?;
    let listeners = [
        (ListenerKind::Mx, config.listen.smtp),
        (ListenerKind::Submission, config.listen.submission),
        (ListenerKind::Submissions, config.listen.submissions),
    ];
    let pop3_listeners = [
        (Pop3Kind::Plain, config.listen.pop3),
        (Pop3Kind::Tls, config.listen.pop3s),
    ];
    let imap_listeners = [
        (ImapKind::Plain, config.listen.imap),
        (ImapKind::Tls, config.listen.imaps),
    ];
    let https_listener = config.listen.https;
    let core = Core::new(store, Arc::new(config));
    let smtp = SmtpServer::new(core.clone(), Some(tls.clone()));
    let pop3 = Pop3Server::new(core.clone(), Some(tls.clone()));
    let imap = ImapServer::new(core.clone(), Some(tls.clone()));
    let http = HttpServer::new(core.clone(), tls);
    let mut tasks = Vec::new();
    for (kind, addr) in listeners {
        let Some(addr) = addr.0 else { continue };
        let listener = Listener::bind(kind, addr)
            .await
            .with_context(|| format!("listening for {} on {addr}", kind.name()))?;
        tracing::info!(listener = kind.name(), %addr, "listening");
        tasks.push(tokio::spawn(smtp.clone().run(listener)));
    }
    for (kind, addr) in pop3_listeners {
        let Some(addr) = addr.0 else { continue };
        let listener = Pop3Listener::bind(kind, addr)
            .await
            .with_context(|| format!("listening for POP3 ({kind:?}) on {addr}"))?;
        tracing::info!(listener = if kind == Pop3Kind::Tls { "pop3s" } else { "pop3" }, %addr, "listening");
        tasks.push(tokio::spawn(pop3.clone().run(listener)));
    }
    for (kind, addr) in imap_listeners {
        let Some(addr) = addr.0 else { continue };
        let listener = ImapListener::bind(kind, addr)
            .await
            .with_context(|| format!("listening for IMAP ({kind:?}) on {addr}"))?;
        tracing::info!(listener = if kind == ImapKind::Tls { "imaps" } else { "imap" }, %addr, "listening");
        tasks.push(tokio::spawn(imap.clone().run(listener)));
    }
    if let Some(addr) = https_listener.0 {
        let listener = HttpListener::bind(addr)
            .await
            .with_context(|| format!("listening for HTTPS on {addr}"))?;
        tracing::info!(listener = "https", %addr, "listening");
        tasks.push(tokio::spawn(http.clone().run(listener)));
    }
    if tasks.is_empty() {
        anyhow::bail!("every listener is disabled; nothing to serve");
    }
    let outbound = trimaran_outbound::Outbound::start(core).map_err(anyhow::Error::msg)?;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; open transactions may finish");
    let (smtp_left, pop3_left, imap_left, http_left, sending) = tokio::join!(
        smtp.shut_down(SHUTDOWN_GRACE),
        pop3.shut_down(SHUTDOWN_GRACE),
        imap.shut_down(SHUTDOWN_GRACE),
        http.shut_down(SHUTDOWN_GRACE),
        outbound.stop(SHUTDOWN_GRACE)
    );
    if sending > 0 {
        tracing::warn!(
            recipients = sending,
            "outbound sends still under way after the grace period; their leases will lapse"
        );
    }
    let left = smtp_left + pop3_left + imap_left + http_left;
    if left > 0 {
        // Their clients were not answered, so they still hold the mail and will retry.
        tracing::warn!(
            sessions = left,
            "closing sessions still busy after the grace period"
        );
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// How long transactions in flight may take to finish when the server is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Opens the store, waiting as long as it takes while it is unreachable: a node that restarts
/// during a database failover must come up when the database does, without a human.
async fn open_store(url: &StoreUrl, blobs: Option<&S3Config>) -> anyhow::Result<Arc<Store>> {
    let mut pause = Duration::from_millis(200);
    loop {
        match Store::open_with_blobs(url, blobs).await {
            Ok(store) => return Ok(store),
            Err(e) if e.is_retryable() => {
                tracing::warn!(store = %url, error = %e, "store unreachable; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).with_context(|| format!("opening store {url}")),
        }
    }
}

/// Periodic housekeeping.
async fn maintenance(store: Arc<Store>) {
    const DELIVERY_ID_LIFETIME: i64 = 7 * 24 * 3600;
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = trimaran_core::store::now_unix() - DELIVERY_ID_LIFETIME;
        match store.meta().prune_delivery_ids(before).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "pruned old delivery ids"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning delivery ids failed"),
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
