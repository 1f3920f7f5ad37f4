//! Bulk accounts: many mailboxes at once, with the password hashes the old server stored, from a
//! Dovecot passwd-file or a CSV file, for the admin UI, the API and `pophost import accounts`.
//!
//! Parsing only turns lines into rows (and unreadable lines into errors naming their line);
//! `apply` then puts every row through `create_user`/`update_user`, so the scope check, the
//! password rules and the audit are the ones a single change gets. A row that fails changes
//! nothing and the others go in. Existing accounts are left alone unless `update` is asked for,
//! so running the same file again changes nothing. Messages never quote a line: it may hold a
//! password or its hash.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;

use mailstore::{
    Address, DomainDetail, DomainName, LocalPart, QuotaChange, StoreError, UserDetail,
};

use super::{
    Actor, Audit, Credential, Error, ListQuery, Roles, Unit, UserChange, create_user, domain,
    domains, mailbox_secrets, parse_limit, update_user, user, users,
};

/// One account read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// The line it was read from (1-based).
    pub line: usize,
    pub address: Address,
    /// `None`: none given (a new account needs one; an existing one keeps its password).
    pub credential: Option<Credential>,
    pub quota: QuotaChange,
    pub enabled: Option<bool>,
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Dovecot passwd-file.

/// Reads a Dovecot passwd-file: `user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`, where
/// only the first two fields are needed and the extra fields are space-separated `key=value`.
/// The user field may be `user@domain`; a bare `user` takes `domain`, and with `domain` given
/// an address in another domain is an error. `quota_rule=*:storage=1G` and
/// `*:messages=N` (also as `quota_rule2`…, with or without `userdb_`) become quotas: storage
/// takes Dovecot's suffixes `B`, `k`, `M`, `G`, `T` (powers of 1024), a bare number is KiB
/// (`bytes=N` is bytes) and, as in Dovecot, 0 is no limit. Other extra fields are ignored; `#` comments and blank lines are skipped.
pub fn parse_passwd_file(
    text: &str,
    domain: Option<&DomainName>,
) -> (Vec<AccountRow>, Vec<LineError>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.trim_end().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // Not trimmed at the end: a `{PLAIN}` password may end in a space.
        match passwd_line(trimmed, line, domain) {
            Ok(row) => rows.push(row),
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    (rows, errors)
}

fn passwd_line(text: &str, line: usize, domain: Option<&DomainName>) -> Result<AccountRow, String> {
    // The extra fields (the eighth on) may hold colons themselves (`*:storage=1G`).
    let fields: Vec<&str> = text.splitn(8, ':').collect();
    let address = passwd_user(fields[0].trim(), domain)?;
    let credential = match fields.get(1) {
        None | Some(&"") => None,
        Some(hash) => Some(Credential::Hash(hash.to_string())),
    };
    let mut quota = QuotaChange::default();
    for field in fields.get(7).map_or("", |e| e.trim()).split_whitespace() {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        let key = key.strip_prefix("userdb_").unwrap_or(key);
        if is_quota_rule(key) {
            quota_rule(value, &mut quota)?;
        }
    }
    Ok(AccountRow {
        line,
        address,
        credential,
        quota,
        enabled: None,
    })
}

fn passwd_user(user: &str, domain: Option<&DomainName>) -> Result<Address, String> {
    if user.is_empty() {
        return Err("no user name".into());
    }
    match (user.contains('@'), domain) {
        (true, _) => {
            let address = Address::parse(user).map_err(|e| e.to_string())?;
            match domain {
                Some(d) if address.domain != *d => Err(format!(
                    "{address} is not in domain {d} (the file's users must be in the domain given)"
                )),
                _ => Ok(address),
            }
        }
        (false, Some(d)) => Ok(Address {
            local: LocalPart::parse(user).map_err(|e| e.to_string())?,
            domain: d.clone(),
        }),
        (false, None) => Err(format!(
            "user {user:?} has no domain: give the file's domain (--domain)"
        )),
    }
}

/// `quota_rule`, `quota_rule2`, `quota_rule3`, …
fn is_quota_rule(key: &str) -> bool {
    key.strip_prefix("quota_rule")
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

/// One Dovecot quota rule, `MAILBOX:limit=value[:limit=value]`. Only `*` (the whole mailbox)
/// means something for POP3; a rule for one folder or a relative one is refused rather than
/// dropped, so no account arrives with a limit other than the one the file gave.
fn quota_rule(rule: &str, quota: &mut QuotaChange) -> Result<(), String> {
    let Some(("*", limits)) = rule.split_once(':') else {
        return Err(format!(
            "quota rule {rule:?}: only rules for \"*\" (the whole mailbox) can be imported"
        ));
    };
    for limit in limits.split(':') {
        let (name, value) = limit.split_once('=').unwrap_or((limit, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            // Dovecot reads a bare `storage` number in KiB and a bare `bytes` number in bytes.
            unit @ ("storage" | "bytes") => {
                let bare_shift = if unit == "storage" { 10 } else { 0 };
                quota.bytes = Some(
                    dovecot_size(value, bare_shift)
                        .map_err(|e| format!("quota rule {rule:?}: {e}"))?,
                )
            }
            "messages" => {
                let n = dovecot_number(value).map_err(|e| format!("quota rule {rule:?}: {e}"))?;
                quota.messages = Some((n != 0).then_some(n));
            }
            // `*:ignore` exempts a folder from quota in Dovecot; there is only the one here.
            "ignore" | "backend" => {}
            other => return Err(format!("quota rule {rule:?}: unknown limit {other:?}")),
        }
    }
    Ok(())
}

/// A Dovecot size: digits with an optional `B`, `k`, `M`, `G`, `T` (any case; powers of
/// 1024); without one, the number is shifted by `bare_shift` bits. 0 is no limit, as in Dovecot.
fn dovecot_size(value: &str, bare_shift: u32) -> Result<Option<u64>, String> {
    let v = value.trim();
    let (digits, shift) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'b' => 0,
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                _ => {
                    return Err(format!(
                        "{v:?} is not a size (a number with B, k, M, G or T)"
                    ));
                }
            };
            (&v[..i], shift)
        }
        _ => (v, bare_shift),
    };
    let n = dovecot_number(digits)?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{v:?} is too large"))?;
    Ok((bytes != 0).then_some(bytes))
}

fn dovecot_number(value: &str) -> Result<u64, String> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        // `+10%`, `+100M`: relative limits need a default to be relative to.
        return Err(format!("{v:?} is not a whole number"));
    }
    v.parse().map_err(|_| format!("{v:?} is too large"))
}

// ---------------------------------------------------------------------------------------------
// Exports: the columns the CSV import reads, so an export moves a domain's accounts (without
// their passwords: no password material ever leaves) to another pophost, or back after an edit.

/// Every user of `domain` as CSV (`address,quota_bytes,quota_messages,enabled`); audited as
/// `users.export`.
pub async fn export_users(
    roles: &Roles,
    actor: &Actor,
    domain: &DomainName,
) -> Result<String, Error> {
    let page = users(roles, actor, domain, &ListQuery::default(), u64::MAX).await?;
    let header = ["address", "quota_bytes", "quota_messages", "enabled"];
    let rows = page.items.iter().map(|u| {
        [
            u.address.to_string(),
            export_limit(u.quota.bytes),
            export_limit(u.quota.messages),
            u.enabled.to_string(),
        ]
    });
    let text = to_csv(header, rows)?;
    let object = format!("{} users", page.items.len());
    actor
        .audit(roles, Audit::new("users.export", &object, Some(domain)))
        .await;
    Ok(text)
}

/// Every domain the actor may reach as CSV
/// (`name,quota_bytes,quota_messages,max_users,enabled,users,aliases`); audited as
/// `domains.export`.
pub async fn export_domains(roles: &Roles, actor: &Actor) -> Result<String, Error> {
    let page = domains(roles, actor, &ListQuery::default(), u64::MAX).await?;
    let header = [
        "name",
        "quota_bytes",
        "quota_messages",
        "max_users",
        "enabled",
        "users",
        "aliases",
    ];
    let rows = page.items.iter().map(|d| {
        [
            d.name.to_string(),
            export_limit(d.quota.bytes),
            export_limit(d.quota.messages),
            export_limit(d.max_users),
            d.enabled.to_string(),
            d.users.to_string(),
            d.aliases
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ]
    });
    let text = to_csv(header, rows)?;
    let object = format!("{} domains", page.items.len());
    actor
        .audit(roles, Audit::new("domains.export", &object, None))
        .await;
    Ok(text)
}

/// A limit as the import reads it back: a number, or `unlimited`.
fn export_limit(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

fn to_csv<const N: usize>(
    header: [&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> Result<String, Error> {
    // Writing to memory cannot fail but for a bug; say so rather than panic.
    let failed = |e: String| Error::Invalid(format!("writing CSV: {e}"));
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(header)
        .map_err(|e| failed(e.to_string()))?;
    for row in rows {
        out.write_record(&row).map_err(|e| failed(e.to_string()))?;
    }
    let bytes = out.into_inner().map_err(|e| failed(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| failed(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// CSV.

/// The CSV columns, by header name.
const COLUMNS: [&str; 6] = [
    "address",
    "password_hash",
    "password",
    "quota_bytes",
    "quota_messages",
    "enabled",
];

/// Reads a CSV file whose first line names its columns (any order, any case): `address`
/// (required), `password_hash` (Dovecot's `{SCHEME}…` or a crypt string), `password` (typed:
/// held to the password policy), `quota_bytes`, `quota_messages` (read by `parse_limit`;
/// `unlimited` is no limit, an empty cell keeps the limit) and `enabled` (`true`/`false`). A
/// row gives at most one of the two password columns. An unknown or repeated column fails the
/// whole file, so a misspelt one is not silently left out.
pub fn parse_csv(text: &str) -> (Vec<AccountRow>, Vec<LineError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    // The reader's own line numbers skip blank lines; these count every line of the text.
    let mut lines = LineCounter::new(text);
    let fail = |line: usize, message: String| (Vec::new(), vec![LineError { line, message }]);
    let header = match records.next() {
        None => return fail(1, "empty file: the first line must name the columns".into()),
        Some(Err(e)) => return fail(1, csv_message(&e)),
        Some(Ok(h)) => h,
    };
    // For each known column, its index in the file.
    let mut index = [None; COLUMNS.len()];
    for (i, name) in header.iter().enumerate() {
        let name = name.trim().to_ascii_lowercase();
        let Some(c) = COLUMNS.iter().position(|k| *k == name) else {
            return fail(
                1,
                format!(
                    "unknown column {name:?}: the columns are {}",
                    COLUMNS.join(", ")
                ),
            );
        };
        if index[c].replace(i).is_some() {
            return fail(1, format!("column {name:?} appears twice"));
        }
    }
    if index[0].is_none() {
        return fail(1, "no \"address\" column".into());
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(LineError {
                    line: lines.at(e.position()),
                    message: csv_message(&e),
                });
                continue;
            }
        };
        let line = lines.at(record.position());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() != header.len() {
            errors.push(LineError {
                line,
                message: format!(
                    "{} fields where the header has {}",
                    record.len(),
                    header.len()
                ),
            });
            continue;
        }
        let cell = |c: usize| index[c].map_or("", |i| record.get(i).unwrap_or("").trim());
        match csv_row(line, cell) {
            Ok(row) => rows.push(row),
            Err(message) => errors.push(LineError { line, message }),
        }
    }
    (rows, errors)
}

fn csv_row<'a>(line: usize, cell: impl Fn(usize) -> &'a str) -> Result<AccountRow, String> {
    let address = match cell(0) {
        "" => return Err("no address".into()),
        a => Address::parse(a).map_err(|e| e.to_string())?,
    };
    let credential = match (cell(1), cell(2)) {
        ("", "") => None,
        (hash, "") => Some(Credential::Hash(hash.to_string())),
        ("", password) => Some(Credential::Password(password.to_string())),
        _ => return Err("give password_hash or password, not both".into()),
    };
    let limit = |c: usize, unit: Unit| -> Result<Option<Option<u64>>, String> {
        match cell(c) {
            "" => Ok(None),
            v => parse_limit(v, unit)
                .map(Some)
                .map_err(|e| format!("{}: {e}", COLUMNS[c])),
        }
    };
    let quota = QuotaChange {
        bytes: limit(3, Unit::Bytes)?,
        messages: limit(4, Unit::Count)?,
    };
    let enabled = match cell(5).to_ascii_lowercase().as_str() {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        _ => return Err("enabled: true or false".into()),
    };
    Ok(AccountRow {
        line,
        address,
        credential,
        quota,
        enabled,
    })
}

/// The line a byte offset of `text` is on, for offsets met in increasing order (so the whole
/// file is scanned once).
struct LineCounter<'a> {
    text: &'a [u8],
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            offset: 0,
            line: 1,
        }
    }

    fn at(&mut self, position: Option<&csv::Position>) -> usize {
        let Some(p) = position else {
            return self.line;
        };
        let mut to = usize::try_from(p.byte())
            .unwrap_or(usize::MAX)
            .clamp(self.offset, self.text.len());
        // A record's position is where the reader began looking for it, before the blank
        // lines it skipped; a record itself never starts with a line break.
        while self
            .text
            .get(to)
            .is_some_and(|b| matches!(b, b'\r' | b'\n'))
        {
            to += 1;
        }
        self.line += self.text[self.offset..to]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = to;
        self.line
    }
}

/// The reader's error without its position (the line is reported on its own).
fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".into(),
        _ => "not valid CSV".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Applying.

/// How `apply` treats the rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Check and report, change nothing.
    pub dry_run: bool,
    /// Change accounts that exist already; without it they are left alone.
    pub update: bool,
}

/// What happened (or, on a dry run, would happen) to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Added,
    Updated,
    /// The account exists and `update` was not given (or the row changes nothing): left alone.
    Unchanged,
    Failed(String),
}

/// One row's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowResult {
    pub line: usize,
    pub address: Address,
    pub outcome: Outcome,
}

/// Applies `rows` in order through `create_user`/`update_user`, as `actor`; `progress` gets
/// the number of rows done after each one. A row that fails changes nothing; the others go in.
/// A new account needs a credential ("no password"); an existing one is changed only with
/// `update`, and then only in what the row gives and what differs (a row without a credential
/// keeps the password). A dry run checks what it can without writing (the actor's scope, the
/// credential, whether the account exists, the domain's user limit) and reports what would
/// happen; the store's own checks at write time (a user's quota inside the domain's) are not
/// made.
pub async fn apply(
    roles: &Roles,
    actor: &Actor,
    rows: Vec<AccountRow>,
    options: Options,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<RowResult> {
    let mut dry = DryRun::default();
    let mut results = Vec::with_capacity(rows.len());
    for (done, row) in rows.into_iter().enumerate() {
        let (line, address) = (row.line, row.address.clone());
        let outcome = match apply_row(roles, actor, row, options, &mut dry).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        results.push(RowResult {
            line,
            address,
            outcome,
        });
        progress(done + 1);
    }
    results
}

/// `apply` for the rows of `domain` (the CSV import of one domain's users page and API call); a
/// row of another domain fails, whatever the actor may reach. The results are in line order.
pub async fn apply_in_domain(
    roles: &Roles,
    actor: &Actor,
    domain: &DomainName,
    rows: Vec<AccountRow>,
    options: Options,
) -> Vec<RowResult> {
    let (rows, outside): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|r| r.address.domain == *domain);
    let mut results = apply(roles, actor, rows, options, &|_| {}).await;
    results.extend(outside.into_iter().map(|r| RowResult {
        line: r.line,
        outcome: Outcome::Failed(format!("{} is not in the domain {domain}", r.address)),
        address: r.address,
    }));
    results.sort_by_key(|r| r.line);
    results
}

/// What a dry run would have written so far, so later rows see it: accounts added (a second
/// row for one is then an existing account) and, per domain, its detail as it was (read once:
/// its user count is a scan) and the users added to it (for its limit).
#[derive(Default)]
struct DryRun {
    added: HashSet<Address>,
    per_domain: HashMap<DomainName, (DomainDetail, u64)>,
}

async fn apply_row(
    roles: &Roles,
    actor: &Actor,
    row: AccountRow,
    options: Options,
    dry: &mut DryRun,
) -> Result<Outcome, Error> {
    let existing = match user(roles, actor, &row.address).await {
        Ok(u) => Some(u),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let added_earlier = options.dry_run && dry.added.contains(&row.address);
    if existing.is_none() && !added_earlier {
        return add(roles, actor, row, options.dry_run, dry).await;
    }
    if !options.update {
        return Ok(Outcome::Unchanged);
    }
    let address = row.address.clone();
    let change = effective_change(existing.as_ref(), row);
    if change.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    if options.dry_run {
        if let Some(credential) = change.password {
            mailbox_secrets(credential).await?;
        }
        return Ok(Outcome::Updated);
    }
    update_user(roles, actor, &address, change).await?;
    Ok(Outcome::Updated)
}

/// A new account.
async fn add(
    roles: &Roles,
    actor: &Actor,
    row: AccountRow,
    dry_run: bool,
    dry: &mut DryRun,
) -> Result<Outcome, Error> {
    let Some(credential) = row.credential else {
        return Err(Error::Invalid("no password".into()));
    };
    if dry_run {
        let (d, pending) = match dry.per_domain.entry(row.address.domain.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert((domain(roles, actor, &row.address.domain).await?, 0)),
        };
        if let Some(max) = d.max_users
            && d.users + *pending >= max
        {
            return Err(StoreError::Conflict(format!(
                "domain {} has reached its limit of {max} users",
                d.name
            ))
            .into());
        }
        mailbox_secrets(credential).await?;
        *pending += 1;
        dry.added.insert(row.address);
        return Ok(Outcome::Added);
    }
    create_user(roles, actor, &row.address, credential, row.quota).await?;
    if row.enabled == Some(false) {
        let change = UserChange {
            enabled: Some(false),
            ..UserChange::default()
        };
        update_user(roles, actor, &row.address, change).await?;
    }
    Ok(Outcome::Added)
}

/// The part of `row` that differs from `current` (everything, when there is no current one).
fn effective_change(current: Option<&UserDetail>, row: AccountRow) -> UserChange {
    let mut quota = row.quota;
    let mut enabled = row.enabled;
    if let Some(u) = current {
        if quota.bytes == Some(u.quota.bytes) {
            quota.bytes = None;
        }
        if quota.messages == Some(u.quota.messages) {
            quota.messages = None;
        }
        if enabled == Some(u.enabled) {
            enabled = None;
        }
    }
    UserChange {
        quota,
        password: row.credential,
        enabled,
    }
}

/// The counts of an import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
}

impl Summary {
    /// The counts of `results`, with lines that could not be read counted as failed.
    pub fn of(results: &[RowResult], parse_errors: usize) -> Self {
        let mut s = Summary {
            failed: parse_errors as u64,
            ..Summary::default()
        };
        for r in results {
            match r.outcome {
                Outcome::Added => s.added += 1,
                Outcome::Updated => s.updated += 1,
                Outcome::Unchanged => s.unchanged += 1,
                Outcome::Failed(_) => s.failed += 1,
            }
        }
        s
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} added, {} updated, {} unchanged, {} failed",
            self.added, self.updated, self.unchanged, self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mailstore::{Admin, AuditFilter, Directory, Scope, SqliteStore};

    use super::*;

    const SHA512: &str = "{SHA512-CRYPT}$6$9mlBPIA4lBAqunqz$OphcjjEeVzXUgy2UtlHYZ.8BFPzRRjraKho4L5Wi4YfMVQFUSKphN.BpjyY3oIFV2IvS6D7Tjkyhduhmj8QHw1";

    fn d(s: &str) -> DomainName {
        DomainName::parse(s).expect("domain")
    }

    fn a(s: &str) -> Address {
        Address::parse(s).expect("address")
    }

    fn hash(h: &str) -> Option<Credential> {
        Some(Credential::Hash(h.into()))
    }

    /// The API and the pages run `apply` in handlers, which must be `Send`.
    #[allow(dead_code)]
    fn apply_is_send(roles: &Roles, actor: &Actor) {
        fn send<T: Send>(_: T) {}
        send(apply(roles, actor, Vec::new(), Options::default(), &|_| {}));
    }

    #[test]
    fn passwd_file_lines() {
        let text = format!(
            "# exported from dovecot\n\
             \n\
             john:{SHA512}:5000:5000::/home/john::userdb_quota_rule=*:storage=1G userdb_quota_rule2=*:messages=500\n\
             mary@example.com:{{PLAIN}} old pass \r\n\
             bob@example.com:{SHA512}::::::quota_rule=*:storage=0 userdb_mail=maildir:~/Maildir\n\
             nopass:\n\
             \x20  # indented comment\n\
             carl:{SHA512}:::::\n\
             big:{SHA512}::::::userdb_quota_rule=*:storage=3T:messages=0\n\
             kib:{SHA512}::::::userdb_quota_rule=*:storage=2048\n\
             raw:{SHA512}::::::userdb_quota_rule=*:bytes=2048\n"
        );
        let (rows, errors) = parse_passwd_file(&text, Some(&d("Example.com")));
        assert_eq!(errors, vec![]);
        let want = [
            (
                3,
                "john@example.com",
                hash(SHA512),
                Some(Some(1 << 30)),
                Some(Some(500)),
            ),
            (4, "mary@example.com", hash("{PLAIN} old pass "), None, None),
            (5, "bob@example.com", hash(SHA512), Some(None), None),
            (6, "nopass@example.com", None, None, None),
            (8, "carl@example.com", hash(SHA512), None, None),
            (
                9,
                "big@example.com",
                hash(SHA512),
                Some(Some(3 << 40)),
                Some(None),
            ),
            // Dovecot counts a bare `storage` in KiB, a bare `bytes` in bytes.
            (
                10,
                "kib@example.com",
                hash(SHA512),
                Some(Some(2 << 20)),
                None,
            ),
            (11, "raw@example.com", hash(SHA512), Some(Some(2048)), None),
        ];
        assert_eq!(rows.len(), want.len());
        for (row, (line, address, credential, bytes, messages)) in rows.iter().zip(want) {
            assert_eq!(row.line, line);
            assert_eq!(row.address, a(address));
            assert_eq!(row.credential, credential, "line {line}");
            assert_eq!(row.quota, QuotaChange { bytes, messages }, "line {line}");
            assert_eq!(row.enabled, None);
        }
    }

    #[test]
    fn passwd_file_errors_name_their_line() {
        let text = format!(
            "ok:{SHA512}\n\
             other@elsewhere.org:{SHA512}\n\
             bad name:{SHA512}\n\
             :{SHA512}\n\
             q1:{SHA512}::::::userdb_quota_rule=Trash:storage=+100M\n\
             q2:{SHA512}::::::userdb_quota_rule=*:storage=10%\n\
             q3:{SHA512}::::::quota_rule=*:storage=1X\n\
             q4:{SHA512}::::::quota_rule=*:flavour=1\n\
             q5:{SHA512}::::::quota_rule=*:storage=99999999999T\n"
        );
        let (rows, errors) = parse_passwd_file(&text, Some(&d("example.com")));
        assert_eq!(rows.len(), 1);
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            (2..=9).collect::<Vec<_>>()
        );
        assert!(
            errors[0].message.contains("not in domain example.com"),
            "{}",
            errors[0]
        );
        assert!(
            errors[4].to_string().starts_with("line 6: quota rule"),
            "{}",
            errors[4]
        );
        for e in &errors {
            assert!(!e.message.contains("$6$"), "a message quotes the hash: {e}");
        }
        // Without a domain a bare user name has none; addresses are fine.
        let (rows, errors) = parse_passwd_file(&text, None);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].address, a("other@elsewhere.org"));
        assert!(errors[0].message.contains("--domain"), "{}", errors[0]);
    }

    #[test]
    fn csv_columns_by_name() {
        let text = "\u{feff}Enabled, address ,quota_messages,password,password_hash,quota_bytes\n\
            true,john@example.com,10K,,{PLAIN}x,500M\n\
            false,mary@example.com,unlimited,typed pass,,\n\
            ,\"bob@example.com\",,,\"{SHA512-CRYPT}$6$a,b\",\n\
            \n\
            ,nopass@example.com,,,,\n";
        let (rows, errors) = parse_csv(text);
        assert_eq!(errors, vec![]);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].address, a("john@example.com"));
        assert_eq!(rows[0].credential, hash("{PLAIN}x"));
        assert_eq!(
            rows[0].quota,
            QuotaChange {
                bytes: Some(Some(500 << 20)),
                messages: Some(Some(10_000))
            }
        );
        assert_eq!(rows[0].enabled, Some(true));
        assert_eq!(
            rows[1].credential,
            Some(Credential::Password("typed pass".into()))
        );
        assert_eq!(
            rows[1].quota,
            QuotaChange {
                bytes: None,
                messages: Some(None)
            }
        );
        assert_eq!(rows[1].enabled, Some(false));
        assert_eq!(rows[2].credential, hash("{SHA512-CRYPT}$6$a,b"));
        assert_eq!((rows[3].line, rows[3].credential.clone()), (6, None));
    }

    #[test]
    fn csv_errors_name_their_line() {
        let text = "address,password_hash,password,quota_bytes,enabled\n\
            a@example.com,{PLAIN}x,typed,,\n\
            \"multi\nline\"@example.com,,,,\n\
            b@example.com,,,5T,\n\
            c@example.com,,,,yes\n\
            d@example.com,,\n\
            ,{PLAIN}x,,,\n\
            e@example.com,{PLAIN}x,,,\n";
        let (rows, errors) = parse_csv(text);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 9);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 5, 6, 7, 8], "{errors:?}");
        assert!(errors[0].message.contains("not both"));
        assert!(
            errors[2].message.starts_with("quota_bytes: "),
            "{}",
            errors[2]
        );
        assert!(
            errors[4]
                .message
                .contains("3 fields where the header has 5")
        );

        for (text, want) in [
            ("", "empty file"),
            ("address,pasword\n", "unknown column \"pasword\""),
            ("address,Address\n", "appears twice"),
            ("password\n", "no \"address\" column"),
        ] {
            let (rows, errors) = parse_csv(text);
            assert!(rows.is_empty());
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].line, 1);
            assert!(errors[0].message.contains(want), "{}", errors[0]);
        }
    }

    struct Env {
        roles: Roles,
        store: Arc<SqliteStore>,
        _dir: tempfile::TempDir,
    }

    async fn env() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("store.db"), Default::default(), true)
            .await
            .expect("open store");
        let store = Arc::new(store);
        for name in ["example.com", "other.org"] {
            store.add_domain(&d(name)).await.expect("add domain");
        }
        Env {
            roles: Roles::of(store.clone()),
            store,
            _dir: dir,
        }
    }

    fn row(line: usize, address: &str, credential: Option<Credential>) -> AccountRow {
        AccountRow {
            line,
            address: a(address),
            credential,
            quota: QuotaChange::default(),
            enabled: None,
        }
    }

    async fn run(env: &Env, actor: &Actor, rows: &[AccountRow], options: Options) -> Vec<Outcome> {
        let calls = AtomicUsize::new(0);
        let results = apply(&env.roles, actor, rows.to_vec(), options, &|n| {
            assert_eq!(calls.fetch_add(1, Ordering::SeqCst) + 1, n);
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), rows.len());
        for (r, row) in results.iter().zip(rows) {
            assert_eq!((r.line, &r.address), (row.line, &row.address));
        }
        results.into_iter().map(|r| r.outcome).collect()
    }

    async fn detail(env: &Env, address: &str) -> Option<UserDetail> {
        env.store.user_detail(&a(address)).await.expect("user")
    }

    fn failed(o: &Outcome, text: &str) -> bool {
        matches!(o, Outcome::Failed(m) if m.contains(text))
    }

    #[tokio::test]
    async fn rows_go_in_and_a_rerun_changes_nothing() {
        let env = env().await;
        let cli = Actor::cli();
        let mut quota_row = row(3, "quota@example.com", hash(SHA512));
        quota_row.quota.messages = Some(Some(100));
        let mut disabled = row(
            5,
            "off@other.org",
            Some(Credential::Password("long enough pass".into())),
        );
        disabled.enabled = Some(false);
        let rows = vec![
            row(1, "john@example.com", hash(SHA512)),
            row(2, "nopass@example.com", None),
            quota_row.clone(),
            row(4, "bad@example.com", hash("{DES-CRYPT}abcdefghijklm")),
            disabled,
            row(
                6,
                "short@example.com",
                Some(Credential::Password("x".into())),
            ),
            row(7, "x@nowhere.net", hash(SHA512)),
            row(8, "plain@example.com", hash("{PLAIN}old pass")),
        ];
        let first = run(&env, &cli, &rows, Options::default()).await;
        assert_eq!(first[0], Outcome::Added);
        assert!(failed(&first[1], "no password"), "{:?}", first[1]);
        assert_eq!(first[2], Outcome::Added);
        assert!(failed(&first[3], "too weak"), "{:?}", first[3]);
        assert_eq!(first[4], Outcome::Added);
        assert!(matches!(first[5], Outcome::Failed(_)), "{:?}", first[5]);
        assert!(
            failed(&first[6], "domain nowhere.net not found"),
            "{:?}",
            first[6]
        );
        assert_eq!(first[7], Outcome::Added);
        assert_eq!(
            Summary::of(
                &rows
                    .iter()
                    .zip(&first)
                    .map(|(r, o)| RowResult {
                        line: r.line,
                        address: r.address.clone(),
                        outcome: o.clone()
                    })
                    .collect::<Vec<_>>(),
                2
            )
            .to_string(),
            "4 added, 0 updated, 0 unchanged, 6 failed"
        );

        let john = detail(&env, "john@example.com").await.expect("john");
        assert_eq!(john.password_scheme.as_deref(), Some("SHA512-CRYPT"));
        assert_eq!(
            detail(&env, "quota@example.com")
                .await
                .expect("q")
                .quota
                .messages,
            Some(100)
        );
        assert!(!detail(&env, "off@other.org").await.expect("off").enabled);
        // {PLAIN} is hashed as pophost's own.
        assert_eq!(
            detail(&env, "plain@example.com")
                .await
                .expect("p")
                .password_scheme,
            None
        );
        for absent in ["nopass@example.com", "bad@example.com", "short@example.com"] {
            assert!(detail(&env, absent).await.is_none(), "{absent}");
        }
        let audit = env
            .store
            .audit_page(&Scope::All, &AuditFilter::default(), 0, 100)
            .await
            .expect("audit");
        let creates: Vec<_> = audit
            .items
            .iter()
            .filter(|e| e.action == "user.create")
            .collect();
        assert_eq!(creates.len(), 4);
        assert!(creates.iter().all(|e| e.actor == "cli"));

        // Again: the accounts that exist are left alone, with or without a quota in the row.
        let mut changed = quota_row.clone();
        changed.quota.messages = Some(Some(200));
        let again = run(
            &env,
            &cli,
            &[rows[0].clone(), changed.clone()],
            Options::default(),
        )
        .await;
        assert_eq!(again, vec![Outcome::Unchanged, Outcome::Unchanged]);
        assert_eq!(
            detail(&env, "quota@example.com")
                .await
                .expect("q")
                .quota
                .messages,
            Some(100)
        );

        // --update: only what differs; the same values are unchanged.
        let update = Options {
            update: true,
            ..Options::default()
        };
        let no_credential = AccountRow {
            credential: None,
            ..changed.clone()
        };
        let same = AccountRow {
            credential: None,
            ..changed.clone()
        };
        let out = run(&env, &cli, &[no_credential, same], update).await;
        assert_eq!(out, vec![Outcome::Updated, Outcome::Unchanged]);
        let q = detail(&env, "quota@example.com").await.expect("q");
        assert_eq!(q.quota.messages, Some(200));
        // The password was kept (a row without one does not clear it).
        assert_eq!(q.password_scheme.as_deref(), Some("SHA512-CRYPT"));
    }

    #[tokio::test]
    async fn a_dry_run_writes_nothing_and_says_what_would_happen() {
        let env = env().await;
        let cli = Actor::cli();
        run(
            &env,
            &cli,
            &[row(1, "there@example.com", hash(SHA512))],
            Options::default(),
        )
        .await;
        let audit_before = env
            .store
            .audit_page(&Scope::All, &AuditFilter::default(), 0, 100)
            .await
            .expect("audit")
            .total;
        env.roles
            .admin
            .update_domain(
                &d("other.org"),
                &mailstore::DomainSettings {
                    quota: mailstore::Quota::default(),
                    max_users: Some(1),
                    login_forms: mailstore::LoginForms::all(),
                    enabled: true,
                },
            )
            .await
            .expect("limit");
        let mut quota = row(2, "there@example.com", None);
        quota.quota.bytes = Some(Some(1 << 20));
        let rows = vec![
            row(1, "new@example.com", hash(SHA512)),
            quota,
            row(3, "new@example.com", hash(SHA512)),
            row(4, "first@other.org", hash(SHA512)),
            row(5, "second@other.org", hash(SHA512)),
            row(6, "bad@example.com", hash("{SHA512-CRYPT}$6$short")),
            row(7, "x@nowhere.net", hash(SHA512)),
        ];
        let dry = Options {
            dry_run: true,
            update: false,
        };
        let out = run(&env, &cli, &rows, dry).await;
        assert_eq!(
            out[..4],
            [
                Outcome::Added,
                Outcome::Unchanged,
                Outcome::Unchanged,
                Outcome::Added
            ]
        );
        assert!(failed(&out[4], "limit of 1 users"), "{:?}", out[4]);
        assert!(failed(&out[5], "malformed"), "{:?}", out[5]);
        assert!(failed(&out[6], "not found"), "{:?}", out[6]);
        let out = run(
            &env,
            &cli,
            &rows[..3],
            Options {
                dry_run: true,
                update: true,
            },
        )
        .await;
        assert_eq!(out, [Outcome::Added, Outcome::Updated, Outcome::Updated]);

        for absent in ["new@example.com", "first@other.org"] {
            assert!(detail(&env, absent).await.is_none(), "{absent}");
        }
        assert_eq!(
            detail(&env, "there@example.com")
                .await
                .expect("t")
                .quota
                .bytes,
            None
        );
        let audit_after = env
            .store
            .audit_page(&Scope::All, &AuditFilter::default(), 0, 100)
            .await
            .expect("audit")
            .total;
        assert_eq!(audit_before, audit_after);
    }

    #[tokio::test]
    async fn a_refused_quota_leaves_no_account_and_scope_applies() {
        let env = env().await;
        env.roles
            .directory
            .set_domain_quota(
                &d("example.com"),
                QuotaChange {
                    bytes: Some(Some(1 << 20)),
                    messages: None,
                },
            )
            .await
            .expect("domain quota");
        let mut big = row(1, "big@example.com", hash(SHA512));
        big.quota.bytes = Some(Some(1 << 30));
        let out = run(&env, &Actor::cli(), &[big], Options::default()).await;
        assert!(failed(&out[0], "inside the domain's"), "{:?}", out[0]);
        assert!(detail(&env, "big@example.com").await.is_none());

        // A domain admin of example.com: other.org looks absent, to dry runs too.
        let admin = Actor {
            id: None,
            name: "admin@example.com".into(),
            scope: Scope::Domains(vec![d("example.com")]),
            csrf: None,
            ip: None,
            flash: None,
        };
        let rows = [
            row(1, "mine@example.com", hash(SHA512)),
            row(2, "theirs@other.org", hash(SHA512)),
        ];
        for options in [
            Options {
                dry_run: true,
                update: false,
            },
            Options::default(),
        ] {
            let out = run(&env, &admin, &rows, options).await;
            assert_eq!(out[0], Outcome::Added);
            assert!(
                failed(&out[1], "domain other.org not found"),
                "{:?}",
                out[1]
            );
        }
        assert!(detail(&env, "theirs@other.org").await.is_none());
        let audit = env
            .store
            .audit_page(&Scope::All, &AuditFilter::default(), 0, 100)
            .await
            .expect("audit");
        assert!(
            audit
                .items
                .iter()
                .any(|e| e.actor == "admin@example.com" && e.action == "user.create")
        );
    }
}
