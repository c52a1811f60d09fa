//! `trimaran backup ...`: see the trimaran-backup crate.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use trimaran_backup::progress::human_bytes;
use trimaran_backup::{snapshot, Repository, Retention};
use trimaran_core::config::Config;
use trimaran_core::store::sqlite::SqliteBuild;
use trimaran_core::store::StoreUrl;

use crate::admin::open;

#[derive(Subcommand)]
pub enum BackupCommand {
    /// Back up the whole store while it runs, into a repository (made if DIR is empty or
    /// missing). Bodies the repository holds already are not copied again.
    Create {
        #[arg(long = "to", visible_alias = "repo", value_name = "DIR")]
        to: PathBuf,
        /// Close a pack file once it holds this many bytes.
        #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
        pack_size: u64,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// The repository's backups, oldest first (tab-separated: ID, time, accounts, messages,
    /// bytes, bytes new in it).
    List {
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
    },
    /// Check every hash of the repository (or of one backup); names every message that
    /// damage makes unrestorable. Exit status 1 when anything is damaged.
    Verify {
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
    },
    /// Remove the backups a retention rule no longer keeps, and the pack files only they
    /// needed.
    Prune {
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Keep the newest N backups.
        #[arg(long, value_name = "N")]
        keep_last: Option<usize>,
        /// Keep every backup younger than this: e.g. 36h, 30d, 12w.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        keep_within: Option<i64>,
        /// Say what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a backup (the newest, or --snapshot) into the store while it runs: everything,
    /// or one account. Restored mail merges with the mail there; running it again adds
    /// nothing twice.
    Restore {
        #[arg(long = "from", visible_alias = "repo", value_name = "DIR")]
        from: PathBuf,
        #[arg(long, value_name = "ADDRESS")]
        account: Option<String>,
        #[arg(long, value_name = "ID")]
        snapshot: Option<String>,
        /// Give mailboxes the restore creates the UIDVALIDITY they had, so clients keep their
        /// caches. Only when the backup is the last state clients saw (moving a stopped
        /// deployment); otherwise they get new ones and clients resynchronise.
        #[arg(long)]
        keep_uidvalidity: bool,
        #[arg(long, short)]
        quiet: bool,
    },
}

fn parse_duration(s: &str) -> Result<i64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (h, d, w)"))?;
    let secs = match unit {
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("{s:?}: the unit must be h, d or w")),
    };
    n.checked_mul(secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn utc(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

pub async fn run(config: Config, cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Create {
            to,
            pack_size,
            quiet,
        } => {
            let store = open(&config).await?;
            let repo = Repository::open(&to, true)?;
            let url: StoreUrl = config.store_url().parse()?;
            let created = trimaran_backup::create(
                &store,
                &repo,
                &trimaran_backup::CreateOptions {
                    pack_size: pack_size.max(1 << 20),
                    quiet,
                    store_name: url.to_string(),
                },
            )
            .await
            .context("backup failed")?;
            let t = &created.trailer;
            println!(
                "backup {}: {} accounts, {} messages ({}), {} new bodies ({}) in {} packs",
                created.id,
                t.accounts,
                t.messages,
                human_bytes(t.bytes),
                t.new_bodies,
                human_bytes(t.new_bytes),
                t.packs.len()
            );
            if !quiet {
                eprintln!("{}", created.summary);
            }
            if !t.damaged.is_empty() {
                for (hash, why) in &t.damaged {
                    eprintln!("damaged in the store, not backed up: {hash}: {why}");
                }
                bail!(
                    "{} bodies in the store are damaged and are not in the backup (see trimaran scrub)",
                    t.damaged.len()
                );
            }
        }
        BackupCommand::List { repo } => {
            let repo = Repository::open(&repo, false)?;
            for id in snapshot::list(&repo)? {
                match snapshot::summary(&repo, &id) {
                    Ok((h, t)) => println!(
                        "{id}\t{}\t{}\t{}\t{}\t{}",
                        utc(h.created),
                        t.accounts,
                        t.messages,
                        t.bytes,
                        t.new_bytes
                    ),
                    Err(e) => println!("{id}\tunreadable: {e}"),
                }
            }
        }
        BackupCommand::Verify { repo, snapshot } => {
            let repo = Repository::open(&repo, false)?;
            let report = trimaran_backup::verify(&repo, snapshot.as_deref())?;
            for (id, why) in &report.bad_snapshots {
                println!("snapshot {id}: {why}");
            }
            for (id, why) in &report.bad_packs {
                println!("pack {id}: {why}");
            }
            for (snap, account, mailbox, uid, hash, why) in &report.damaged_messages {
                println!("damaged\t{snap}\t{account}\t{mailbox}\t{uid}\t{hash}\t{why}");
            }
            println!(
                "{} snapshots, {} packs, {} bodies checked: {}",
                report.snapshots,
                report.packs,
                report.bodies_checked,
                if report.is_clean() {
                    "all intact".to_string()
                } else {
                    format!("{} damaged messages", report.damaged_messages.len())
                }
            );
            if !report.is_clean() {
                bail!("the repository is damaged");
            }
        }
        BackupCommand::Prune {
            repo,
            keep_last,
            keep_within,
            dry_run,
        } => {
            let repo = Repository::open(&repo, false)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let rule = Retention {
                keep_last,
                keep_within,
            };
            let pruned = trimaran_backup::prune(&repo, &rule, now, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for id in &pruned.removed {
                println!("{verb} {id}");
            }
            println!(
                "kept {} backups; {verb} {} backups and {} packs ({})",
                pruned.kept.len(),
                pruned.removed.len(),
                pruned.packs_removed,
                human_bytes(pruned.bytes_freed)
            );
        }
        BackupCommand::Restore {
            from,
            account,
            snapshot,
            keep_uidvalidity,
            quiet,
        } => {
            let repo = Repository::open(&from, false)?;
            let opts = trimaran_backup::RestoreOptions {
                snapshot,
                account,
                keep_uidvalidity,
                quiet,
            };
            let url: StoreUrl = config.store_url().parse()?;
            // A SQLite store that does not exist (yet, or any more) is built beside its place
            // and put there once complete: about a fifth faster (see SqliteBuild).
            let build = match &url {
                StoreUrl::Sqlite(path) => SqliteBuild::begin(path)?,
                StoreUrl::Postgres(_) => None,
            };
            let r = match build {
                None => {
                    let store = open(&config).await?;
                    trimaran_backup::restore(&store, &repo, &opts)
                        .await
                        .context("restore failed; running it again continues where it stopped")?
                }
                Some(mut build) => {
                    let target = build.target().display().to_string();
                    let store = build
                        .open(config.blobs.as_ref())
                        .await
                        .with_context(|| format!("building a new store for {target}"))?;
                    let r = match trimaran_backup::restore(&store, &repo, &opts).await {
                        Ok(r) => r,
                        Err(e) => {
                            build.abandon(store).await;
                            return Err(e).with_context(|| {
                                format!(
                                    "restore failed; {target} was not made. Running it again starts over"
                                )
                            });
                        }
                    };
                    build
                        .finish(store)
                        .await
                        .with_context(|| format!("putting the restored store at {target}"))?;
                    r
                }
            };
            println!(
                "restored {}: {} accounts ({} new), {} mailboxes new, {} messages restored, {} already there",
                r.snapshot,
                r.accounts,
                r.accounts_created,
                r.mailboxes_created,
                r.messages_restored,
                r.messages_present
            );
            if !quiet {
                eprintln!("{}", r.summary);
            }
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            for (account, mailbox, uid, hash, why) in &r.damaged {
                println!("not restored\t{account}\t{mailbox}\t{uid}\t{hash}\t{why}");
            }
            if !r.damaged.is_empty() {
                bail!(
                    "{} messages could not be restored: their bodies are damaged in the backup",
                    r.damaged.len()
                );
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ScrubArgs {
    /// Repair the metadata invariants that have a safe repair.
    #[arg(long)]
    repair: bool,
    /// Put back damaged or missing bodies from this backup repository.
    #[arg(long, value_name = "DIR")]
    repair_from: Option<PathBuf>,
    /// Remove bodies nothing refers to (never one a delivery in flight is storing).
    #[arg(long)]
    collect_garbage: bool,
    /// ... only those first written at least this long ago: e.g. 0h, 1h, 7d.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    min_age: i64,
    #[arg(long, short)]
    quiet: bool,
}

pub async fn scrub(config: Config, args: ScrubArgs) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let repair_from = args
        .repair_from
        .as_deref()
        .map(|dir| Repository::open(dir, false))
        .transpose()?;
    let report = trimaran_backup::scrub(
        &store,
        &trimaran_backup::ScrubOptions {
            repair_from,
            repair: args.repair,
            collect_older_than: args.collect_garbage.then_some(args.min_age),
            quiet: args.quiet,
        },
    )
    .await
    .context("scrub failed")?;
    for i in &report.invariants {
        let state = match (i.violations, i.repaired) {
            (0, _) => "ok".to_string(),
            (n, true) => format!("{n} violations, repaired"),
            (n, false) => format!("{n} violations"),
        };
        println!("invariant\t{}\t{state}", i.name);
    }
    for (hash, why, repaired) in &report.damaged {
        let state = if *repaired {
            "repaired from the backup"
        } else {
            "not repaired"
        };
        println!("damaged body\t{hash}\t{why}\t{state}");
    }
    println!(
        "{} bodies checked ({}), {} damaged; {} unreferenced bodies collected ({})",
        report.bodies_checked,
        human_bytes(report.bytes_checked),
        report.damaged.len(),
        report.collected.bodies,
        human_bytes(report.collected.bytes)
    );
    if !args.quiet {
        eprintln!("{}", report.summary);
    }
    match report.problems() {
        0 => Ok(()),
        n => bail!("{n} problems remain"),
    }
}
