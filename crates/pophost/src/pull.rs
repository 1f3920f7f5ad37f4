//! `pophost migrate pop3`: copies mailboxes from an old POP3 server into pophost with UIDL and
//! RETR (never DELE), keeping each message's UIDL (crates/migrate does the work). One mailbox
//! (`--user`, the password on standard input or in a file) or many (`--accounts FILE`, a CSV of
//! `address,login,password`, several at once). A line per account, a summary for the batch,
//! and a non-zero exit when any account failed; running it again copies only what is new.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use mailstore::{Address, Store};
use migrate::{Report, Source, TlsOptions};

/// `pophost migrate …`: where to copy mail in from.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Copy mailboxes from an old POP3 server (UIDL and RETR only: nothing there is deleted or
    /// changed), keeping each message's UIDL so leave-on-server clients download nothing again.
    /// Run it again to copy only what is new.
    Pop3(Pop3Args),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mailboxes").required(true).args(["user", "accounts"])))]
pub struct Pop3Args {
    /// The old server: pop3s://HOST[:PORT] (TLS, port 995 by default) or pop3://HOST[:PORT]
    /// (port 110; needs --starttls, or --insecure to send the password in the clear).
    #[arg(long, value_name = "URL")]
    from: String,
    /// The pophost mailbox to copy into (it must exist): USER@DOMAIN.
    #[arg(long, value_name = "USER@DOMAIN")]
    user: Option<String>,
    /// The login on the old server (default: the --user address).
    #[arg(long, requires = "user")]
    login: Option<String>,
    /// Read the old server's password from the first line of standard input.
    #[arg(long, requires = "user", conflicts_with = "password_file")]
    password_stdin: bool,
    /// Read the old server's password from the first line of FILE.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// A CSV file of mailboxes: the header `address,login,password`, then one line each (an
    /// empty login is the address; quote fields holding commas with "…").
    #[arg(long, value_name = "FILE")]
    accounts: Option<PathBuf>,
    /// With --accounts: how many mailboxes are copied at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// pop3:// only: upgrade the connection with STLS before logging in.
    #[arg(long)]
    starttls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "PEM", conflicts_with = "insecure")]
    ca_file: Option<PathBuf>,
    /// Do not verify the old server's certificate; allow pop3:// without --starttls.
    #[arg(long)]
    insecure: bool,
}

/// One mailbox to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    address: Address,
    login: String,
    password: String,
}

/// The outcome of one account (or one bad CSV line, which has no address).
struct Outcome {
    name: String,
    report: Report,
    error: Option<String>,
}

impl Outcome {
    fn line(&self) -> String {
        let r = &self.report;
        let mut line = format!(
            "{} {}  added={} octets={} present={} renumbered={} fetched={}",
            if self.error.is_some() {
                "FAILED"
            } else {
                "ok    "
            },
            self.name,
            r.added,
            r.octets,
            r.present,
            r.renumbered,
            r.fetched
        );
        if let Some(e) = &self.error {
            line.push_str(&format!("  error: {e}"));
        }
        line
    }
}

/// Runs `pophost migrate pop3`; returns what to print, or fails when any mailbox failed.
pub async fn run(store: Arc<dyn Store>, args: Pop3Args) -> anyhow::Result<String> {
    let source = Source::parse(
        &args.from,
        TlsOptions {
            starttls: args.starttls,
            ca_file: args.ca_file.clone(),
            insecure: args.insecure,
        },
    )?;
    match (&args.user, &args.accounts) {
        (Some(user), _) => single(store, &source, &args, user).await,
        (None, Some(file)) => batch(store, source, file, args.concurrency).await,
        (None, None) => bail!("give --user or --accounts"),
    }
}

async fn single(
    store: Arc<dyn Store>,
    source: &Source,
    args: &Pop3Args,
    user: &str,
) -> anyhow::Result<String> {
    let address = Address::parse(user)?;
    let password = match (&args.password_file, args.password_stdin) {
        (Some(file), _) => first_line(
            std::fs::File::open(file)
                .map(std::io::BufReader::new)
                .with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("reading {}", file.display()))?,
        (None, true) => first_line(std::io::stdin().lock())
            .context("reading the password from standard input")?,
        (None, false) => bail!("--user needs --password-stdin or --password-file"),
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let account = Account {
        login: args.login.clone().unwrap_or_else(|| address.to_string()),
        address,
        password,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(style("{bar:40} {pos}/{len} messages  {per_sec}  eta {eta}"));
    let outcome = copy(&*store, source, &account, &|p: migrate::Progress<'_>| {
        bar.set_length(p.to_fetch);
        bar.set_position(p.report.fetched);
    })
    .await;
    bar.finish_and_clear();
    match &outcome.error {
        None => Ok(outcome.line()),
        Some(e) => {
            println!("{}", outcome.line());
            bail!("{}: {e}", outcome.name)
        }
    }
}

async fn batch(
    store: Arc<dyn Store>,
    source: Source,
    file: &Path,
    concurrency: u16,
) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let Accounts {
        good: accounts,
        bad,
    } = parse_accounts(&text).with_context(|| file.display().to_string())?;
    let total = accounts.len() + bad.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(style(
        "{bar:40} {pos}/{len} accounts  {msg} messages  {elapsed}",
    ));
    let mut outcomes = Vec::new();
    for (line, why) in bad {
        let o = Outcome {
            name: format!("line {line}"),
            report: Report::default(),
            error: Some(why),
        };
        bar.suspend(|| println!("{}", o.line()));
        bar.inc(1);
        outcomes.push(o);
    }
    let fetched = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(usize::from(concurrency)));
    let mut tasks = tokio::task::JoinSet::new();
    for (_, account) in accounts {
        let (store, source, bar) = (store.clone(), source.clone(), bar.clone());
        let (permits, fetched) = (permits.clone(), fetched.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let last = AtomicU64::new(0);
            let outcome = copy(&*store, &source, &account, &|p: migrate::Progress<'_>| {
                let new = p.report.fetched - last.swap(p.report.fetched, Ordering::Relaxed);
                let all = fetched.fetch_add(new, Ordering::Relaxed) + new;
                bar.set_message(all.to_string());
            })
            .await;
            bar.suspend(|| println!("{}", outcome.line()));
            bar.inc(1);
            outcome
        });
    }
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.context("a migration task failed")?);
    }
    bar.finish_and_clear();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let sum = |f: fn(&Report) -> u64| outcomes.iter().map(|o| f(&o.report)).sum::<u64>();
    let summary = format!(
        "{} of {total} account(s) migrated from {source}, {failed} failed: {} message(s) added ({} octets), {} already present, {} renumbered, {} fetched; {:.1} s",
        total - failed,
        sum(|r| r.added),
        sum(|r| r.octets),
        sum(|r| r.present),
        sum(|r| r.renumbered),
        sum(|r| r.fetched),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        println!("{summary}");
        bail!("{failed} of {total} account(s) failed");
    }
    Ok(summary)
}

fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// Copies one account; any error is in the outcome, with what was copied before it.
async fn copy(
    store: &dyn Store,
    source: &Source,
    account: &Account,
    progress: &(dyn Fn(migrate::Progress<'_>) + Sync),
) -> Outcome {
    let name = account.address.to_string();
    let user = match store.find_recipient(&account.address).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Outcome {
                name,
                report: Report::default(),
                error: Some(format!("no such user {} in pophost", account.address)),
            };
        }
        Err(e) => {
            return Outcome {
                name,
                report: Report::default(),
                error: Some(e.to_string()),
            };
        }
    };
    // The last progress seen: what was copied if the pull fails part way.
    let last = std::sync::Mutex::new(Report::default());
    let result = migrate::pull_with(
        store,
        store,
        user,
        source,
        &account.login,
        &account.password,
        &|p| {
            if let Ok(mut l) = last.lock() {
                l.clone_from(p.report);
            }
            progress(p);
        },
    )
    .await;
    match result {
        Ok(report) if report.too_large.is_empty() => Outcome {
            name,
            report,
            error: None,
        },
        Ok(report) => {
            let error = format!(
                "{} message(s) over {} octets not copied: {}",
                report.too_large.len(),
                migrate::MAX_MESSAGE_OCTETS,
                report
                    .too_large
                    .iter()
                    .map(|(uid, size)| format!("{uid} ({size} octets)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Outcome {
                name,
                report,
                error: Some(error),
            }
        }
        Err(e) => Outcome {
            name,
            report: last.into_inner().unwrap_or_default(),
            error: Some(e.to_string()),
        },
    }
}

/// The first line of `input`, without its line ending.
fn first_line(mut input: impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// An accounts file read: accounts by CSV line number, and the lines that are not accounts,
/// with why.
struct Accounts {
    good: Vec<(usize, Account)>,
    bad: Vec<(usize, String)>,
}

/// Reads an accounts file. Fails only when the header is wrong (then no column can be
/// trusted); a bad line is reported and the others go on.
fn parse_accounts(text: &str) -> anyhow::Result<Accounts> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let header = lines.next().map(|(_, l)| l).unwrap_or_default();
    let columns: Vec<String> = csv_fields(header)
        .unwrap_or_default()
        .iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    if columns != ["address", "login", "password"] {
        bail!("the first line must be the header address,login,password");
    }
    let mut accounts: Vec<(usize, Account)> = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in lines {
        let account = csv_fields(line).and_then(|fields| {
            let [address, login, password] = <[String; 3]>::try_from(fields).map_err(|f| {
                format!("{} field(s), expected 3 (address,login,password)", f.len())
            })?;
            let address = Address::parse(address.trim()).map_err(|e| e.to_string())?;
            if password.is_empty() {
                return Err("the password is empty".to_string());
            }
            if let Some((first, _)) = accounts.iter().find(|(_, a)| a.address == address) {
                return Err(format!("{address} is also on line {first}"));
            }
            let login = match login.trim() {
                "" => address.to_string(),
                l => l.to_string(),
            };
            Ok(Account {
                address,
                login,
                password,
            })
        });
        match account {
            Ok(a) => accounts.push((n, a)),
            Err(why) => bad.push((n, why)),
        }
    }
    Ok(Accounts {
        good: accounts,
        bad,
    })
}

/// The fields of one CSV line (RFC 4180: `"…"` quotes, `""` is a quote inside them).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, _) if was_quoted => return Err("text after a closing quote".into()),
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv() {
        assert_eq!(
            csv_fields("a,b,c"),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            csv_fields(r#"a,,"p,w ""x""""#),
            Ok(vec!["a".into(), "".into(), r#"p,w "x""#.into()])
        );
        assert!(csv_fields(r#"a,"open"#).is_err());
        assert!(csv_fields(r#"a,"x"y,c"#).is_err());
    }

    #[test]
    fn accounts() {
        let text = "\u{feff}Address, Login ,PASSWORD\r\n\
                    john@example.com,,s3cret pass\r\n\
                    \r\n\
                    mary@example.com,mary.old,\"a,b\"\n\
                    not an address,,x\n\
                    bob@example.com,bob\n\
                    eve@example.com,,\n\
                    john@example.com,,again\n";
        let Accounts {
            good: accounts,
            bad,
        } = parse_accounts(text).expect("parse");
        assert_eq!(accounts.len(), 2);
        assert_eq!(accounts[0].0, 2);
        assert_eq!(accounts[0].1.login, "john@example.com");
        assert_eq!(accounts[0].1.password, "s3cret pass");
        assert_eq!(
            (accounts[1].0, accounts[1].1.login.as_str()),
            (4, "mary.old")
        );
        assert_eq!(accounts[1].1.password, "a,b");
        let lines: Vec<usize> = bad.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [5, 6, 7, 8]);
        assert!(bad[1].1.contains("2 field(s)"), "{bad:?}");
        assert!(bad[2].1.contains("password is empty"), "{bad:?}");
        assert!(bad[3].1.contains("also on line 2"), "{bad:?}");
        assert!(parse_accounts("address,password\njohn@example.com,x\n").is_err());
        assert!(parse_accounts("").is_err());
    }
}
