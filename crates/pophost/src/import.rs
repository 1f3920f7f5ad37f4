//! `pophost import maildir|mbox`: moving a customer's mail in from another server without
//! their leave-on-server POP3 clients downloading everything again. Each message keeps the
//! unique-id (UIDL) the old server showed, found in this order:
//!
//! 1. Dovecot's `dovecot-uidlist`: the `P` (pop3.uidl) extension field where Dovecot saved one,
//!    else the id Dovecot computes with `pop3_uidl_format` (default `%08Xu%08Xv`: the IMAP UID
//!    and the folder's UIDVALIDITY, 8 hex digits each, lower-case as Dovecot 2.3 writes them);
//! 2. an `X-UIDL:` header (qpopper, fetchmail and others leave one);
//! 3. none: the message gets a new id, as if delivered now.
//!
//! Parsing is pure (the functions below, unit-tested); the store does the rest in batches
//! (`Policies::import`): ids that break RFC 1939 are reported and the message stored under a
//! new one, and importing the same source again adds nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mailstore::{Address, ImportMessage, ImportOutcome, Store};
use sha2::Digest;

/// At most this many messages, or about this many octets, go to the store per transaction.
const BATCH_MESSAGES: usize = 500;
const BATCH_BYTES: usize = 16 << 20;

/// Dovecot's `pop3_uidl_format` default.
pub const DOVECOT_DEFAULT_UIDL_FORMAT: &str = "%08Xu%08Xv";

/// One entry of a `dovecot-uidlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidEntry {
    pub uid: u32,
    /// The `P` extension field: the POP3 UIDL Dovecot showed, when it saved one.
    pub pop3_uidl: Option<String>,
}

/// A parsed `dovecot-uidlist`: UIDVALIDITY and the entries by file base name (the part of a
/// Maildir file name before `:2,` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidList {
    pub uid_validity: u32,
    pub entries: HashMap<String, UidEntry>,
}

/// Parses a `dovecot-uidlist` of version 1 (`1 <uidvalidity> <nextuid>` then `<uid> <file>`)
/// or version 3 (`3 V<uidvalidity> N<nextuid> …` then `<uid> [<key><value> …] :<file>`).
pub fn parse_uidlist(text: &str) -> anyhow::Result<UidList> {
    let mut lines = text.lines();
    let header = lines.next().context("dovecot-uidlist is empty")?;
    let mut fields = header.split_ascii_whitespace();
    let version = fields.next().unwrap_or_default();
    let uid_validity = match version {
        "1" => fields.next().and_then(|v| v.parse().ok()),
        "3" => fields
            .find_map(|f| f.strip_prefix('V'))
            .and_then(|v| v.parse().ok()),
        other => bail!("dovecot-uidlist version {other:?} is not supported (1 and 3 are)"),
    }
    .context("dovecot-uidlist header has no UIDVALIDITY")?;
    let mut entries = HashMap::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("dovecot-uidlist line {}: {line:?}", n + 2);
        let (uid, rest) = line.split_once(' ').with_context(bad)?;
        let uid: u32 = uid.parse().ok().with_context(bad)?;
        let (exts, file) = if version == "3" {
            // The file name follows the first " :" (names never start with ':').
            match rest.split_once(':') {
                Some((exts, file)) => (exts, file),
                None => bail!("{}: no ':<file name>'", bad()),
            }
        } else {
            ("", rest)
        };
        let pop3_uidl = exts
            .split_ascii_whitespace()
            .find_map(|f| f.strip_prefix('P'))
            .map(str::to_string);
        entries.insert(
            base_name(file.trim()).to_string(),
            UidEntry { uid, pop3_uidl },
        );
    }
    Ok(UidList {
        uid_validity,
        entries,
    })
}

/// A Maildir file name without its `:2,<flags>` info part.
pub fn base_name(file: &str) -> &str {
    file.split_once(':').map_or(file, |(base, _)| base)
}

/// Formats a UIDL as Dovecot's `pop3_uidl_format` would, for the variables an import can know:
/// `%u` (IMAP UID), `%v` (UIDVALIDITY), `%f` (file base name), with Dovecot's modifiers
/// `X` (hex) and a zero-padded width (`%08Xu`). `%%` is a percent sign. Dovecot's `X` writes
/// lower-case digits (checked against Dovecot 2.3.19's own UIDL listing in tests/e2e/import.rs).
pub fn format_uidl(
    format: &str,
    uid: u32,
    uid_validity: u32,
    file: &str,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let hex = matches!(chars.peek(), Some('X' | 'x'));
        if hex {
            chars.next();
        }
        let width: usize = width.parse().unwrap_or(0);
        let number = |n: u32| {
            if hex {
                format!("{n:0width$x}")
            } else {
                format!("{n:0width$}")
            }
        };
        match chars.next() {
            Some('u') => out.push_str(&number(uid)),
            Some('v') => out.push_str(&number(uid_validity)),
            Some('f') => out.push_str(file),
            Some('%') => out.push('%'),
            other => bail!(
                "pop3_uidl_format {format:?}: %{} cannot be reproduced by an import (only %u, %v, %f)",
                other.map(String::from).unwrap_or_default()
            ),
        }
    }
    Ok(out)
}

/// The value of the first `X-UIDL:` header of `message`, if any (header section only).
pub fn x_uidl(message: &[u8]) -> Option<String> {
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if line.len() > 7 && line[..7].eq_ignore_ascii_case(b"X-UIDL:") {
            let value = String::from_utf8_lossy(&line[7..]).trim().to_string();
            return (!value.is_empty()).then_some(value);
        }
    }
    None
}

/// The message with every line ending as CRLF (POP3 sizes and RETR count CRLF; see README).
pub fn crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 30);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Splits an mbox into messages: each starts at a `From ` line (which is not part of it);
/// `>From ` quoting (mboxrd) loses one `>`.
pub fn split_mbox(data: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            messages.extend(current.take());
            current = Some(Vec::new());
            continue;
        }
        let Some(msg) = current.as_mut() else {
            continue; // text before the first From_ line is not a message
        };
        let quoted = line.iter().take_while(|&&b| b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            msg.extend_from_slice(&line[1..]);
        } else {
            msg.extend_from_slice(line);
        }
    }
    messages.extend(current);
    // The blank line that separates messages belongs to the mbox, not to the message.
    for m in &mut messages {
        if m.ends_with(b"\n\n") {
            m.pop();
        } else if m.ends_with(b"\r\n\r\n") {
            m.truncate(m.len() - 2);
        }
    }
    messages
}

/// Where an import reads from, one message at a time.
struct Source {
    key: String,
    path: Option<PathBuf>,
    /// For mbox messages (already read).
    data: Option<Vec<u8>>,
    /// The UIDL from the uidlist, if any (an `X-UIDL:` header is looked for when read).
    uid: Option<String>,
    /// Sort key: Dovecot shows messages in UID order.
    order: (u64, String),
}

/// The messages of a Maildir (`cur/` and `new/`), in the order Dovecot lists them.
fn maildir_sources(path: &Path, uidl_format: &str) -> anyhow::Result<Vec<Source>> {
    if !path.join("cur").is_dir() && !path.join("new").is_dir() {
        bail!(
            "{} is not a Maildir (it has no cur/ or new/)",
            path.display()
        );
    }
    let list = match std::fs::read_to_string(path.join("dovecot-uidlist")) {
        Ok(text) => Some(parse_uidlist(&text).context("reading dovecot-uidlist")?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading dovecot-uidlist"),
    };
    let mut sources = Vec::new();
    for sub in ["cur", "new"] {
        let dir = path.join(sub);
        if !dir.is_dir() {
            continue;
        }
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type()?.is_file() {
                continue;
            }
            let base = base_name(&name).to_string();
            let known = list
                .as_ref()
                .and_then(|l| l.entries.get(&base).map(|e| (l, e)));
            let uid = match known {
                Some((
                    _,
                    UidEntry {
                        pop3_uidl: Some(p), ..
                    },
                )) => Some(p.clone()),
                Some((l, e)) => Some(format_uidl(uidl_format, e.uid, l.uid_validity, &base)?),
                None => None,
            };
            let order = (
                known.map_or(u64::MAX, |(_, e)| u64::from(e.uid)),
                base.clone(),
            );
            sources.push(Source {
                key: format!("maildir:{base}"),
                path: Some(entry.path()),
                data: None,
                uid,
                order,
            });
        }
    }
    sources.sort_by(|a, b| a.order.cmp(&b.order));
    Ok(sources)
}

fn mbox_sources(file: &Path) -> anyhow::Result<Vec<Source>> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut seen: HashMap<String, u32> = HashMap::new();
    Ok(split_mbox(&data)
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            // Keyed by content (and how many identical ones came before), so the same mbox
            // imported again, or with mail appended, adds only what is new.
            let digest = hex(&sha2::Sha256::digest(&m));
            let n = seen.entry(digest.clone()).or_default();
            *n += 1;
            Source {
                key: format!("mbox:{digest}:{n}"),
                path: None,
                data: Some(m),
                uid: None,
                order: (i as u64, String::new()),
            }
        })
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `pophost import` prints at the end.
#[derive(Debug, Default)]
pub struct Report {
    pub added: u64,
    pub kept_uidl: u64,
    pub present: u64,
    pub renumbered: Vec<String>,
}

impl Report {
    pub fn render(&self, address: &Address, secs: f64) -> String {
        let mut out = format!(
            "imported {} message(s) into {address} ({} with their old UIDL), {} already there, {} renumbered; {:.1} s",
            self.added,
            self.kept_uidl,
            self.present,
            self.renumbered.len(),
            secs,
        );
        for line in &self.renumbered {
            out.push('\n');
            out.push_str(line);
        }
        out
    }
}

pub enum Input<'a> {
    Maildir {
        path: &'a Path,
        uidl_format: &'a str,
    },
    Mbox {
        file: &'a Path,
    },
}

/// Imports into `address`, with a progress bar on standard error.
pub async fn run(store: &dyn Store, input: Input<'_>, address: &Address) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let user = store
        .find_recipient(address)
        .await?
        .with_context(|| format!("no such user {address}"))?;
    let sources = match input {
        Input::Maildir { path, uidl_format } => maildir_sources(path, uidl_format)?,
        Input::Mbox { file } => mbox_sources(file)?,
    };
    let bar = indicatif::ProgressBar::new(sources.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} messages  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut report = Report::default();
    let mut batch: Vec<ImportMessage> = Vec::new();
    let mut bytes = 0usize;
    let count = sources.len();
    for (i, source) in sources.into_iter().enumerate() {
        let raw = match (source.data, &source.path) {
            (Some(data), _) => data,
            (None, Some(path)) => {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            }
            (None, None) => continue,
        };
        let uid = source.uid.or_else(|| x_uidl(&raw));
        let data = crlf(&raw);
        bytes += data.len();
        batch.push(ImportMessage {
            key: source.key,
            uid,
            data,
        });
        if batch.len() >= BATCH_MESSAGES || bytes >= BATCH_BYTES || i + 1 == count {
            let outcomes = store.import(user, &batch).await?;
            for (m, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    ImportOutcome::Added { .. } => {
                        report.added += 1;
                        report.kept_uidl += u64::from(m.uid.is_some());
                    }
                    ImportOutcome::Present => report.present += 1,
                    ImportOutcome::Renumbered { old, uid, reason } => {
                        report.added += 1;
                        report.renumbered.push(format!(
                            "{}: UIDL {old:?} {reason}; stored as {uid} (clients will download it again)",
                            m.key
                        ));
                    }
                }
            }
            bar.inc(batch.len() as u64);
            batch.clear();
            bytes = 0;
        }
    }
    bar.finish_and_clear();
    Ok(report.render(address, started.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_uidlist_v3_with_pop3_uidl() {
        let text = "3 V1700000000 N4 G0123456789abcdef\n\
                    1 :1700000001.M1P2.host\n\
                    2 W1234 S1200 :1700000002.M3P4.host:2,S\n\
                    3 P0000abcd-old GABCDEF :1700000003.M5P6.host\n";
        let list = parse_uidlist(text).expect("parse");
        assert_eq!(list.uid_validity, 1_700_000_000);
        assert_eq!(list.entries["1700000001.M1P2.host"].uid, 1);
        assert_eq!(list.entries["1700000002.M3P4.host"].uid, 2);
        assert_eq!(
            list.entries["1700000003.M5P6.host"].pop3_uidl.as_deref(),
            Some("0000abcd-old")
        );
        assert!(parse_uidlist("2 V1 N1\n").is_err());
        assert!(parse_uidlist("3 V1 N2\nx :file\n").is_err());
    }

    #[test]
    fn dovecot_uidlist_v1() {
        let list = parse_uidlist("1 1234 3\n1 111.a.host\n2 112.b.host:2,S\n").expect("parse");
        assert_eq!(list.uid_validity, 1234);
        assert_eq!(list.entries["112.b.host"].uid, 2);
    }

    #[test]
    fn uidl_formats() {
        assert_eq!(
            format_uidl(DOVECOT_DEFAULT_UIDL_FORMAT, 1, 0x6553_f100, "f").expect("format"),
            "000000016553f100"
        );
        assert_eq!(format_uidl("%u.%v", 7, 9, "f").expect("f"), "7.9");
        assert_eq!(format_uidl("%xv-%f%%", 7, 255, "n").expect("f"), "ff-n%");
        assert!(format_uidl("%m", 1, 1, "f").is_err());
    }

    #[test]
    fn x_uidl_header_only_in_the_header() {
        assert_eq!(
            x_uidl(b"Subject: a\r\nx-uidl:  abc123 \r\n\r\nbody").as_deref(),
            Some("abc123")
        );
        assert_eq!(x_uidl(b"Subject: a\n\nX-UIDL: body\n"), None);
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"no newline"), b"no newline");
    }

    #[test]
    fn mbox_split_and_unquote() {
        let mbox = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: 1\n\nhi\n>From here\n\nFrom c@d Tue Jan  2 00:00:00 2024\nSubject: 2\n\nthere\n";
        let m = split_mbox(mbox);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], b"Subject: 1\n\nhi\nFrom here\n");
        assert_eq!(m[1], b"Subject: 2\n\nthere\n");
    }
}
