//! `trimaran serve`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use trimaran_core::config::{Config, ListenAddr};
use trimaran_core::store::{Store, StoreUrl};
use trimaran_core::{tls, Core};
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
    }
}

pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    args.apply(&mut config);
    config.validate()?;
    init_logging();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let url: StoreUrl = config.store_url().parse()?;
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening store {url}"))?;
    tracing::info!(store = %url, "store open");
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
    let core = Core::new(store, Arc::new(config));
    let smtp = SmtpServer::new(core, Some(tls));
    let mut tasks = Vec::new();
    for (kind, addr) in listeners {
        let Some(addr) = addr.0 else { continue };
        let listener = Listener::bind(kind, addr)
            .await
            .with_context(|| format!("listening for {} on {addr}", kind.name()))?;
        tracing::info!(listener = kind.name(), %addr, "listening");
        tasks.push(tokio::spawn(smtp.clone().run(listener)));
    }
    if tasks.is_empty() {
        anyhow::bail!("every listener is disabled; nothing to serve");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    for task in tasks {
        task.abort();
    }
    Ok(())
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
