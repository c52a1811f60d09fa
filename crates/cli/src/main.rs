//! `trimaran`: runs the mail server and administers its store.

mod admin;
mod backup;
mod cluster;
mod export;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trimaran_core::config::Config;

#[derive(Parser)]
#[command(
    name = "trimaran",
    version,
    about = "A mail server that keeps working when a data center is lost"
)]
struct Cli {
    /// Directory for the embedded database and the generated TLS certificate.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Store URL: sqlite:PATH or postgres://user@host/db [default: sqlite:DATA_DIR/trimaran.db]
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    /// TOML configuration file; flags override its settings.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mail server.
    Serve(Box<serve::ServeArgs>),
    /// Manage the domains this server receives mail for.
    #[command(subcommand)]
    Domain(admin::DomainCommand),
    /// Manage accounts (mailbox owners).
    #[command(subcommand)]
    Account(admin::AccountCommand),
    /// Manage aliases: addresses that deliver to other addresses.
    #[command(subcommand)]
    Alias(admin::AliasCommand),
    /// Inspect stored mail.
    #[command(subcommand)]
    Mail(admin::MailCommand),
    /// Inspect the outbound queue.
    #[command(subcommand)]
    Queue(admin::QueueCommand),
    /// Manage DKIM signing keys (RFC 6376).
    #[command(subcommand)]
    Dkim(admin::DkimCommand),
    /// Back up, verify and restore the store (see `trimaran backup create --help`).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Re-hash every stored body, check the metadata's invariants, repair and collect
    /// garbage.
    Scrub(backup::ScrubArgs),
    /// Inspect a replicated (three-site) deployment.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Export an account's mail as mbox, Maildir or .eml files in a zip.
    Export(export::ExportArgs),
    /// Import mail from mbox, Maildir or a zip of .eml files into an account.
    Import(export::ImportArgs),
}

impl Cli {
    /// The configuration file (or defaults) with the global flags applied.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(store) = &self.store {
            config.store = Some(store.clone());
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let config = cli.config()?;
        match cli.command {
            Command::Serve(args) => serve::run(config, *args).await,
            Command::Domain(c) => admin::domain(config, c).await,
            Command::Account(c) => admin::account(config, c).await,
            Command::Alias(c) => admin::alias(config, c).await,
            Command::Mail(c) => admin::mail(config, c).await,
            Command::Queue(c) => admin::queue(config, c).await,
            Command::Dkim(c) => admin::dkim(config, c).await,
            Command::Backup(c) => backup::run(config, c).await,
            Command::Scrub(a) => backup::scrub(config, a).await,
            Command::Cluster(c) => cluster::run(config, c).await,
            Command::Export(a) => export::export(config, a).await,
            Command::Import(a) => export::import(config, a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the chain of causes, joined.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
