//! `pophost import accounts passwd-file|csv`: many accounts at once, with the password hashes the
//! old server stored (`admin_web::provision::accounts` reads the files and applies the rows
//! through the one provisioning service, audited as `cli`). Each failed line goes to standard
//! error with its number; the summary ends the output; any failure makes the exit status
//! non-zero.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use admin_web::provision::accounts::{self, Options, Outcome, Summary};
use admin_web::{Actor, Roles};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use mailstore::DomainName;

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// A Dovecot passwd-file: user:{SCHEME}hash:uid:gid:gecos:home:shell:extra, with
    /// userdb_quota_rule=*:storage=1G / *:messages=N extra fields as quotas.
    PasswdFile {
        file: PathBuf,
        /// The domain of user names without one (and the only domain the file may name).
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        options: ApplyArgs,
    },
    /// A CSV file with a header line naming its columns: address (required), password_hash or
    /// password, quota_bytes, quota_messages, enabled.
    Csv {
        file: PathBuf,
        #[command(flatten)]
        options: ApplyArgs,
    },
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Check every line and report what would happen, changing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also change accounts that exist (quotas, enabled, and the password where the line has
    /// one); without it they are left as they are.
    #[arg(long)]
    update: bool,
}

impl ApplyArgs {
    fn options(&self) -> Options {
        Options {
            dry_run: self.dry_run,
            update: self.update,
        }
    }
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

/// Runs the command as `actor`; returns the summary line, or an error when any line failed
/// (after printing the failures and the summary).
pub async fn run(roles: &Roles, actor: &Actor, command: AccountsCommand) -> anyhow::Result<String> {
    let ((rows, parse_errors), options) = match command {
        AccountsCommand::PasswdFile {
            file,
            domain,
            options,
        } => {
            let domain = domain.as_deref().map(DomainName::parse).transpose()?;
            let text = read(&file)?;
            (
                accounts::parse_passwd_file(&text, domain.as_ref()),
                options.options(),
            )
        }
        AccountsCommand::Csv { file, options } => {
            (accounts::parse_csv(&read(&file)?), options.options())
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(rows.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} accounts  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let results = accounts::apply(roles, actor, rows, options, &|done| {
        bar.set_position(done as u64)
    })
    .await;
    bar.finish_and_clear();

    let mut failures: Vec<(usize, String)> = parse_errors
        .iter()
        .map(|e| (e.line, e.to_string()))
        .collect();
    failures.extend(results.iter().filter_map(|r| match &r.outcome {
        Outcome::Failed(why) => Some((r.line, format!("line {}: {}: {why}", r.line, r.address))),
        _ => None,
    }));
    failures.sort_by_key(|(line, _)| *line);
    for (_, message) in &failures {
        eprintln!("{message}");
    }
    let summary = Summary::of(&results, parse_errors.len());
    let summary = if options.dry_run {
        format!("{summary} (dry run: nothing was changed)")
    } else {
        summary.to_string()
    };
    if !failures.is_empty() {
        println!("{summary}");
        bail!("{} line(s) failed", failures.len());
    }
    Ok(summary)
}
