//! Administration subcommands. They open the same store as the server and work while it runs.

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Subcommand;
use trimaran_core::address;
use trimaran_core::auth::hash_password;
use trimaran_core::config::Config;
use trimaran_core::dkim;
use trimaran_core::store::{AccountId, DkimKey as StoredDkimKey, Store, StoreUrl, INBOX};

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Receive mail for DOMAIN.
    Add { domain: String },
    /// List local domains.
    List,
    /// Stop receiving mail for DOMAIN (it must have no accounts or aliases left).
    Remove { domain: String },
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account; the password is read from stdin, or prompted for on a terminal.
    Add { address: String },
    /// List accounts.
    List,
    /// Delete an account and all its mail.
    Remove { address: String },
    /// Change an account's password (read like `add`).
    Passwd { address: String },
    /// Show an account's quota and usage, or set it (IMAP QUOTA, RFC 9208). Over its quota an
    /// account refuses new mail with 452 4.2.2 and APPEND/COPY with NO [OVERQUOTA].
    Quota {
        address: String,
        /// Storage limit: bytes, or with a K, M or G suffix (powers of 1024); "none" removes it
        #[arg(long, value_name = "SIZE")]
        storage: Option<String>,
        /// Message count limit; "none" removes it
        #[arg(long, value_name = "N")]
        messages: Option<String>,
    },
}

/// "500M" to bytes; None for "none".
fn size_arg(text: &str) -> anyhow::Result<Option<u64>> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => bail!("bad size {text:?}: use a number with an optional K, M, G or T suffix"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("bad size {text:?}"))?;
    n.checked_mul(factor)
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("size {text:?} is too large"))
}

fn limit_text(limit: Option<u64>) -> String {
    limit.map_or("unlimited".into(), |l| l.to_string())
}

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Deliver mail for ALIAS to TARGET (local or remote); repeat for several targets.
    Add { alias: String, target: String },
    /// List aliases as "ALIAS -> TARGET".
    List,
    /// Remove one target of ALIAS, or all of them.
    Remove {
        alias: String,
        target: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum MailCommand {
    /// One line per message: mailbox, UID, size, BLAKE3 of the stored bytes, subject (tab-separated).
    List {
        #[arg(long)]
        account: String,
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// Write a message's exact stored bytes to stdout, verified against their hash.
    Show {
        #[arg(long)]
        account: String,
        #[arg(long, default_value = INBOX)]
        mailbox: String,
        #[arg(long)]
        uid: u32,
    },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// One line per recipient, tab-separated: queue id, status, sender, recipient, attempts,
    /// next attempt (UTC), last error.
    List,
    /// A queued message: its envelope, each recipient's state, and its header fields.
    Show { id: i64 },
    /// Try a queued message's pending recipients now (also releases a held message); with
    /// --all, every queued message.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        #[arg(long)]
        all: bool,
    },
    /// Remove a queued message, e.g. to cancel a scheduled one (RFC 4865) before its time.
    /// Recipients being sent at this moment may still be delivered.
    Delete { id: i64 },
}

#[derive(Subcommand)]
pub enum DkimCommand {
    /// Make a signing key for DOMAIN (a local domain), keep it in the store, and print the DNS
    /// TXT record to publish at SELECTOR._domainkey.DOMAIN.
    Generate {
        domain: String,
        /// rsa: rsa-sha256 with 2048 bits, which every verifier knows; ed25519: ed25519-sha256
        /// (RFC 8463), short, not yet verified everywhere.
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
        /// The key's name in DNS (default: ALGORITHM-YYYYMMDD).
        #[arg(long)]
        selector: Option<String>,
    },
    /// One line per key: domain, selector, algorithm, the TXT record's value (tab-separated).
    List,
}

pub(crate) async fn open(config: &Config) -> anyhow::Result<Arc<Store>> {
    let url: StoreUrl = config.store_url().parse()?;
    if let StoreUrl::Sqlite(path) = &url {
        if !path.exists() {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
        }
    }
    Store::open_with_blobs(&url, config.blobs.as_ref())
        .await
        .with_context(|| format!("opening store {url}"))
}

fn domain_arg(domain: &str) -> anyhow::Result<String> {
    address::normalize_domain(domain)
        .with_context(|| format!("{domain:?} is not a valid domain name"))
}

fn address_arg(addr: &str) -> anyhow::Result<String> {
    address::normalize(addr)
        .with_context(|| format!("{addr:?} is not a valid address (local@domain)"))
}

/// Reads a password without it ever appearing in argv: prompted twice on a terminal, else the
/// first line of stdin.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Password again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut input = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut input)
        .context("reading the password from stdin")?;
    let line = input.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("no password on stdin");
    }
    Ok(line)
}

pub async fn domain(config: Config, cmd: DomainCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match cmd {
        DomainCommand::Add { domain } => {
            let d = domain_arg(&domain)?;
            store.meta().add_domain(&d).await?;
        }
        DomainCommand::List => {
            for d in store.meta().list_domains().await? {
                println!("{d}");
            }
        }
        DomainCommand::Remove { domain } => {
            store.meta().remove_domain(&domain_arg(&domain)?).await?
        }
    }
    Ok(())
}

pub async fn dkim(config: Config, cmd: DkimCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match cmd {
        DkimCommand::Generate {
            domain,
            algorithm,
            selector,
        } => {
            let domain = domain_arg(&domain)?;
            let algorithm = dkim::Algorithm::from_key_type(&algorithm)
                .with_context(|| format!("unknown DKIM algorithm {algorithm:?}"))?;
            let selector = selector.unwrap_or_else(|| dkim::default_selector(algorithm));
            dkim::check_selector(&selector)?;
            let key = tokio::task::spawn_blocking(move || dkim::generate(algorithm)).await??;
            let record = StoredDkimKey {
                domain: domain.clone(),
                selector: selector.clone(),
                algorithm: algorithm.tag().to_string(),
                private_key: key.private_key,
                public_key: key.public_key,
                created: 0,
            };
            store.meta().add_dkim_key(&record).await?;
            let value = dkim::txt_value(algorithm, &record.public_key);
            println!(
                "Stored {} key {selector} of {domain}. Publish this DNS record:",
                algorithm.tag()
            );
            println!("{}", dkim::zone_line(&domain, &selector, &value));
        }
        DkimCommand::List => {
            for key in store.meta().dkim_keys().await? {
                let value = match dkim::Algorithm::from_tag(&key.algorithm) {
                    Some(a) => dkim::txt_value(a, &key.public_key),
                    None => "(unknown algorithm)".into(),
                };
                println!(
                    "{}\t{}\t{}\t{value}",
                    key.domain, key.selector, key.algorithm
                );
            }
        }
    }
    Ok(())
}

pub async fn account(config: Config, cmd: AccountCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match cmd {
        AccountCommand::Add { address } => {
            let a = address_arg(&address)?;
            let hash = hash_password(&read_password()?)?;
            store
                .meta()
                .add_account(&a, &hash)
                .await
                .map_err(|e| match e {
                    trimaran_core::store::StoreError::NotFound(what) => {
                        anyhow::anyhow!("{what} not found; add it first with `trimaran domain add`")
                    }
                    other => other.into(),
                })?;
        }
        AccountCommand::List => {
            for a in store.meta().list_accounts().await? {
                println!("{a}");
            }
        }
        AccountCommand::Remove { address } => {
            store.meta().remove_account(&address_arg(&address)?).await?
        }
        AccountCommand::Passwd { address } => {
            let a = address_arg(&address)?;
            if store.meta().account_by_address(&a).await?.is_none() {
                bail!("account {a} not found");
            }
            let hash = hash_password(&read_password()?)?;
            store.meta().set_password(&a, &hash).await?;
        }
        AccountCommand::Quota {
            address,
            storage,
            messages,
        } => {
            let id = account_id(&store, &address).await?;
            let mut q = store.meta().quota(id).await?;
            if storage.is_some() || messages.is_some() {
                if let Some(s) = &storage {
                    q.storage_limit = size_arg(s)?;
                }
                if let Some(m) = &messages {
                    q.message_limit = if m.eq_ignore_ascii_case("none") {
                        None
                    } else {
                        Some(
                            m.parse()
                                .map_err(|_| anyhow::anyhow!("bad message count {m:?}"))?,
                        )
                    };
                }
                let a = address_arg(&address)?;
                store
                    .meta()
                    .set_quota(&a, q.storage_limit, q.message_limit)
                    .await?;
            }
            println!(
                "storage\t{}\t{}\nmessages\t{}\t{}",
                q.storage_used,
                limit_text(q.storage_limit),
                q.messages_used,
                limit_text(q.message_limit)
            );
        }
    }
    Ok(())
}

pub async fn alias(config: Config, cmd: AliasCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match cmd {
        AliasCommand::Add { alias, target } => {
            let a = address_arg(&alias)?;
            let t = address_arg(&target)?;
            if a == t {
                bail!("an alias cannot point at itself");
            }
            store.meta().add_alias(&a, &t).await?;
        }
        AliasCommand::List => {
            for (a, t) in store.meta().list_aliases().await? {
                println!("{a} -> {t}");
            }
        }
        AliasCommand::Remove { alias, target } => {
            let t = target.as_deref().map(address_arg).transpose()?;
            store
                .meta()
                .remove_alias(&address_arg(&alias)?, t.as_deref())
                .await?;
        }
    }
    Ok(())
}

pub(crate) async fn account_id(store: &Store, addr: &str) -> anyhow::Result<AccountId> {
    let a = address_arg(addr)?;
    match store.meta().account_by_address(&a).await? {
        Some(acc) => Ok(acc.id),
        None => bail!("account {a} not found"),
    }
}

/// Keeps one record on one line of tab-separated output.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub async fn mail(config: Config, cmd: MailCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    match cmd {
        MailCommand::List { account, mailbox } => {
            let id = account_id(&store, &account).await?;
            if let Some(name) = &mailbox {
                if !store
                    .meta()
                    .mailboxes(id)
                    .await?
                    .iter()
                    .any(|m| &m.name == name)
                {
                    bail!("mailbox {name:?} not found in {account}");
                }
            }
            let mut out = std::io::stdout().lock();
            for m in store.meta().list_messages(id, mailbox.as_deref()).await? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    m.mailbox,
                    m.uid,
                    m.size,
                    m.hash,
                    one_line(m.subject.as_deref().unwrap_or(""))
                )?;
            }
        }
        MailCommand::Show {
            account,
            mailbox,
            uid,
        } => {
            let id = account_id(&store, &account).await?;
            let Some(m) = store.meta().find_message(id, &mailbox, uid).await? else {
                bail!("no message with UID {uid} in {mailbox} of {account}");
            };
            let bytes = store.read_blob(&m.hash).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}

pub async fn queue(config: Config, cmd: QueueCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let entries = |id: i64, all: Vec<trimaran_core::store::QueueRecord>| {
        let found: Vec<_> = all.into_iter().filter(|q| q.queue_id == id).collect();
        if found.is_empty() {
            bail!("no queued message {id}");
        }
        Ok(found)
    };
    match cmd {
        QueueCommand::List => {
            for q in store.meta().queue_list().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    q.queue_id,
                    q.status.as_str(),
                    q.sender,
                    q.recipient,
                    q.attempts,
                    utc(q.next_attempt),
                    q.last_error.as_deref().unwrap_or("")
                );
            }
        }
        QueueCommand::Show { id } => {
            let records = entries(id, store.meta().queue_list().await?)?;
            let first = &records[0];
            let env = &first.envelope;
            println!("Queue id:    {id}");
            println!("Sender:      <{}>", first.sender);
            println!("Size:        {} bytes", first.size);
            println!("Accepted:    {}", utc(first.created));
            if env.hold_until > first.created {
                println!("Held until:  {}", utc(env.hold_until));
            }
            println!(
                "Body:        {}{}",
                env.body.as_str(),
                if env.smtputf8 { ", SMTPUTF8" } else { "" }
            );
            if let Some(envid) = &env.envid {
                println!("ENVID:       {envid}");
            }
            if let Some(ret) = env.ret {
                println!("RET:         {}", ret.as_str());
            }
            println!("Recipients:");
            for r in &records {
                println!(
                    "  <{}>  {}, {} attempt(s)",
                    r.recipient,
                    r.status.as_str(),
                    r.attempts
                );
                if r.status == trimaran_core::store::QueueStatus::Pending {
                    println!("    next attempt: {}", utc(r.next_attempt));
                }
                if let (Some(owner), Some(until)) = (&r.lease_owner, r.lease_until) {
                    println!("    being sent by {owner} (lease until {})", utc(until));
                }
                if let Some(e) = &r.last_error {
                    println!("    last result: {e}");
                }
                if let Some(mta) = &r.remote_mta {
                    println!("    remote server: {mta}");
                }
            }
            match store.read_blob(&first.hash).await {
                Ok(bytes) => {
                    println!("Header:");
                    let header = trimaran_core::message::header_section(&bytes);
                    let header = String::from_utf8_lossy(header);
                    for line in header.trim_end_matches(['\r', '\n']).lines() {
                        println!("  {line}");
                    }
                }
                Err(e) => println!("Message body unreadable: {e}"),
            }
        }
        QueueCommand::Retry { id, .. } => {
            if let Some(id) = id {
                entries(id, store.meta().queue_list().await?)?;
            }
            let now = trimaran_core::store::now_unix();
            let n = store.meta().queue_release(id, now).await?;
            match id {
                Some(id) => println!("{n} recipient(s) of message {id} due now"),
                None => println!("{n} recipient(s) due now"),
            }
        }
        QueueCommand::Delete { id } => {
            entries(id, store.meta().queue_list().await?)?;
            let n = store.meta().queue_delete(id).await?;
            println!("message {id} deleted ({n} recipient(s))");
        }
    }
    Ok(())
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}
