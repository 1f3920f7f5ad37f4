//! `pophost domain generate`: a domain of N users with M messages each, for a staging system of
//! realistic size or a benchmark. The password is hashed once (argon2id and its SCRAM
//! verifier) and shared by every user; users go in through the store's bulk path
//! (`mailstore::BulkLoad`), a batch per transaction, and their mail through the delivery writer
//! LMTP uses, so each message is stored exactly as a delivery stores it (its own body, a
//! per-recipient `Return-Path`/`Delivered-To`/`Received` block, a UID, quota and usage counted).

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use admin_web::provision::{self, Credential, DomainChange};
use admin_web::{Actor, Roles};
use anyhow::{Context, bail};
use clap::Args;
use mailstore::{BulkMessage, DomainName, LocalPart, Recipient, Store, UserId};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The domain (added when it does not exist).
    domain: String,
    /// How many users to add: PREFIX<START> … PREFIX<START + N - 1>.
    #[arg(long)]
    users: u64,
    /// Messages delivered to each user.
    #[arg(long, default_value_t = 5)]
    messages_per_user: u32,
    /// Size of each message as delivered, in octets (headers included; at least its headers).
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Local part of the users before their number.
    #[arg(long, default_value = "user")]
    prefix: String,
    /// Number of the first user.
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// Read the users' one shared password from the first line of standard input (required:
    /// a password never goes on the command line).
    #[arg(long)]
    password_stdin: bool,
    /// Users per transaction.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Batches written at once (Postgres takes several; SQLite writes one at a time, the next
    /// being prepared meanwhile).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
}

/// Runs the command; returns the summary line.
pub async fn run(
    store: Arc<dyn Store>,
    roles: &Roles,
    actor: &Actor,
    args: GenerateArgs,
) -> anyhow::Result<String> {
    if !args.password_stdin {
        bail!("give the users' password on standard input with --password-stdin");
    }
    if args.batch == 0 || args.jobs == 0 {
        bail!("--batch and --jobs must be at least 1");
    }
    let domain = DomainName::parse(&args.domain)?;
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    if store.domain_detail(&domain).await?.is_none() {
        provision::create_domain(roles, actor, &domain, &DomainChange::default()).await?;
    }
    let secrets = provision::mailbox_secrets(Credential::Password(password)).await?;
    let shared = Arc::new(Shared {
        store: store.clone(),
        domain: domain.clone(),
        hash: secrets.hash,
        scram: secrets.verifier,
        prefix: args.prefix.clone(),
        messages: args.messages_per_user,
        size: args.size,
        date: rfc5322_date(SystemTime::now()),
    });
    let started = Instant::now();
    let end = args.start + args.users;
    let mut tasks = tokio::task::JoinSet::new();
    let (mut users, mut stored, mut refused) = (0u64, 0u64, 0u64);
    let mut next_report = args.users / 10;
    let mut first = args.start;
    loop {
        while tasks.len() < args.jobs && first < end {
            let last = (first + args.batch).min(end);
            let shared = shared.clone();
            tasks.spawn(async move { shared.batch(first, last).await });
            first = last;
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let (n, report) = done.context("a batch did not finish")??;
        users += n;
        stored += report.stored;
        refused += report.refused;
        if users >= next_report && users < args.users {
            eprintln!(
                "{users} of {} users, {:.0} s",
                args.users,
                started.elapsed().as_secs_f64()
            );
            next_report += args.users / 10;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    store
        .record_audit(&mailstore::AuditEntry {
            at: 0,
            actor: actor.name.clone(),
            action: "domain.generate".into(),
            object: domain.to_string(),
            domain: Some(domain.clone()),
            before: None,
            after: Some(format!(
                "{{\"users\":{users},\"messages\":{stored},\"size\":{}}}",
                args.size
            )),
            ip: None,
            success: true,
        })
        .await?;
    let mut out = format!(
        "generated {users} users with {stored} messages in {domain} in {secs:.1} s \
         ({:.0} users/s, {:.0} messages/s)",
        users as f64 / secs,
        stored as f64 / secs,
    );
    if refused > 0 {
        out.push_str(&format!("; {refused} messages refused (quota)"));
    }
    Ok(out)
}

/// What every batch shares.
struct Shared {
    store: Arc<dyn Store>,
    domain: DomainName,
    hash: String,
    scram: Option<String>,
    prefix: String,
    messages: u32,
    size: usize,
    date: String,
}

impl Shared {
    /// Adds users `first..last` and delivers their messages; how many users it added.
    async fn batch(&self, first: u64, last: u64) -> anyhow::Result<(u64, mailstore::BulkReport)> {
        let locals = (first..last)
            .map(|n| LocalPart::parse(&format!("{}{n}", self.prefix)))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = self
            .store
            .add_users_bulk(&self.domain, &locals, &self.hash, self.scram.as_deref())
            .await
            .with_context(|| format!("adding users {first} to {}", last - 1))?;
        let mut messages = Vec::with_capacity(ids.len() * self.messages as usize);
        for ((local, id), n) in locals.iter().zip(&ids).zip(first..) {
            for m in 1..=self.messages {
                messages.push(self.message(local, *id, n, m));
            }
        }
        let report = self
            .store
            .deliver_bulk(messages)
            .await
            .with_context(|| format!("delivering to users {first} to {}", last - 1))?;
        Ok((last - first, report))
    }

    /// Message `m` of user `n`, with the header block LMTP prepends for its recipient.
    fn message(&self, local: &LocalPart, user: UserId, n: u64, m: u32) -> BulkMessage {
        let address = format!("{}@{}", local.as_str(), self.domain);
        let from = format!("newsletter@{}", self.domain);
        let prefix = format!(
            "Return-Path: <{from}>\r\nDelivered-To: {address}\r\nReceived: from generate ([127.0.0.1])\r\n\tby pophost (pophost) with LMTP id gen{n}x{m}\r\n\tfor <{address}>; {}\r\n",
            self.date
        );
        BulkMessage {
            body: body(&from, &address, &self.domain, &self.date, n, m, self.size),
            recipients: vec![Recipient {
                user,
                prefix: prefix.into_bytes(),
            }],
        }
    }
}

/// A plain-text message of exactly `size` octets (or its headers, if longer): headers, then
/// lines of text of up to 76 characters, CRLF-terminated.
fn body(
    from: &str,
    to: &str,
    domain: &DomainName,
    date: &str,
    n: u64,
    m: u32,
    size: usize,
) -> Vec<u8> {
    const TEXT: &[u8] = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. ";
    let mut out = format!(
        "From: Newsletter <{from}>\r\nTo: <{to}>\r\nSubject: Message {m} for user {n}\r\n\
         Date: {date}\r\nMessage-ID: <{n}.{m}.generated@{domain}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    out.reserve(size.saturating_sub(out.len()));
    let mut at = (n as usize).wrapping_mul(31).wrapping_add(m as usize) % TEXT.len();
    while out.len() + 2 < size {
        let rest = size - out.len() - 2;
        // A line never leaves a single octet over, which no line could take.
        let line = if rest > 76 && rest < 79 {
            70
        } else {
            rest.min(76)
        };
        for _ in 0..line {
            // No line starts with '.', so the wire form is the stored form.
            let c = TEXT[at % TEXT.len()];
            out.push(if c == b'.' { b'!' } else { c });
            at += 1;
        }
        out.extend_from_slice(b"\r\n");
    }
    if out.len() + 2 == size {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `Mon, 7 Dec 2026 23:41:28 +0000`
fn rfc5322_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, mi, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d} {} {year} {h:02}:{mi:02}:{s:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_size_asked_and_crlf_lines() {
        let d = DomainName::parse("example.com").expect("domain");
        for size in [0, 300, 301, 302, 303, 4096, 200_000] {
            let b = body("a@example.com", "b@example.com", &d, "x", 7, 2, size);
            assert!(b.len() == size || (size < 300 && b.ends_with(b"\r\n\r\n")));
            let text = String::from_utf8(b).expect("ascii");
            for line in text.split("\r\n") {
                assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
                assert!(!line.starts_with('.'));
            }
        }
    }

    #[test]
    fn dates_are_rfc5322() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_796_687_688);
        assert_eq!(rfc5322_date(t), "Mon, 7 Dec 2026 23:54:48 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
    }
}
