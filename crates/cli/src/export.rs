//! `trimaran export` and `trimaran import`: an account's mail as mbox, Maildir or .eml files in
//! a zip, out and back in (DESIGN.md G7). The formats live in the trimaran-export crate.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use trimaran_core::config::Config;
use trimaran_export::{emlzip, maildir, mbox, Format, Importer, Report};

use crate::admin::{account_id, open};

#[derive(Args)]
pub struct ExportArgs {
    /// The account whose mail is exported (only its own mailboxes, never ones shared with it).
    #[arg(long, value_name = "ADDRESS")]
    account: String,
    /// mbox: a directory with one NAME.mbox per mailbox (or one file when --mailbox is given
    /// and --to ends in .mbox); maildir: a Maildir++ directory; eml-zip: a zip file ("-":
    /// standard output).
    #[arg(long, value_parser = ["mbox", "maildir", "eml-zip"])]
    format: String,
    /// Only this mailbox.
    #[arg(long, value_name = "NAME")]
    mailbox: Option<String>,
    /// Where to write; it must not exist yet (a directory may exist if empty).
    #[arg(long, value_name = "PATH")]
    to: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The account the mail goes into; missing mailboxes are created.
    #[arg(long, value_name = "ADDRESS")]
    account: String,
    /// The format of --from. Messages over smtp.max_message_size are skipped and reported.
    #[arg(long, value_parser = ["mbox", "maildir", "eml-zip"])]
    format: String,
    /// mbox: a file (its name, less .mbox, names the mailbox) or a directory of them;
    /// maildir: a Maildir++ directory; eml-zip: a zip file.
    #[arg(long, value_name = "PATH")]
    from: PathBuf,
}

pub async fn export(config: Config, args: ExportArgs) -> anyhow::Result<()> {
    let format: Format = args.format.parse()?;
    let store = open(&config).await?;
    let account = account_id(&store, &args.account).await?;
    if let Some(name) = &args.mailbox {
        // Before anything is created at the target.
        let name = trimaran_export::canonical_inbox(name);
        if !store
            .meta()
            .mailboxes(account)
            .await?
            .iter()
            .any(|b| b.name == name)
        {
            bail!("mailbox {name:?} not found in {}", args.account);
        }
    }
    let to = args.to.clone();
    let stdout = to.as_os_str() == "-";
    if stdout && format != Format::EmlZip {
        bail!("only eml-zip can be written to standard output");
    }
    if !stdout && format == Format::EmlZip && to.exists() {
        bail!("{} exists already", to.display());
    }
    let rt = tokio::runtime::Handle::current();
    let mailbox = args.mailbox.clone();
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<Report> {
        let mailbox = mailbox.as_deref();
        match format {
            Format::EmlZip if stdout => {
                let out = std::io::BufWriter::new(std::io::stdout().lock());
                emlzip::write_eml_zip(&rt, &store, account, mailbox, out)
            }
            Format::EmlZip => {
                let file = std::fs::File::create_new(&to)
                    .with_context(|| format!("creating {}", to.display()))?;
                let mut out = std::io::BufWriter::new(file);
                let written = emlzip::write_eml_zip(&rt, &store, account, mailbox, &mut out)
                    .and_then(|report| {
                        out.into_inner()
                            .map_err(|e| e.into_error())
                            .and_then(|f| f.sync_all())
                            .with_context(|| format!("writing {}", to.display()))?;
                        Ok(report)
                    });
                // A zip cut short is no export: leave nothing that looks like one.
                if written.is_err() {
                    let _ = std::fs::remove_file(&to);
                }
                written
            }
            Format::Mbox => {
                let single = to.extension().is_some_and(|e| e == "mbox");
                let target = match (single, mailbox) {
                    (true, Some(_)) => mbox::Target::File(to),
                    (true, None) => bail!(
                        "a .mbox file holds one mailbox: give --mailbox, or a directory for all"
                    ),
                    (false, _) => mbox::Target::Tree(to),
                };
                trimaran_export::export(
                    &rt,
                    &store,
                    account,
                    mailbox,
                    mbox::MboxWriter::new(target)?,
                )
            }
            Format::Maildir => {
                let writer = maildir::MaildirWriter::new(&to)?;
                trimaran_export::export(&rt, &store, account, mailbox, writer)
            }
        }
    })
    .await??;
    finish("exported", &report)
}

pub async fn import(config: Config, args: ImportArgs) -> anyhow::Result<()> {
    let format: Format = args.format.parse()?;
    let store = open(&config).await?;
    let account = account_id(&store, &args.account).await?;
    let max_size = config.smtp.max_message_size;
    let rt = tokio::runtime::Handle::current();
    let from = args.from;
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<Report> {
        let mut importer = Importer::new(&rt, &store, account, max_size)?;
        match format {
            Format::Mbox => mbox::import(&mut importer, &from)?,
            Format::Maildir => maildir::import(&mut importer, &from)?,
            Format::EmlZip => emlzip::import(&mut importer, &from)?,
        }
        importer.finish()
    })
    .await??;
    finish("imported", &report)
}

/// The summary on stderr (stdout may carry the archive); non-zero exit when anything was left
/// out.
fn finish(done: &str, report: &Report) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    for note in &report.notes {
        writeln!(err, "note: {note}")?;
    }
    for skipped in &report.skipped {
        writeln!(err, "skipped: {skipped}")?;
    }
    if done == "imported" {
        writeln!(
            err,
            "imported {} message(s), {} already there, {} mailbox(es) created",
            report.messages, report.already, report.mailboxes
        )?;
    } else {
        writeln!(
            err,
            "exported {} message(s), {} mailbox(es)",
            report.messages, report.mailboxes
        )?;
    }
    if !report.skipped.is_empty() {
        bail!(
            "{} message(s) or file(s) skipped (listed above)",
            report.skipped.len()
        );
    }
    Ok(())
}
