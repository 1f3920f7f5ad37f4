//! The command line: `serve`, and provisioning (`domain …`, `user …`, `admin …`) against the
//! same store. Every change goes through `admin_web::provision` as the actor `cli`, so it is
//! checked and audited exactly as the same change made in the admin UI or the API.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use admin_web::provision::{self, Credential, DomainChange, PolicyChange, Unit, UserChange};
use admin_web::{Actor, PasswordFor};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use mailstore::{Address, Directory, DomainName, LoginForms, Quota, QuotaChange};

use crate::config::{Overrides, Settings};

#[derive(Debug, Parser)]
#[command(name = "pophost", version, about = "Multi-tenant hosted POP3 service")]
pub struct Cli {
    /// Config file (TOML); see deploy/pophost.example.toml.
    #[arg(long, global = true, env = "POPHOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store (default ./pophost-data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the POP3 and LMTP services.
    Serve {
        /// POP3 listen address (default 127.0.0.1:1110).
        #[arg(long)]
        pop3_listen: Option<SocketAddr>,
        /// POP3S (implicit TLS) listen address (default 127.0.0.1:1995).
        #[arg(long)]
        pop3s_listen: Option<SocketAddr>,
        /// LMTP listen address (default 127.0.0.1:2424).
        #[arg(long)]
        lmtp_listen: Option<SocketAddr>,
        /// Admin UI and API listen address (default 127.0.0.1:8080).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// SMTP AUTH service for the MTA (Dovecot authentication protocol) on this TCP address
        /// (default off; `sasl_service.listen`).
        #[arg(long)]
        sasl_listen: Option<SocketAddr>,
        /// Postfix socketmap lookups (hosted domains and mailboxes) on this TCP address (default
        /// off; `postfix.socketmap_listen`).
        #[arg(long)]
        socketmap_listen: Option<SocketAddr>,
        /// Postfix quota policy service on this TCP address (default off;
        /// `postfix.policy_listen`).
        #[arg(long)]
        policy_listen: Option<SocketAddr>,
        /// Do not apply pending schema migrations at start (run `pophost migrate` instead).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending schema migrations to the configured database, then exit; or, as
    /// `migrate pop3`, copy mailboxes in from an old POP3 server.
    Migrate {
        #[command(subcommand)]
        from: Option<crate::pull::MigrateCommand>,
    },
    /// Manage domains.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Manage users (mailboxes).
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect logins.
    #[command(subcommand)]
    Login(LoginCommand),
    /// Manage admin UI accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Post notices into every mailbox of a domain or of all domains; list them.
    #[command(subcommand)]
    Bulletin(crate::bulletins::BulletinCommand),
    /// Import existing mail into a mailbox, keeping its POP3 unique-ids (UIDLs).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Run the retention job once now (serve runs it every retention.interval_secs).
    Expire {
        /// Act as if it were this Unix time in milliseconds (for trying a policy out).
        #[arg(long)]
        now_ms: Option<i64>,
        /// Messages deleted per transaction (default retention.batch_size).
        #[arg(long)]
        batch_size: Option<u32>,
    },
    /// List the POP3 sessions holding a maildrop, on every frontend of the store.
    Who,
    /// End USER@DOMAIN's POP3 session: its lock is broken, and the frontend holding it ends
    /// the session with -ERR [SYS/TEMP] within a third of locks.ttl_secs, deleting nothing.
    Kick { address: String },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a Maildir (cur/ and new/), with UIDLs from Dovecot's dovecot-uidlist or X-UIDL.
    Maildir {
        path: PathBuf,
        /// The mailbox to import into: USER@DOMAIN.
        #[arg(long)]
        user: String,
        /// The old Dovecot's pop3_uidl_format, for messages without a saved UIDL
        /// (%u, %v, %f with Dovecot's modifiers).
        #[arg(long, default_value = crate::import::DOVECOT_DEFAULT_UIDL_FORMAT)]
        uidl_format: String,
    },
    /// Import an mbox file, with UIDLs from X-UIDL headers.
    Mbox {
        file: PathBuf,
        /// The mailbox to import into: USER@DOMAIN.
        #[arg(long)]
        user: String,
    },
    /// Create many accounts at once, with the password hashes the old server stored.
    #[command(subcommand)]
    Accounts(crate::accounts::AccountsCommand),
}

/// `domain set` flags for the mailbox policies (issue 6).
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Over quota, answer 452 4.2.2 (retry later) instead of 552 5.2.2 (bounce).
    #[arg(long, value_name = "true|false")]
    quota_tempfail: Option<bool>,
    /// Usage (percent of a user's quota) that delivers a one-time warning ("off": none).
    #[arg(long, value_name = "PERCENT|off", value_parser = parse_optional_number)]
    quota_warn_percent: Option<Limit>,
    /// Delete messages older than this many days ("never": keep them); CAPA shows EXPIRE.
    #[arg(long, value_name = "DAYS|never", value_parser = parse_optional_number)]
    retention_days: Option<Limit>,
    /// Refuse logins sooner than this after the last one ("none"); CAPA shows LOGIN-DELAY.
    #[arg(long, value_name = "SECONDS|none", value_parser = parse_optional_number)]
    login_delay: Option<Limit>,
}

fn parse_optional_number(s: &str) -> Result<Limit, String> {
    if ["never", "none", "off"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
    {
        return Ok(Limit(None));
    }
    s.parse::<u64>()
        .map(|n| Limit(Some(n)))
        .map_err(|_| format!("{s:?} is not a number, \"never\", \"none\" or \"off\""))
}

impl PolicyArgs {
    fn change(&self) -> anyhow::Result<PolicyChange> {
        let small = |l: Limit, what: &str| -> anyhow::Result<Option<u32>> {
            l.0.map(|n| u32::try_from(n).with_context(|| format!("{what} {n} is too large")))
                .transpose()
        };
        Ok(PolicyChange {
            quota_tempfail: self.quota_tempfail,
            quota_warn_percent: self
                .quota_warn_percent
                .map(|l| {
                    l.0.map(|n| u8::try_from(n).context("--quota-warn-percent must be 1-100"))
                        .transpose()
                })
                .transpose()?,
            retention_days: self
                .retention_days
                .map(|l| small(l, "--retention-days"))
                .transpose()?,
            login_delay_secs: self
                .login_delay
                .map(|l| small(l, "--login-delay"))
                .transpose()?,
        })
    }
}

fn show_policies(p: &mailstore::DomainPolicies) -> String {
    let f = |v: Option<u32>, none: &str| v.map_or(none.to_string(), |n| n.to_string());
    format!(
        "quota_tempfail={} quota_warn_percent={} retention_days={} login_delay={}",
        p.quota_tempfail,
        f(p.quota_warn_percent.map(u32::from), "off"),
        f(p.retention_days, "never"),
        f(p.login_delay_secs, "none"),
    )
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Add an admin: a super admin (--super) or the admin of one or more domains (--domain).
    Add {
        email: String,
        /// Super admin: every domain, and the service-wide pages.
        #[arg(
            long = "super",
            conflicts_with = "domain",
            required_unless_present = "domain"
        )]
        super_admin: bool,
        /// A domain this admin manages (repeat for several).
        #[arg(long)]
        domain: Vec<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List admins: role, domains, status, last sign-in, API tokens.
    List,
    /// Change an admin's role (--super or --domains) and/or disable or enable them. Disabling
    /// ends their sessions and revokes their API tokens.
    Set {
        email: String,
        /// Make them a super admin.
        #[arg(long = "super", conflicts_with = "domains")]
        super_admin: bool,
        /// Make them the admin of these domains (comma-separated).
        #[arg(long, value_delimiter = ',')]
        domains: Option<Vec<String>>,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Set an admin's password, read from the first line of standard input; their sessions end
    /// and their API tokens are revoked.
    Passwd { email: String },
    /// Remove an admin with their sessions and API tokens.
    Remove { email: String },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Add a domain.
    Add { domain: String },
    /// List domains with their quotas and usage.
    List,
    /// Remove a domain (refused while it has users, unless --force).
    Remove {
        domain: String,
        /// Also remove the domain's users and all their mail.
        #[arg(long)]
        force: bool,
    },
    /// Set the domain's quotas and login forms.
    Set {
        domain: String,
        #[command(flatten)]
        quota: QuotaArgs,
        /// Login forms the domain accepts: a comma list of at (john@example.com), percent
        /// (john%example.com), plus (john+example.com), bare (john), or all.
        #[arg(long)]
        login_forms: Option<String>,
        /// Whether the domain's users may log in with APOP (RFC 1939 §7; weak, off by default).
        #[arg(long, value_name = "true|false")]
        allow_apop: Option<bool>,
        /// Most users the domain may have (10K is 10,000; "unlimited" removes the limit).
        #[arg(long, value_parser = parse_limit_count)]
        max_users: Option<Limit>,
        /// Whether the domain's users may log in (mail is delivered either way).
        #[arg(long, value_name = "true|false")]
        enabled: Option<bool>,
        /// Migration mode: the old POP3 server (pop3s://HOST[:PORT], or pop3://HOST[:PORT]
        /// with STLS) checks the password of a user not moved yet at their first login, and
        /// their mail is copied from it. "none" ends migration mode.
        #[arg(long, value_name = "URL|none")]
        migrate_from: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Days a deleted message stays in its user's recycle bin (default 7; 0 turns it off).
        #[arg(long, value_name = "N")]
        bin_days: Option<u32>,
        /// Whether messages in the recycle bin count against quota (default false).
        #[arg(long, value_name = "true|false")]
        bin_counts_quota: Option<bool>,
        /// Whether the domain's users may sign in to the self-service page (/me on the admin
        /// listener) with their address and password (default false).
        #[arg(long, value_name = "true|false")]
        self_service: Option<bool>,
        /// Whether only app passwords log in over POP3 and the MTA's auth service; the main
        /// password then signs in to the self-service page only (default false).
        #[arg(long, value_name = "true|false")]
        app_passwords_only: Option<bool>,
    },
    /// Manage domain aliases (another name of a domain, for logins and deliveries).
    #[command(subcommand)]
    Alias(AliasCommand),
    /// OAuth 2.0 sign-in: the identity provider whose bearer tokens log the domain's users in
    /// (POP3 and SMTP AUTH: OAUTHBEARER, XOAUTH2).
    #[command(subcommand)]
    Oauth(OAuthCommand),
    /// Add N users sharing one password, with M generated messages each, stored as LMTP
    /// stores mail (a staging system of realistic size, or a benchmark).
    Generate(crate::generate::GenerateArgs),
}

#[derive(Debug, Subcommand)]
pub enum OAuthCommand {
    /// Set (or replace) the domain's identity provider.
    Set {
        domain: String,
        /// The `iss` a token must carry, exactly.
        #[arg(long)]
        issuer: String,
        /// Where the provider publishes its signing keys (JWKS), fetched and cached.
        #[arg(
            long,
            value_name = "URL",
            conflicts_with = "jwks_file",
            required_unless_present = "jwks_file"
        )]
        jwks_url: Option<String>,
        /// A JWKS file on this server instead (absolute path; read at each login).
        #[arg(long, value_name = "PATH")]
        jwks_file: Option<String>,
        /// A value the token's `aud` must contain.
        #[arg(long)]
        audience: String,
        /// The claim naming the mailbox.
        #[arg(long, default_value = mailstore::DEFAULT_CLAIM)]
        claim: String,
        /// Accepted signature algorithms (a comma list of RS256, ES256, EdDSA).
        #[arg(long, default_value = "RS256,ES256,EdDSA")]
        algorithms: String,
    },
    /// Show the domain's settings.
    Show { domain: String },
    /// Turn OAuth off for the domain.
    Clear { domain: String },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Make ALIAS another name of DOMAIN.
    Add { alias: String, domain: String },
    /// Remove an alias.
    Remove { alias: String },
    /// List aliases with their domains.
    List,
}

#[derive(Debug, Subcommand)]
pub enum LoginCommand {
    /// Show how a login resolves to a mailbox, without checking a password.
    Explain {
        login: String,
        /// The local address the client connects to (for a bare login's default domain).
        #[arg(long)]
        listener: Option<std::net::IpAddr>,
        /// The TLS server name the client asks for.
        #[arg(long)]
        sni: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user: USER@DOMAIN.
    Add {
        address: String,
        #[command(flatten)]
        password: MailboxPasswordArgs,
    },
    /// List a domain's users with their quotas and usage.
    List { domain: String },
    /// Show a user: quotas, usage, whether enabled, the password's scheme.
    Show {
        address: String,
        /// Print the API's JSON instead of lines of `key: value`.
        #[arg(long)]
        json: bool,
    },
    /// Change a user's password.
    Passwd {
        address: String,
        #[command(flatten)]
        password: MailboxPasswordArgs,
    },
    /// Remove a user and all their mail.
    Remove { address: String },
    /// Set the user's quotas, or enable/disable the account.
    Set {
        address: String,
        #[command(flatten)]
        quota: QuotaArgs,
        /// Whether the user may log in (mail is delivered either way).
        #[arg(long, value_name = "true|false")]
        enabled: Option<bool>,
    },
    /// Set or clear the user's APOP secret (stored encrypted under auth.apop_key_file).
    Apop {
        address: String,
        #[command(flatten)]
        secret: ApopSecretArgs,
    },
    /// The user's recycle bin: messages deleted over POP3, by retention or by an admin.
    #[command(subcommand)]
    Bin(BinCommand),
    /// The user's app passwords: one per device, each revocable alone.
    #[command(subcommand, name = "app-password")]
    AppPassword(crate::app_passwords::AppPasswordCommand),
    /// The user's protocol trace: their POP3 commands and first reply lines, for a while.
    #[command(subcommand)]
    Trace(crate::traces::TraceCommand),
}

#[derive(Debug, Subcommand)]
pub enum BinCommand {
    /// One line per message: UIDL, size, when deleted, by whom (newest first).
    List { address: String },
    /// Put messages back into the maildrop, with their UIDL (POP3 clients that deleted them
    /// do not fetch them again) unless --as-new.
    Restore {
        address: String,
        #[command(flatten)]
        which: BinWhich,
        /// Give the messages new UIDLs, so POP3 clients fetch them again.
        #[arg(long)]
        as_new: bool,
    },
    /// Delete everything in the user's bin for good.
    Purge { address: String },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
pub struct BinWhich {
    /// Everything in the bin.
    #[arg(long, conflicts_with_all = ["uidl", "from", "to"])]
    all: bool,
    /// The messages that had these UIDLs.
    #[arg(long, num_args = 1.., conflicts_with_all = ["from", "to"])]
    uidl: Vec<String>,
    /// Deleted from this time on (UTC: YYYY-MM-DD[ HH:MM[:SS]], or Unix milliseconds).
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Deleted up to this time.
    #[arg(long, requires = "from")]
    to: Option<String>,
}

impl BinWhich {
    fn selection(&self) -> anyhow::Result<mailstore::BinSelection> {
        use mailstore::BinSelection;
        Ok(match (&self.from, &self.to) {
            (Some(from), Some(to)) => BinSelection::DeletedBetween {
                from_ms: provision::when::parse_time(from)?,
                to_ms: provision::when::parse_time(to)?,
            },
            _ if self.all => BinSelection::All,
            _ if !self.uidl.is_empty() => BinSelection::Uids(self.uidl.clone()),
            _ => bail!("give --all, --uidl UIDL… or --from TIME --to TIME"),
        })
    }
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ApopSecretArgs {
    /// The secret (visible to other local users in the process list: prefer --secret-stdin).
    #[arg(long)]
    secret: Option<String>,
    /// Read the secret from the first line of standard input.
    #[arg(long)]
    secret_stdin: bool,
    /// Remove the user's APOP secret.
    #[arg(long)]
    clear: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PasswordArgs {
    /// The password (visible to other local users in the process list: prefer --password-stdin).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// A mailbox password: typed, or the hash the old server stored.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct MailboxPasswordArgs {
    /// The password (visible to other local users in the process list: prefer --password-stdin).
    #[arg(long)]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The password hash another server stored, in Dovecot's {SCHEME} form or as a bare crypt
    /// string ($6$…, $2y$…): the user keeps their password; the first login replaces the hash
    /// with argon2id.
    #[arg(long, value_name = "HASH")]
    password_hash: Option<String>,
}

#[derive(Debug, Args)]
#[group(multiple = true)]
pub struct QuotaArgs {
    /// Storage limit in bytes (suffixes K, M, G are powers of 1024: 500M; "unlimited" removes
    /// the limit).
    #[arg(long, value_parser = parse_limit_bytes)]
    quota_bytes: Option<Limit>,
    /// Message-count limit (suffixes K, M, G are powers of 1000: 10K; "unlimited" removes the
    /// limit).
    #[arg(long, value_parser = parse_limit_count)]
    quota_messages: Option<Limit>,
}

/// A limit from the command line: a number, or no limit (`None`).
#[derive(Debug, Clone, Copy)]
pub struct Limit(Option<u64>);

/// A byte limit, read by the one limit parser the admin UI and the API use.
fn parse_limit_bytes(s: &str) -> Result<Limit, String> {
    provision::parse_limit(s, Unit::Bytes)
        .map(Limit)
        .map_err(|e| e.to_string())
}

/// A count limit (messages, users), read by the one limit parser.
fn parse_limit_count(s: &str) -> Result<Limit, String> {
    provision::parse_limit(s, Unit::Count)
        .map(Limit)
        .map_err(|e| e.to_string())
}

impl QuotaArgs {
    fn change(&self) -> QuotaChange {
        QuotaChange {
            bytes: self.quota_bytes.map(|l| l.0),
            messages: self.quota_messages.map(|l| l.0),
        }
    }
}

/// The password given on the command line, else the first line of standard input.
fn given_or_stdin(given: &Option<String>) -> anyhow::Result<String> {
    Ok(match given {
        Some(p) => p.clone(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    })
}

impl PasswordArgs {
    /// The new password, checked against the policy the admin UI applies to a `kind` account.
    fn read(&self, kind: PasswordFor) -> anyhow::Result<String> {
        let password = given_or_stdin(&self.password)?;
        admin_web::password_problem(&password, kind)?;
        Ok(password)
    }
}

impl MailboxPasswordArgs {
    /// The credential; provisioning checks it (the password policy, the hash's scheme).
    fn read(&self) -> anyhow::Result<Credential> {
        Ok(match &self.password_hash {
            Some(hash) => Credential::Hash(hash.clone()),
            None => Credential::Password(given_or_stdin(&self.password)?),
        })
    }
}

impl ApopSecretArgs {
    /// The new secret, or `None` for `--clear`.
    fn read(&self) -> anyhow::Result<Option<String>> {
        if self.clear {
            return Ok(None);
        }
        let secret = match &self.secret {
            Some(s) => s.clone(),
            None => {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the APOP secret from standard input")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        if secret.is_empty() {
            bail!("the APOP secret is empty");
        }
        Ok(Some(secret))
    }
}

/// `pophost login explain`: each step of resolving a login, one per line.
async fn explain(
    dir: &dyn Directory,
    login: &str,
    defaults: &tenancy::DefaultDomains,
    ctx: &tenancy::LoginContext,
) -> anyhow::Result<String> {
    use tenancy::Resolution;
    let form = |l: &tenancy::Login| format!("form: {}", l.form.name());
    // How the name was normalised (NFC, lower case, U-label to A-label), then where it leads.
    let steps = tenancy::normalisation_steps(login).join("\n");
    let resolution = match tenancy::resolve(dir, login, defaults, ctx).await? {
        Resolution::Malformed => format!("{login:?}: not a login any form accepts"),
        Resolution::NoDomain(l) => format!(
            "{}\nmailbox: {} (bare login)\nno domain: the connection gives no TLS server name and its address has no auth.default_domains entry",
            form(&l),
            l.local
        ),
        Resolution::UnknownDomain(l, d) => {
            format!("{}\ndomain: {d}\nno such domain or alias", form(&l))
        }
        Resolution::FormNotAllowed(l, d) => format!(
            "{}\ndomain: {d}\nrefused: {d} does not accept {} logins",
            form(&l),
            l.form.name()
        ),
        Resolution::Mailbox {
            login: l,
            address,
            via_alias,
            ..
        } => {
            let via = via_alias.map_or(String::new(), |a| format!(" (via alias {a})"));
            let exists = if dir.find_user(&address).await?.is_some() {
                "exists"
            } else {
                "does not exist"
            };
            format!("{}\nmailbox: {address}{via}\nuser {exists}", form(&l))
        }
    };
    Ok(format!("{steps}\n{resolution}"))
}

fn show_quota(q: Quota) -> String {
    let f = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    format!(
        "quota_bytes={} quota_messages={}",
        f(q.bytes),
        f(q.messages)
    )
}

/// `pophost user show`: one `key: value` line per field of the API's user.
fn show_user(user: &admin_web::provision::UserJson) -> String {
    let limit = |l: Option<u64>| l.map_or("unlimited".to_string(), |n| n.to_string());
    format!(
        "address: {}\nenabled: {}\nquota_bytes: {}\nquota_messages: {}\nused_bytes: {}\n\
         used_messages: {}\npassword_scheme: {}\ncreated_at: {}",
        user.address,
        user.enabled,
        limit(user.quota_bytes),
        limit(user.quota_messages),
        user.used_bytes,
        user.used_messages,
        user.password_scheme,
        user.created_at
    )
}

/// `pophost user show`, after the user: the last login and delivery, and the last 30 days.
fn show_activity(a: &mailstore::UserActivity) -> String {
    use admin_web::pages::human_time;
    let last_login = a.last_login.as_ref().map_or("never".to_string(), |l| {
        format!(
            "{} from {} ({}, {})",
            human_time(l.at),
            l.ip.as_deref().unwrap_or("unknown"),
            l.mechanism,
            if l.tls { "TLS" } else { "no TLS" }
        )
    });
    let days = mailstore::ACTIVITY_DAYS;
    format!(
        "last_login: {last_login}\nlast_delivery: {}\nretrieved_{days}d: messages={} bytes={}\n\
         deleted_{days}d: messages={} bytes={}",
        a.last_delivery.map_or("never".to_string(), human_time),
        a.retrieved.messages,
        a.retrieved.octets,
        a.deleted.messages,
        a.deleted.octets
    )
}

/// `pophost who`: one line per live session, oldest first.
async fn who(store: &dyn mailstore::Store) -> anyhow::Result<String> {
    let mut sessions = store.live_sessions(&mailstore::Scope::All).await?;
    sessions.sort_by_key(|s| s.since);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let width = sessions
        .iter()
        .map(|s| s.address.to_string().len())
        .max()
        .unwrap_or(0)
        .max("ADDRESS".len());
    let mut out = format!("{:width$}  {:16}  FOR", "ADDRESS", "NODE");
    for s in &sessions {
        let secs = (now - s.since).max(0) / 1000;
        let age = match secs {
            s if s < 60 => format!("{s}s"),
            s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
            s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        };
        out.push_str(&format!(
            "\n{:width$}  {:16}  {age}",
            s.address.to_string(),
            s.node
        ));
    }
    out.push_str(&format!("\n{} session(s)", sessions.len()));
    Ok(out)
}

/// Runs a provisioning command; returns what to print.
pub async fn provision(settings: &Settings, command: Command) -> anyhow::Result<String> {
    // Provisioning may be the first thing run against a new SQLite file: bring the schema up.
    let store = crate::open_store(settings, true).await?;
    let dir: &dyn Directory = &*store;
    let roles = admin_web::Roles::of(store.clone());
    let cli = Actor::cli();
    let out = match command {
        Command::Serve { .. } => bail!("serve is not a provisioning command"),
        Command::Migrate { from: None } => "database schema is up to date".to_string(),
        Command::Migrate {
            from: Some(crate::pull::MigrateCommand::Pop3(args)),
        } => crate::pull::run(store.clone(), args).await?,
        Command::Admin(AdminCommand::Add {
            email,
            super_admin,
            domain,
            password,
        }) => {
            let email = email.trim().to_ascii_lowercase();
            Address::parse(&email).context("the admin's e-mail address")?;
            let scope = if super_admin {
                mailstore::Scope::All
            } else {
                mailstore::Scope::Domains(
                    domain
                        .iter()
                        .map(|d| DomainName::parse(d))
                        .collect::<Result<_, _>>()?,
                )
            };
            let password = password.read(PasswordFor::Admin)?;
            provision::create_admin(&roles, &cli, &email, password, &scope).await?;
            match scope {
                mailstore::Scope::All => format!("added super admin {email}"),
                mailstore::Scope::Domains(d) => format!(
                    "added admin {email} of {}",
                    d.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        Command::Admin(command) => admin(&roles, &cli, command).await?,
        Command::Bulletin(command) => crate::bulletins::command(&roles, &cli, command).await?,
        Command::Who => who(&*store).await?,
        Command::Kick { address } => {
            let address = Address::parse(&address)?;
            let was_locked = store.break_lock(&address).await?;
            store
                .record_audit(&mailstore::AuditEntry {
                    at: 0,
                    actor: "cli".into(),
                    action: "session.end".into(),
                    object: address.to_string(),
                    domain: Some(address.domain.clone()),
                    before: None,
                    after: None,
                    ip: None,
                    success: was_locked,
                })
                .await?;
            if !was_locked {
                bail!("{address} has no POP3 session");
            }
            format!(
                "ended {address}'s session: its frontend closes it at the next lease renewal, deleting nothing"
            )
        }
        Command::Domain(DomainCommand::Add { domain }) => {
            let domain = DomainName::parse(&domain)?;
            provision::create_domain(&roles, &cli, &domain, &DomainChange::default()).await?;
            format!("added domain {domain}")
        }
        Command::Domain(DomainCommand::List) => {
            let mut out = String::new();
            for d in dir.list_domains().await? {
                let policies = store.domain_policies(&d.name).await?;
                let detail = provision::domain(&roles, &cli, &d.name).await?;
                let migration = detail.migrate_from.map_or(String::new(), |url| {
                    format!(
                        " migrating: {} of {} users moved from {url}",
                        detail.migrated_users, detail.users
                    )
                });
                out.push_str(&format!(
                    "{} users={} messages={} bytes={} {} {}{migration}\n",
                    d.name,
                    d.users,
                    d.usage.messages,
                    d.usage.bytes,
                    show_quota(d.quota),
                    show_policies(&policies),
                ));
            }
            out.trim_end().to_string()
        }
        Command::Domain(DomainCommand::Remove { domain, force }) => {
            let domain = DomainName::parse(&domain)?;
            provision::delete_domain(&roles, &cli, &domain, force).await?;
            format!("removed domain {domain}")
        }
        Command::Domain(DomainCommand::Set {
            domain,
            quota,
            login_forms,
            allow_apop,
            max_users,
            enabled,
            migrate_from,
            policy,
            bin_days,
            bin_counts_quota,
            self_service,
            app_passwords_only,
        }) => {
            let domain = DomainName::parse(&domain)?;
            let change = DomainChange {
                quota: quota.change(),
                max_users: max_users.map(|l| l.0),
                login_forms: login_forms.as_deref().map(LoginForms::parse).transpose()?,
                allow_apop,
                enabled,
                migrate_from: migrate_from.map(|url| (url != "none").then_some(url)),
                bin_days,
                bin_counts_quota,
                self_service,
                app_passwords_only,
            };
            let policy = policy.change()?;
            if change.is_empty() && policy.is_empty() {
                bail!(
                    "nothing to set: give --quota-bytes, --quota-messages, --login-forms, --allow-apop, --max-users, --enabled, --migrate-from, --quota-tempfail, --quota-warn-percent, --retention-days, --login-delay, --bin-days, --bin-counts-quota or --self-service"
                );
            }
            if !policy.is_empty() {
                provision::update_policies(&roles, &cli, &domain, &policy).await?;
            }
            if !change.is_empty() {
                provision::update_domain(&roles, &cli, &domain, &change).await?;
            }
            format!("updated domain {domain}")
        }
        Command::Domain(DomainCommand::Alias(AliasCommand::Add { alias, domain })) => {
            let (alias, domain) = (DomainName::parse(&alias)?, DomainName::parse(&domain)?);
            provision::add_alias(&roles, &cli, &domain, &alias).await?;
            format!("added alias {alias} of {domain}")
        }
        Command::Domain(DomainCommand::Alias(AliasCommand::Remove { alias })) => {
            let alias = DomainName::parse(&alias)?;
            let Some((_, domain)) = dir
                .list_aliases()
                .await?
                .into_iter()
                .find(|(a, _)| *a == alias)
            else {
                bail!("alias {alias} not found");
            };
            provision::remove_alias(&roles, &cli, &domain, &alias).await?;
            format!("removed alias {alias}")
        }
        Command::Domain(DomainCommand::Oauth(command)) => oauth(&roles, &cli, command).await?,
        Command::Domain(DomainCommand::Generate(args)) => {
            crate::generate::run(store.clone(), &roles, &cli, args).await?
        }
        Command::Domain(DomainCommand::Alias(AliasCommand::List)) => dir
            .list_aliases()
            .await?
            .iter()
            .map(|(alias, domain)| format!("{alias} -> {domain}\n"))
            .collect::<String>()
            .trim_end()
            .to_string(),
        Command::Import(ImportCommand::Maildir {
            path,
            user,
            uidl_format,
        }) => {
            let address = Address::parse(&user)?;
            let input = crate::import::Input::Maildir {
                path: &path,
                uidl_format: &uidl_format,
            };
            crate::import::run(&*store, input, &address).await?
        }
        Command::Import(ImportCommand::Mbox { file, user }) => {
            let address = Address::parse(&user)?;
            crate::import::run(
                &*store,
                crate::import::Input::Mbox { file: &file },
                &address,
            )
            .await?
        }
        Command::Import(ImportCommand::Accounts(command)) => {
            crate::accounts::run(&roles, &cli, command).await?
        }
        Command::Expire { now_ms, batch_size } => {
            let now = now_ms.unwrap_or_else(crate::retention::now_ms);
            let report = store
                .expire(now, batch_size.unwrap_or(settings.retention.batch_size))
                .await?;
            let keep_ms = i64::from(settings.retention.activity_keep_days) * 86_400_000;
            let pruned = store.prune_activity(now - keep_ms).await?;
            format!(
                "deleted {} expired message(s) in {} batch(es); forgot {pruned} activity row(s)",
                report.deleted, report.batches
            )
        }
        Command::Login(LoginCommand::Explain {
            login,
            listener,
            sni,
        }) => {
            let ctx = tenancy::LoginContext {
                local_ip: listener,
                sni: sni.as_deref().map(DomainName::parse).transpose()?,
                ..tenancy::LoginContext::default()
            };
            explain(dir, &login, &settings.default_domains, &ctx).await?
        }
        Command::User(UserCommand::Add { address, password }) => {
            let address = Address::parse(&address)?;
            provision::create_user(
                &roles,
                &cli,
                &address,
                password.read()?,
                QuotaChange::default(),
            )
            .await?;
            format!("added user {address}")
        }
        Command::User(UserCommand::Show { address, json }) => {
            let address = Address::parse(&address)?;
            let user = provision::user(&roles, &cli, &address).await?;
            let user = admin_web::provision::UserJson::from(&user);
            if json {
                serde_json::to_string_pretty(&user)?
            } else {
                let activity = provision::activity::user_activity(&roles, &cli, &address).await?;
                format!("{}\n{}", show_user(&user), show_activity(&activity))
            }
        }
        Command::User(UserCommand::List { domain }) => {
            let domain = DomainName::parse(&domain)?;
            dir.list_users(&domain)
                .await?
                .iter()
                .map(|u| {
                    format!(
                        "{} messages={} bytes={} {}\n",
                        u.address,
                        u.usage.messages,
                        u.usage.bytes,
                        show_quota(u.quota)
                    )
                })
                .collect::<String>()
                .trim_end()
                .to_string()
        }
        Command::User(UserCommand::Passwd { address, password }) => {
            let address = Address::parse(&address)?;
            let change = UserChange {
                password: Some(password.read()?),
                ..UserChange::default()
            };
            provision::update_user(&roles, &cli, &address, change).await?;
            format!("changed password of {address}")
        }
        Command::User(UserCommand::Remove { address }) => {
            let address = Address::parse(&address)?;
            provision::delete_user(&roles, &cli, &address).await?;
            format!("removed user {address}")
        }
        Command::User(UserCommand::Bin(command)) => bin_command(&roles, &cli, command).await?,
        Command::User(UserCommand::AppPassword(command)) => {
            crate::app_passwords::command(&roles, &cli, command).await?
        }
        Command::User(UserCommand::Trace(command)) => {
            crate::traces::command(&roles, &cli, command).await?
        }
        Command::User(UserCommand::Apop { address, secret }) => {
            let address = Address::parse(&address)?;
            let user = dir
                .find_apop_user(&address)
                .await?
                .ok_or_else(|| mailstore::StoreError::NotFound(format!("user {address}")))?;
            match secret.read()? {
                None => {
                    provision::set_apop_secret(&roles, &cli, &address, None).await?;
                    format!("cleared the APOP secret of {address}")
                }
                Some(plain) => {
                    let key = tenancy::ApopKey::load_or_create(&settings.apop_key_file)?;
                    let sealed = key.seal(user.id, plain.as_bytes());
                    provision::set_apop_secret(&roles, &cli, &address, Some(sealed)).await?;
                    let note = if user.domain_allows {
                        ""
                    } else {
                        " (its domain does not allow APOP yet: pophost domain set DOMAIN --allow-apop true)"
                    };
                    format!("set the APOP secret of {address}{note}")
                }
            }
        }
        Command::User(UserCommand::Set {
            address,
            quota,
            enabled,
        }) => {
            let address = Address::parse(&address)?;
            let change = UserChange {
                quota: quota.change(),
                enabled,
                ..UserChange::default()
            };
            if change.is_empty() {
                bail!("nothing to set: give --quota-bytes, --quota-messages or --enabled");
            }
            provision::update_user(&roles, &cli, &address, change).await?;
            format!("updated user {address}")
        }
    };
    Ok(out)
}

/// `pophost user bin …`.
async fn bin_command(
    roles: &admin_web::Roles,
    cli: &Actor,
    command: BinCommand,
) -> anyhow::Result<String> {
    use admin_web::pages::human_time;
    Ok(match command {
        BinCommand::List { address } => {
            let address = Address::parse(&address)?;
            let mut out = String::new();
            let mut offset = 0;
            loop {
                let page = provision::bin::bin_page(
                    roles,
                    cli,
                    &address,
                    offset,
                    provision::bin::MAX_BIN_PAGE,
                )
                .await?;
                for m in &page.items {
                    out.push_str(&format!(
                        "{} {} octets deleted {} by {}\n",
                        m.uid,
                        m.size,
                        human_time(m.deleted_at),
                        provision::bin::deleted_by(m)
                    ));
                }
                offset += page.items.len() as u64;
                if page.items.is_empty() || offset >= page.total {
                    break;
                }
            }
            if out.is_empty() {
                format!("the recycle bin of {address} is empty")
            } else {
                out.trim_end().to_string()
            }
        }
        BinCommand::Restore {
            address,
            which,
            as_new,
        } => {
            let address = Address::parse(&address)?;
            let selection = which.selection()?;
            let r = provision::bin::restore(roles, cli, &address, &selection, as_new).await?;
            format!(
                "restored {} message(s) to {address} ({} with a new UIDL)",
                r.restored, r.renumbered
            )
        }
        BinCommand::Purge { address } => {
            let address = Address::parse(&address)?;
            let purged =
                provision::bin::purge(roles, cli, &address, &mailstore::BinSelection::All).await?;
            format!("purged {purged} message(s) from the recycle bin of {address}")
        }
    })
}

/// Settings for `cli`, with its command-line overrides applied.
pub fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let overrides = match &cli.command {
        Command::Serve {
            pop3_listen,
            pop3s_listen,
            lmtp_listen,
            admin_listen,
            sasl_listen,
            socketmap_listen,
            policy_listen,
            ..
        } => Overrides {
            data_dir: cli.data_dir.clone(),
            pop3_listen: *pop3_listen,
            pop3s_listen: *pop3s_listen,
            lmtp_listen: *lmtp_listen,
            admin_listen: *admin_listen,
            sasl_listen: *sasl_listen,
            socketmap_listen: *socketmap_listen,
            policy_listen: *policy_listen,
        },
        _ => Overrides {
            data_dir: cli.data_dir.clone(),
            ..Overrides::default()
        },
    };
    let url = std::env::var("POPHOST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    Settings::load(cli.config.as_deref(), url, &overrides)
}

/// `pophost domain oauth set|show|clear`, through the same operations as the API.
async fn oauth(
    roles: &admin_web::Roles,
    cli: &Actor,
    command: OAuthCommand,
) -> anyhow::Result<String> {
    use admin_web::provision::oauth::{self as ops, OAuthJson};
    let show = |d: &DomainName, s: &OAuthJson| {
        let jwks = match (&s.jwks_url, &s.jwks_file) {
            (Some(url), _) => format!("jwks-url {url}"),
            (None, Some(file)) => format!("jwks-file {file}"),
            (None, None) => String::new(),
        };
        format!(
            "{d}: issuer {}\n{jwks}\naudience {}\nclaim {}\nalgorithms {}",
            s.issuer,
            s.audience,
            s.claim,
            s.algorithms.join(",")
        )
    };
    Ok(match command {
        OAuthCommand::Set {
            domain,
            issuer,
            jwks_url,
            jwks_file,
            audience,
            claim,
            algorithms,
        } => {
            let domain = DomainName::parse(&domain)?;
            let input = OAuthJson {
                issuer,
                jwks_url,
                jwks_file,
                audience,
                claim,
                algorithms: algorithms
                    .split(',')
                    .map(|a| a.trim().to_string())
                    .collect(),
            };
            let stored = ops::set(roles, cli, &domain, &input).await?;
            show(&domain, &stored)
        }
        OAuthCommand::Show { domain } => {
            let domain = DomainName::parse(&domain)?;
            match ops::get(roles, cli, &domain).await? {
                Some(s) => show(&domain, &s),
                None => format!("{domain}: OAuth is off"),
            }
        }
        OAuthCommand::Clear { domain } => {
            let domain = DomainName::parse(&domain)?;
            if !ops::clear(roles, cli, &domain).await? {
                bail!("{domain}: OAuth was off");
            }
            format!("{domain}: OAuth turned off")
        }
    })
}

/// `pophost admin list|set|passwd|remove`, through the same operations as the admins page.
async fn admin(
    roles: &admin_web::Roles,
    cli: &Actor,
    command: AdminCommand,
) -> anyhow::Result<String> {
    use admin_web::provision::admins as ops;
    Ok(match command {
        AdminCommand::Add { .. } => bail!("handled above"),
        AdminCommand::List => {
            let admins = ops::list_admins(roles, cli).await?;
            let mut out = format!("{} admin(s)", admins.len());
            for a in &admins {
                let a = admin_web::provision::AdminJson::from(a);
                let role = if a.super_admin {
                    "super".to_string()
                } else {
                    format!("domains={}", a.domains.join(","))
                };
                let last = match (a.last_signin_at, &a.last_signin_ip) {
                    (Some(at), ip) => format!(
                        "{}{}",
                        admin_web::pages::human_time(at).replace(' ', "T"),
                        ip.as_deref().map(|ip| format!("@{ip}")).unwrap_or_default()
                    ),
                    (None, _) => "never".into(),
                };
                out.push_str(&format!(
                    "\n{} {role} {} last_signin={last} tokens={}",
                    a.email,
                    if a.disabled { "disabled" } else { "enabled" },
                    a.tokens
                ));
            }
            out
        }
        AdminCommand::Set {
            email,
            super_admin,
            domains,
            disable,
            enable,
        } => {
            if !super_admin && domains.is_none() && !disable && !enable {
                bail!("nothing to change: give --super, --domains, --disable or --enable");
            }
            let mut said = Vec::new();
            if super_admin || domains.is_some() {
                let scope = provision::admins::scope_of(super_admin, &domains.unwrap_or_default())?;
                let a = ops::set_scope(roles, cli, &email, &scope).await?;
                said.push(format!(
                    "{} is now {}",
                    a.account.email,
                    ops::describe_scope(&a.account.scope)
                ));
            }
            if disable || enable {
                let a = ops::set_disabled(roles, cli, &email, disable).await?;
                said.push(if disable {
                    format!(
                        "{} disabled; sessions ended, API tokens revoked",
                        a.account.email
                    )
                } else {
                    format!("{} enabled", a.account.email)
                });
            }
            said.join("\n")
        }
        AdminCommand::Passwd { email } => {
            // Never from argv (other local users see the process list): standard input only.
            let password = given_or_stdin(&None)?;
            admin_web::password_problem(&password, PasswordFor::Admin)?;
            ops::set_password(roles, cli, &email, password).await?;
            format!(
                "password of {} changed; sessions ended, API tokens revoked",
                email.trim().to_ascii_lowercase()
            )
        }
        AdminCommand::Remove { email } => {
            ops::remove(roles, cli, &email).await?;
            format!("removed admin {}", email.trim().to_ascii_lowercase())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let p = |s| parse_limit_bytes(s).map(|l| l.0);
        assert_eq!(p("100"), Ok(Some(100)));
        assert_eq!(p("10K"), Ok(Some(10240)));
        assert_eq!(p("2m"), Ok(Some(2 << 20)));
        assert_eq!(p("unlimited"), Ok(None));
        assert!(p("ten").is_err());
        assert!(p("-1").is_err());
        assert!(p("5T").is_err());
        assert!(p("+5").is_err(), "digits only, as the admin UI reads them");
        // Counts take decimal suffixes, as the admin UI's forms always did.
        assert_eq!(parse_limit_count("10K").map(|l| l.0), Ok(Some(10_000)));
    }
}
