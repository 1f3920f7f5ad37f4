//! The configuration: a TOML file (every key documented in `deploy/pophost.example.toml`),
//! then environment and command-line overrides, turned into typed settings at load. A bad value
//! fails start-up with an error naming its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The file as written; every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct File {
    data_dir: Option<PathBuf>,
    node_id: Option<String>,
    database: DatabaseFile,
    pop3: Pop3File,
    pop3s: Pop3sFile,
    tls: TlsFile,
    lmtp: LmtpFile,
    auth: AuthFile,
    locks: LocksFile,
    shutdown: ShutdownFile,
    proxy: ProxyFile,
    admin: AdminFile,
    log: LogFile,
    telemetry: TelemetryFile,
    retention: RetentionFile,
    bulletins: BulletinsFile,
    activity: ActivityFile,
    migration: MigrationFile,
    sasl_service: SaslServiceFile,
    postfix: PostfixFile,
}

/// `[sasl_service]`: SMTP AUTH for the MTA over the Dovecot authentication protocol.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SaslServiceFile {
    listen: Option<SocketAddr>,
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    socket_owner: Option<String>,
    socket_group: Option<String>,
    trusted_networks: Vec<String>,
    max_connections: Option<usize>,
    idle_timeout_secs: Option<u64>,
}

/// `[postfix]`: the socketmap lookups and the quota policy service Postfix asks at SMTP time.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PostfixFile {
    socketmap_listen: Option<SocketAddr>,
    socketmap_socket: Option<PathBuf>,
    policy_listen: Option<SocketAddr>,
    policy_socket: Option<PathBuf>,
    socket_mode: Option<String>,
    socket_owner: Option<String>,
    socket_group: Option<String>,
    trusted_networks: Vec<String>,
    max_connections: Option<usize>,
    idle_timeout_secs: Option<u64>,
}

/// `[migration]`: moving users from a domain's old POP3 server at their first login
/// (`pophost domain set DOMAIN --migrate-from URL`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MigrationFile {
    login_wait_secs: Option<u64>,
    max_connections: Option<u32>,
    ca_file: Option<PathBuf>,
}

/// `[retention]`: how often the retention job runs and how much it deletes per transaction.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetentionFile {
    interval_secs: Option<u64>,
    batch_size: Option<u32>,
}

/// `[bulletins]`: how often `serve` looks for scheduled bulletins that are due.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BulletinsFile {
    interval_secs: Option<u64>,
}

/// `[activity]`: how long the login history and the daily retrieved/deleted counts are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ActivityFile {
    keep_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogFile {
    format: Option<String>,
    filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TelemetryFile {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DatabaseFile {
    url: Option<String>,
    max_connections: Option<u32>,
    acquire_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Pop3File {
    listen: Option<SocketAddr>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    proxy_protocol: Option<bool>,
    apop: Option<bool>,
    login_timeout_secs: Option<u64>,
    max_connections_per_ip: Option<usize>,
    bad_commands_before_login: Option<u32>,
    bad_commands_after_login: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Pop3sFile {
    listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    handshake_timeout_secs: Option<u64>,
    sni: Vec<SniFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SniFile {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LmtpFile {
    listen: Option<SocketAddr>,
    hostname: Option<String>,
    max_message_size: Option<u64>,
    max_recipients: Option<usize>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    proxy_protocol: Option<bool>,
    dedup_window_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AuthFile {
    max_concurrent_hashes: Option<usize>,
    failure_delay_ms: Option<u64>,
    ip_penalty_max_secs: Option<u64>,
    network_failures_per_hour: Option<u64>,
    account_failures_per_hour: Option<u64>,
    account_penalty_secs: Option<u64>,
    cache_ttl_secs: Option<u64>,
    apop_key_file: Option<PathBuf>,
    cleartext_networks: Vec<String>,
    default_domains: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LocksFile {
    ttl_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ShutdownFile {
    grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProxyFile {
    trusted_networks: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AdminFile {
    listen: Option<SocketAddr>,
    tls: Option<bool>,
    session_idle_minutes: Option<u64>,
    session_absolute_hours: Option<u64>,
    signin_failures: Option<u64>,
    trusted_proxies: Option<Vec<String>>,
    public_url: Option<String>,
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` URL, and the pool settings.
    Postgres(String, mailstore::PgOptions),
}

/// Where the TLS certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `[tls]` in the config: the default certificate and the SNI ones.
    Files(tls::TlsFiles),
    /// None configured: a self-signed one for `localhost`, made once in this directory.
    SelfSigned(PathBuf),
}

/// Overrides from the command line; `None` keeps the file's (or the default) value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub pop3_listen: Option<SocketAddr>,
    pub pop3s_listen: Option<SocketAddr>,
    pub lmtp_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub sasl_listen: Option<SocketAddr>,
    pub socketmap_listen: Option<SocketAddr>,
    pub policy_listen: Option<SocketAddr>,
}

/// Typed settings, ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `data_dir`: the default SQLite store, the self-signed certificate, the APOP key, and
    /// (on Postgres) the lock `serve` holds.
    pub data_dir: PathBuf,
    pub database: Database,
    pub lock: mailstore::LockOptions,
    pub pop3_listen: SocketAddr,
    pub pop3: pop3_server::Config,
    /// POP3S (TLS from the first byte; 995 in production).
    pub pop3s_listen: SocketAddr,
    pub tls: TlsSource,
    pub lmtp_listen: SocketAddr,
    pub lmtp: lmtp::Config,
    pub max_concurrent_hashes: usize,
    /// Domains of bare logins (`john`), by the local address the client connected to.
    pub default_domains: tenancy::DefaultDomains,
    pub auth_policy: tenancy::AuthPolicy,
    /// APOP (RFC 1939 §7) on the POP3 and POP3S listeners: off by default.
    pub apop: bool,
    /// The server key APOP secrets are encrypted under; made on first use.
    pub apop_key_file: PathBuf,
    /// The admin UI and API (HTTP, or HTTPS with the service's certificates).
    pub admin_listen: SocketAddr,
    pub admin: admin_web::WebConfig,
    /// Log format and filter, and the OTLP trace export.
    pub log: crate::telemetry::LogSettings,
    /// The retention job (domains' `--retention-days`).
    pub retention: RetentionSettings,
    /// How often the bulletin job delivers scheduled bulletins that are due
    /// (`bulletins.interval_secs`).
    pub bulletin_interval: Duration,
    pub migration: MigrationSettings,
    /// SMTP AUTH for the MTA (`[sasl_service]`).
    pub sasl: MtaService,
    /// Postfix's socketmap lookups (`[postfix]` `socketmap_*`).
    pub socketmap: MtaService,
    /// Postfix's quota policy service (`[postfix]` `policy_*`).
    pub policy: MtaService,
}

/// Where one MTA service listens (neither: off) and who may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtaService {
    pub listen: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    /// The UNIX socket's mode, owner and group.
    pub socket_mode: u32,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    /// TCP clients besides loopback that may connect.
    pub trusted_networks: Vec<listener::Network>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl MtaService {
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.socket.is_some()
    }
}

/// Migration at first login (domains' `--migrate-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSettings {
    /// How long a login waits for its mail to be pulled before it is told to come back.
    pub login_wait: Duration,
    /// Connections to old servers (password checks and mail copies) open at once.
    pub max_connections: usize,
    /// CA certificates (PEM) the old servers' certificates are checked against, instead of
    /// the system's.
    pub ca_file: Option<PathBuf>,
}

/// How the retention job runs on this frontend (several may run it at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    pub interval: Duration,
    /// Messages deleted per transaction: bounds how long one holds its locks.
    pub batch_size: u32,
    /// Login events and daily stats older than this many days are pruned (`activity.keep_days`).
    pub activity_keep_days: u32,
}

/// RFC 1939 §3: the autologout timer must be at least 10 minutes.
const MIN_POP3_IDLE_SECS: u64 = 600;

impl Settings {
    /// Loads `path` (if any), then applies `POPHOST_DATABASE_URL` (`database.url`) and `overrides`.
    pub fn load(
        path: Option<&Path>,
        database_url: Option<String>,
        overrides: &Overrides,
    ) -> anyhow::Result<Self> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                parse_file(&text).with_context(|| format!("config file {}", p.display()))?
            }
            None => File::default(),
        };
        Self::from_file(file, database_url, overrides)
    }

    fn from_file(file: File, database_url: Option<String>, o: &Overrides) -> anyhow::Result<Self> {
        let data_dir = o
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("pophost-data"));
        let pg = mailstore::PgOptions {
            max_connections: positive(
                file.database.max_connections,
                20,
                "database.max_connections",
            )?,
            acquire_timeout: Duration::from_secs(positive(
                file.database.acquire_timeout_secs,
                5,
                "database.acquire_timeout_secs",
            )?),
        };
        let database = match database_url.or(file.database.url) {
            Some(url) => parse_database_url(&url, pg).context("database.url")?,
            None => Database::Sqlite(data_dir.join("pophost.db")),
        };

        let pop3_idle = file.pop3.idle_timeout_secs.unwrap_or(MIN_POP3_IDLE_SECS);
        if pop3_idle < MIN_POP3_IDLE_SECS {
            bail!(
                "pop3.idle_timeout_secs: must be at least {MIN_POP3_IDLE_SECS} (RFC 1939 autologout), got {pop3_idle}"
            );
        }
        let pop3_max = positive(file.pop3.max_connections, 1000, "pop3.max_connections")?;
        let max_message_size = file.lmtp.max_message_size.unwrap_or(50 * 1024 * 1024);
        if max_message_size == 0 {
            bail!("lmtp.max_message_size: must be more than 0");
        }
        let max_recipients = positive(file.lmtp.max_recipients, 1000, "lmtp.max_recipients")?;
        let lmtp_idle = positive(file.lmtp.idle_timeout_secs, 300, "lmtp.idle_timeout_secs")?;
        let lmtp_max = positive(file.lmtp.max_connections, 100, "lmtp.max_connections")?;
        // Longer than any MTA keeps retrying (Postfix: 5 days) only grows the records.
        let dedup_window = file.lmtp.dedup_window_secs.unwrap_or(600);
        if dedup_window > MAX_DEDUP_WINDOW_SECS {
            bail!(
                "lmtp.dedup_window_secs: must be at most {MAX_DEDUP_WINDOW_SECS} (7 days), got {dedup_window}"
            );
        }
        let trusted = trusted_networks(file.proxy.trusted_networks.unwrap_or_default())?;
        let pop3_proxy = proxy_policy(&trusted, file.pop3.proxy_protocol, "pop3.proxy_protocol")?;
        let lmtp_proxy = proxy_policy(&trusted, file.lmtp.proxy_protocol, "lmtp.proxy_protocol")?;
        let ttl = file.locks.ttl_secs.unwrap_or(30);
        if ttl < 3 {
            bail!("locks.ttl_secs: must be at least 3, got {ttl}");
        }
        let grace = Duration::from_secs(file.shutdown.grace_secs.unwrap_or(30));
        let node = file.node_id.unwrap_or_else(|| "local".into());
        if node.is_empty() || !node.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("node_id: must be non-empty printable ASCII without spaces");
        }
        let hostname = file.lmtp.hostname.unwrap_or_else(|| "localhost".into());
        if hostname.is_empty() || !hostname.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("lmtp.hostname: must be non-empty printable ASCII without spaces");
        }
        let login_timeout = positive(file.pop3.login_timeout_secs, 60, "pop3.login_timeout_secs")?;
        if login_timeout > pop3_idle {
            bail!(
                "pop3.login_timeout_secs: must not exceed pop3.idle_timeout_secs ({pop3_idle}), got {login_timeout}"
            );
        }
        let handshake_timeout = positive(
            file.tls.handshake_timeout_secs,
            30,
            "tls.handshake_timeout_secs",
        )?;
        let log = log_settings(file.log, file.telemetry)?;
        let tls = tls_source(file.tls, &data_dir)?;
        let admin_listen = o
            .admin_listen
            .or(file.admin.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let admin_tls = file.admin.tls.unwrap_or(false);
        if !admin_tls && !admin_listen.ip().is_loopback() {
            bail!(
                "admin.tls: the admin UI listens on {admin_listen}, which is not a loopback address; \
                 plain HTTP is allowed only on loopback, so set admin.tls = true (or listen on 127.0.0.1)"
            );
        }
        let admin = admin_web::WebConfig {
            session_idle: Duration::from_secs(
                60 * positive(
                    file.admin.session_idle_minutes,
                    30,
                    "admin.session_idle_minutes",
                )?,
            ),
            session_absolute: Duration::from_secs(
                3600 * positive(
                    file.admin.session_absolute_hours,
                    12,
                    "admin.session_absolute_hours",
                )?,
            ),
            tls: admin_tls,
            signin_failures: positive(file.admin.signin_failures, 5, "admin.signin_failures")?,
            trusted_proxies: networks(
                &file.admin.trusted_proxies.unwrap_or_default(),
                "admin.trusted_proxies",
            )?,
            public_origin: file
                .admin
                .public_url
                .map(|u| admin_web::PublicOrigin::parse(&u))
                .transpose()
                .map_err(|e| anyhow::anyhow!("admin.public_url: {e}"))?,
            ..admin_web::WebConfig::default()
        };
        let default_hashes = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            database,
            lock: mailstore::LockOptions {
                node,
                ttl: Duration::from_secs(ttl),
                ..Default::default()
            },
            pop3_listen: o
                .pop3_listen
                .or(file.pop3.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1110))),
            pop3: pop3_server::Config {
                idle_timeout: Duration::from_secs(pop3_idle),
                shutdown_grace: grace,
                max_connections: pop3_max,
                lease_renewal: Duration::from_secs(ttl) / 3,
                proxy: pop3_proxy,
                cleartext_networks: networks(
                    &file.auth.cleartext_networks,
                    "auth.cleartext_networks",
                )?,
                login_timeout: Duration::from_secs(login_timeout),
                handshake_timeout: Duration::from_secs(handshake_timeout),
                max_connections_per_ip: positive(
                    file.pop3.max_connections_per_ip,
                    20,
                    "pop3.max_connections_per_ip",
                )?,
                bad_commands_before_login: file.pop3.bad_commands_before_login.unwrap_or(3),
                bad_commands_after_login: file.pop3.bad_commands_after_login.unwrap_or(20),
            },
            pop3s_listen: o
                .pop3s_listen
                .or(file.pop3s.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1995))),
            tls,
            lmtp_listen: o
                .lmtp_listen
                .or(file.lmtp.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 2424))),
            lmtp: lmtp::Config {
                hostname,
                max_message_size,
                max_recipients,
                idle_timeout: Duration::from_secs(lmtp_idle),
                shutdown_grace: grace,
                max_connections: lmtp_max,
                proxy: lmtp_proxy,
                dedup_window: Duration::from_secs(dedup_window),
            },
            max_concurrent_hashes: positive(
                file.auth.max_concurrent_hashes,
                default_hashes,
                "auth.max_concurrent_hashes",
            )?,
            default_domains: default_domains(&file.auth.default_domains)?,
            auth_policy: tenancy::AuthPolicy {
                failure_delay: Duration::from_millis(file.auth.failure_delay_ms.unwrap_or(2000)),
                ip_penalty_max: Duration::from_secs(file.auth.ip_penalty_max_secs.unwrap_or(30)),
                network_failures_per_hour: positive(
                    file.auth.network_failures_per_hour,
                    100,
                    "auth.network_failures_per_hour",
                )?,
                account_failures_per_hour: positive(
                    file.auth.account_failures_per_hour,
                    100,
                    "auth.account_failures_per_hour",
                )?,
                account_penalty: Duration::from_secs(file.auth.account_penalty_secs.unwrap_or(10)),
                cache_ttl: Duration::from_secs(file.auth.cache_ttl_secs.unwrap_or(0)),
            },
            apop: file.pop3.apop.unwrap_or(false),
            apop_key_file: file
                .auth
                .apop_key_file
                .unwrap_or_else(|| data_dir.join("apop.key")),
            admin_listen,
            admin,
            log,
            retention: RetentionSettings {
                interval: Duration::from_secs(positive(
                    file.retention.interval_secs,
                    3600,
                    "retention.interval_secs",
                )?),
                batch_size: positive(file.retention.batch_size, 500, "retention.batch_size")?,
                activity_keep_days: positive(file.activity.keep_days, 90, "activity.keep_days")?,
            },
            bulletin_interval: Duration::from_secs(positive(
                file.bulletins.interval_secs,
                30,
                "bulletins.interval_secs",
            )?),
            sasl: MtaService {
                listen: o.sasl_listen.or(file.sasl_service.listen),
                socket: file.sasl_service.socket,
                socket_mode: socket_mode(
                    file.sasl_service.socket_mode.as_deref(),
                    "sasl_service.socket_mode",
                )?,
                socket_owner: file.sasl_service.socket_owner,
                socket_group: file.sasl_service.socket_group,
                trusted_networks: networks(
                    &file.sasl_service.trusted_networks,
                    "sasl_service.trusted_networks",
                )?,
                max_connections: positive(
                    file.sasl_service.max_connections,
                    100,
                    "sasl_service.max_connections",
                )?,
                idle_timeout: Duration::from_secs(positive(
                    file.sasl_service.idle_timeout_secs,
                    300,
                    "sasl_service.idle_timeout_secs",
                )?),
            },
            socketmap: postfix_service(
                &file.postfix,
                o.socketmap_listen.or(file.postfix.socketmap_listen),
                file.postfix.socketmap_socket.clone(),
            )?,
            policy: postfix_service(
                &file.postfix,
                o.policy_listen.or(file.postfix.policy_listen),
                file.postfix.policy_socket.clone(),
            )?,
            migration: MigrationSettings {
                login_wait: Duration::from_secs(positive(
                    file.migration.login_wait_secs,
                    20,
                    "migration.login_wait_secs",
                )?),
                max_connections: positive(
                    file.migration.max_connections,
                    16,
                    "migration.max_connections",
                )? as usize,
                ca_file: file.migration.ca_file,
            },
            data_dir,
        })
    }
}

/// `[log]` and `[telemetry]`.
fn log_settings(
    log: LogFile,
    telemetry: TelemetryFile,
) -> anyhow::Result<crate::telemetry::LogSettings> {
    use crate::telemetry::{LogFormat, LogSettings};
    let defaults = LogSettings::default();
    let format = match log.format.as_deref() {
        None | Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => bail!("log.format: expected \"human\" or \"json\", got {other:?}"),
    };
    let filter = log.filter.unwrap_or(defaults.filter);
    tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("log.filter: {e}"))?;
    let otlp_endpoint = telemetry.otlp_endpoint.filter(|e| !e.is_empty());
    if let Some(endpoint) = &otlp_endpoint
        && !endpoint.starts_with("http://")
    {
        bail!(
            "telemetry.otlp_endpoint: expected an http:// URL (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces), got {endpoint:?}"
        );
    }
    Ok(LogSettings {
        format,
        filter,
        otlp_endpoint,
        service_name: telemetry.service_name.unwrap_or(defaults.service_name),
    })
}

fn default_domains(
    entries: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<tenancy::DefaultDomains> {
    let mut map = std::collections::HashMap::new();
    for (ip, domain) in entries {
        let key = format!("auth.default_domains.{ip:?}");
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}: not an IP address"))?;
        let domain = mailstore::DomainName::parse(domain).with_context(|| key.clone())?;
        map.insert(ip, domain);
    }
    Ok(tenancy::DefaultDomains(map))
}

fn parse_file(text: &str) -> anyhow::Result<File> {
    let line = |e: &toml::de::Error| {
        e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        })
    };
    let doc = toml::Deserializer::parse(text)
        .map_err(|e| anyhow::anyhow!("line {}: {}", line(&e), e.message().trim_end()))?;
    // The path names the offending key (`pop3.listen`) even for type and value errors.
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let inner = e.inner();
        anyhow::anyhow!(
            "{}: {} (line {})",
            e.path(),
            inner.message().trim_end(),
            line(inner)
        )
    })
}

/// `[tls]`: the default certificate (`cert` and `key` together) and `[[tls.sni]]` entries,
/// which need the default; with none, the self-signed one in `<data_dir>/tls`.
fn tls_source(file: TlsFile, data_dir: &Path) -> anyhow::Result<TlsSource> {
    let files = |cert: PathBuf, key: PathBuf, prefix: &str| tls::CertFiles {
        cert,
        key,
        cert_setting: format!("{prefix}.cert"),
        key_setting: format!("{prefix}.key"),
    };
    let default = match (file.cert, file.key) {
        (Some(cert), Some(key)) => files(cert, key, "tls"),
        (None, None) if file.sni.is_empty() => {
            return Ok(TlsSource::SelfSigned(data_dir.join("tls")));
        }
        (None, None) => bail!("tls.sni: needs a default certificate (tls.cert and tls.key)"),
        (Some(_), None) => bail!("tls.key: required with tls.cert"),
        (None, Some(_)) => bail!("tls.cert: required with tls.key"),
    };
    let mut sni = Vec::new();
    for (i, entry) in file.sni.into_iter().enumerate() {
        let name = entry.name.trim_end_matches('.');
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            bail!("tls.sni[{i}].name: not a domain name: {:?}", entry.name);
        }
        sni.push((
            name.to_ascii_lowercase(),
            files(entry.cert, entry.key, &format!("tls.sni[{i}]")),
        ));
    }
    Ok(TlsSource::Files(tls::TlsFiles { default, sni }))
}

/// `proxy.trusted_networks`: CIDR networks (or single addresses) of the proxies.
fn trusted_networks(list: Vec<String>) -> anyhow::Result<Vec<listener::Network>> {
    networks(&list, "proxy.trusted_networks")
}

/// One of Postfix's two services: its own address and socket, the rest shared in `[postfix]`.
fn postfix_service(
    file: &PostfixFile,
    listen: Option<SocketAddr>,
    socket: Option<PathBuf>,
) -> anyhow::Result<MtaService> {
    Ok(MtaService {
        listen,
        socket,
        socket_mode: socket_mode(file.socket_mode.as_deref(), "postfix.socket_mode")?,
        socket_owner: file.socket_owner.clone(),
        socket_group: file.socket_group.clone(),
        trusted_networks: networks(&file.trusted_networks, "postfix.trusted_networks")?,
        max_connections: positive(file.max_connections, 100, "postfix.max_connections")?,
        idle_timeout: Duration::from_secs(positive(
            file.idle_timeout_secs,
            300,
            "postfix.idle_timeout_secs",
        )?),
    })
}

/// A UNIX socket's mode as octal digits (`"0660"`, `"660"`); 0660 when not given.
fn socket_mode(value: Option<&str>, key: &str) -> anyhow::Result<u32> {
    let Some(v) = value else { return Ok(0o660) };
    match u32::from_str_radix(v, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => bail!("{key}: must be an octal mode like \"0660\", got {v:?}"),
    }
}

/// A list of CIDR networks (or single addresses); an error names `key[i]`.
fn networks(list: &[String], key: &str) -> anyhow::Result<Vec<listener::Network>> {
    list.iter()
        .enumerate()
        .map(|(i, n)| n.parse().map_err(|e| anyhow::anyhow!("{key}[{i}]: {e}")))
        .collect()
}

/// A listener's PROXY policy: `key` (`pop3.proxy_protocol`) requires headers from the trusted
/// networks, which must then be set; without it the listener takes no PROXY headers.
fn proxy_policy(
    trusted: &[listener::Network],
    required: Option<bool>,
    key: &str,
) -> anyhow::Result<listener::ProxyPolicy> {
    if !required.unwrap_or(false) {
        return Ok(listener::ProxyPolicy::Off);
    }
    if trusted.is_empty() {
        bail!("{key}: requires proxy.trusted_networks (the proxies' addresses) to be set");
    }
    Ok(listener::ProxyPolicy::Required {
        trusted: trusted.to_vec(),
    })
}

/// The longest `lmtp.dedup_window_secs`.
const MAX_DEDUP_WINDOW_SECS: u64 = 7 * 86_400;

fn positive<T: Default + PartialEq>(value: Option<T>, default: T, key: &str) -> anyhow::Result<T> {
    let v = value.unwrap_or(default);
    if v == T::default() {
        bail!("{key}: must be more than 0");
    }
    Ok(v)
}

fn parse_database_url(url: &str, pg: mailstore::PgOptions) -> anyhow::Result<Database> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            bail!("{url:?} names no file");
        }
        return Ok(Database::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Database::Postgres(url.to_string(), pg));
    }
    bail!("unsupported database URL {url:?}: expected sqlite://PATH or postgres://…");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<Settings> {
        Settings::from_file(parse_file(text)?, None, &Overrides::default())
    }

    fn err(text: &str) -> String {
        format!("{:#}", load(text).expect_err(text))
    }

    #[test]
    fn defaults() {
        let s = load("").expect("empty config");
        assert_eq!(
            s.database,
            Database::Sqlite(PathBuf::from("pophost-data/pophost.db"))
        );
        assert_eq!(s.pop3_listen.to_string(), "127.0.0.1:1110");
        assert_eq!(s.lmtp_listen.to_string(), "127.0.0.1:2424");
        assert_eq!(s.pop3.idle_timeout, Duration::from_secs(600));
        assert_eq!(s.lmtp.max_message_size, 52_428_800);
        assert_eq!(s.lmtp.dedup_window, Duration::from_secs(600));
        assert_eq!(s.pop3s_listen.to_string(), "127.0.0.1:1995");
        assert!(!s.apop, "APOP is off by default");
        assert_eq!(s.apop_key_file, PathBuf::from("pophost-data/apop.key"));
        assert_eq!(
            s.tls,
            TlsSource::SelfSigned(PathBuf::from("pophost-data/tls"))
        );
    }

    #[test]
    fn tls_settings() {
        let s = load(
            "[pop3s]\nlisten = \"0.0.0.0:995\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n\
             [[tls.sni]]\nname = \"Example.COM\"\ncert = \"/e.pem\"\nkey = \"/ek.pem\"\n",
        )
        .expect("tls config");
        assert_eq!(s.pop3s_listen.to_string(), "0.0.0.0:995");
        let TlsSource::Files(files) = &s.tls else {
            panic!("{:?}", s.tls);
        };
        assert_eq!(files.default.cert, PathBuf::from("/c.pem"));
        assert_eq!(files.default.key_setting, "tls.key");
        assert_eq!(files.sni[0].0, "example.com");
        assert_eq!(files.sni[0].1.cert_setting, "tls.sni[0].cert");
        assert!(err("[tls]\ncert = \"/c.pem\"\n").starts_with("tls.key: "));
        assert!(err("[tls]\nkey = \"/k.pem\"\n").starts_with("tls.cert: "));
        let e = err("[[tls.sni]]\nname = \"a.example\"\ncert = \"/a\"\nkey = \"/b\"\n");
        assert!(e.starts_with("tls.sni: "), "{e}");
        let e = err(
            "[tls]\ncert = \"/c\"\nkey = \"/k\"\n[[tls.sni]]\nname = \"a b\"\ncert = \"/a\"\nkey = \"/b\"\n",
        );
        assert!(e.starts_with("tls.sni[0].name: "), "{e}");
        let e = err("[tls]\ncert = \"/c\"\nkey = \"/k\"\n[[tls.sni]]\nname = \"a.example\"\n");
        assert!(e.starts_with("tls.sni[0]"), "{e}");
        assert!(err("[pop3s]\nlisten = \"x\"\n").starts_with("pop3s.listen: "));
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../../deploy/pophost.example.toml");
        let s = load(text).expect("example config");
        assert_eq!(s.pop3_listen.to_string(), "127.0.0.1:1110");
        assert_eq!(s.pop3s_listen.to_string(), "127.0.0.1:1995");
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err("[pop3]\nidle_timeout_secs = 60\n").contains("pop3.idle_timeout_secs"));
        assert!(err("[pop3]\nlisten = \"nowhere\"\n").starts_with("pop3.listen: "));
        assert!(err("[pop3]\nlissten = \"127.0.0.1:1\"\n").contains("unknown field `lissten`"));
        assert!(err("[pop3\n").starts_with("line 1: "));
        assert!(err("[lmtp]\nmax_message_size = 0\n").contains("lmtp.max_message_size"));
        assert!(err("[lmtp]\nmax_message_size = \"big\"\n").starts_with("lmtp.max_message_size: "));
        assert!(err("[lmtp]\ndedup_window_secs = 604801\n").contains("lmtp.dedup_window_secs"));
        let off = load("[lmtp]\ndedup_window_secs = 0\n").expect("dedup off");
        assert_eq!(off.lmtp.dedup_window, Duration::ZERO);
        assert!(err("[database]\nurl = \"mysql://x\"\n").starts_with("database.url: "));
        assert!(err("[database]\nmax_connections = 0\n").contains("database.max_connections"));
        assert!(err("[locks]\nttl_secs = 1\n").contains("locks.ttl_secs"));
        assert!(err("[auth]\nmax_concurrent_hashes = 0\n").contains("auth.max_concurrent_hashes"));
        assert!(
            err("[auth.default_domains]\n\"localhost\" = \"example.com\"\n")
                .starts_with("auth.default_domains.\"localhost\": ")
        );
        assert!(
            err("[auth.default_domains]\n\"127.0.0.1\" = \"bad domain\"\n")
                .starts_with("auth.default_domains.\"127.0.0.1\": ")
        );
        let s = load("[auth.default_domains]\n\"192.0.2.1\" = \"Example.COM\"\n").expect("load");
        let ip: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(
            s.default_domains
                .0
                .get(&ip)
                .map(|d| d.to_string())
                .as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn overrides_win() {
        let o = Overrides {
            data_dir: Some("/srv/mail".into()),
            pop3_listen: Some("0.0.0.0:110".parse().expect("addr")),
            pop3s_listen: None,
            lmtp_listen: None,
            admin_listen: None,
            sasl_listen: Some("127.0.0.1:3659".parse().expect("addr")),
            socketmap_listen: None,
            policy_listen: None,
        };
        let s = Settings::from_file(
            parse_file("data_dir = \"/x\"\n[sasl_service]\nlisten = \"127.0.0.1:1\"\n")
                .expect("parse"),
            None,
            &o,
        )
        .expect("load");
        assert_eq!(s.sasl.listen.map(|a| a.port()), Some(3659));
        assert_eq!(
            s.database,
            Database::Sqlite(PathBuf::from("/srv/mail/pophost.db"))
        );
        assert_eq!(s.pop3_listen.to_string(), "0.0.0.0:110");
        let s = Settings::from_file(File::default(), Some("sqlite:///tmp/a.db".into()), &o)
            .expect("load");
        assert_eq!(s.database, Database::Sqlite(PathBuf::from("/tmp/a.db")));
        let file = parse_file("[database]\nurl = \"sqlite://x.db\"\nmax_connections = 7\n")
            .expect("parse");
        let s =
            Settings::from_file(file, Some("postgres://db.example/mail".into()), &o).expect("load");
        let pg = mailstore::PgOptions {
            max_connections: 7,
            acquire_timeout: Duration::from_secs(5),
        };
        assert_eq!(
            s.database,
            Database::Postgres("postgres://db.example/mail".into(), pg)
        );
    }

    #[test]
    fn proxy_protocol() {
        let s = load("").expect("empty config");
        assert_eq!(s.pop3.proxy, listener::ProxyPolicy::Off);
        assert_eq!(s.lmtp.proxy, listener::ProxyPolicy::Off);
        assert_eq!(s.lmtp.max_connections, 100);

        let s = load(
            "[proxy]\ntrusted_networks = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n\
             [pop3]\nproxy_protocol = true\n",
        )
        .expect("proxy config");
        let listener::ProxyPolicy::Required { trusted } = &s.pop3.proxy else {
            panic!("pop3 takes no PROXY headers: {:?}", s.pop3.proxy);
        };
        let trusted: Vec<String> = trusted.iter().map(|n| n.to_string()).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        assert!(s.pop3.proxy.trusts("192.0.2.7".parse().expect("ip")));
        // LMTP was not asked to take PROXY headers.
        assert_eq!(s.lmtp.proxy, listener::ProxyPolicy::Off);

        let e = err("[proxy]\ntrusted_networks = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n");
        assert!(e.starts_with("proxy.trusted_networks[1]: "), "{e}");
        assert!(e.contains("host bits"), "{e}");
        let e = err("[proxy]\ntrusted_networks = [\"haproxy.internal\"]\n");
        assert!(e.starts_with("proxy.trusted_networks[0]: "), "{e}");
        let e = err("[proxy]\ntrusted_networks = \"10.0.0.0/8\"\n");
        assert!(e.starts_with("proxy.trusted_networks: "), "{e}");
        let e = err("[pop3]\nproxy_protocol = true\n");
        assert!(e.starts_with("pop3.proxy_protocol: "), "{e}");
        assert!(e.contains("proxy.trusted_networks"), "{e}");
        let e = err("[proxy]\ntrusted_networks = []\n[lmtp]\nproxy_protocol = true\n");
        assert!(e.starts_with("lmtp.proxy_protocol: "), "{e}");
        let e = err("[lmtp]\nproxy_protocol = \"yes\"\n");
        assert!(e.starts_with("lmtp.proxy_protocol: "), "{e}");
        assert!(err("[lmtp]\nmax_connections = 0\n").contains("lmtp.max_connections"));
    }

    #[test]
    fn admin_behind_a_proxy() {
        let s = load("").expect("empty config");
        assert!(s.admin.trusted_proxies.is_empty() && s.admin.public_origin.is_none());
        let s = load(
            "[admin]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n\
             public_url = \"HTTPS://Admin.ISP.example:443/\"\n",
        )
        .expect("admin proxy config");
        let trusted: Vec<String> = s
            .admin
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(trusted, ["127.0.0.1/32", "::1/128"]);
        assert_eq!(
            s.admin.public_origin.as_ref().map(|o| o.as_str()),
            Some("https://admin.isp.example")
        );
        let s = load("[admin]\npublic_url = \"http://[2001:db8::1]:8443\"\n").expect("v6");
        assert_eq!(
            s.admin.public_origin.as_ref().map(|o| o.as_str()),
            Some("http://[2001:db8::1]:8443")
        );
        let e = err("[admin]\ntrusted_proxies = [\"127.0.0.1\", \"proxy.local\"]\n");
        assert!(e.starts_with("admin.trusted_proxies[1]: "), "{e}");
        for bad in [
            "admin.isp.example",
            "ftp://admin.isp.example",
            "https://",
            "https://admin.isp.example/admin",
            "https://admin.isp.example/?x=1",
            "https://user@admin.isp.example",
            "not a url",
        ] {
            let e = err(&format!("[admin]\npublic_url = {bad:?}\n"));
            assert!(e.starts_with("admin.public_url: "), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_and_observability() {
        let s = load("").expect("empty config");
        assert_eq!(s.pop3.login_timeout, Duration::from_secs(60));
        assert!(s.pop3.login_timeout < s.pop3.idle_timeout);
        assert_eq!(s.pop3.handshake_timeout, Duration::from_secs(30));
        assert_eq!(s.pop3.max_connections_per_ip, 20);
        assert_eq!(s.pop3.bad_commands_before_login, 3);
        assert_eq!(s.pop3.bad_commands_after_login, 20);
        assert_eq!(s.log, crate::telemetry::LogSettings::default());
        assert!(
            s.log.otlp_endpoint.is_none(),
            "no trace export unless configured"
        );

        let s = load(
            "[log]\nformat = \"json\"\nfilter = \"debug\"\n[telemetry]\n\
             otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n",
        )
        .expect("log config");
        assert_eq!(s.log.format, crate::telemetry::LogFormat::Json);
        assert_eq!(s.log.filter, "debug");
        assert_eq!(
            s.log.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );

        assert!(err("[log]\nformat = \"xml\"\n").starts_with("log.format: "));
        assert!(err("[log]\nfilter = \"=[\"\n").starts_with("log.filter: "));
        let e = err("[telemetry]\notlp_endpoint = \"grpc://x:4317\"\n");
        assert!(e.starts_with("telemetry.otlp_endpoint: "), "{e}");
        let e = err("[pop3]\nlogin_timeout_secs = 900\n");
        assert!(e.starts_with("pop3.login_timeout_secs: "), "{e}");
        assert!(err("[pop3]\nlogin_timeout_secs = 0\n").contains("pop3.login_timeout_secs"));
        assert!(err("[pop3]\nmax_connections_per_ip = 0\n").contains("max_connections_per_ip"));
        assert!(err("[tls]\nhandshake_timeout_secs = 0\n").contains("tls.handshake_timeout_secs"));
    }

    #[test]
    fn mta_services_are_off_until_given_an_address_or_a_socket() {
        let s = load("").expect("empty config");
        assert!(!s.sasl.enabled() && !s.socketmap.enabled() && !s.policy.enabled());
        let s = load(
            "[sasl_service]\nsocket = \"/var/spool/postfix/private/pophost-auth\"\n\
             socket_mode = \"0600\"\nsocket_owner = \"postfix\"\ntrusted_networks = [\"192.0.2.0/24\"]\n\
             [postfix]\nsocketmap_listen = \"127.0.0.1:2525\"\npolicy_socket = \"/run/pophost/policy\"\n",
        )
        .expect("config");
        assert!(s.sasl.enabled() && s.socketmap.enabled() && s.policy.enabled());
        assert_eq!(s.sasl.socket_mode, 0o600);
        assert_eq!(s.sasl.socket_owner.as_deref(), Some("postfix"));
        assert_eq!(s.sasl.trusted_networks.len(), 1);
        assert_eq!(s.policy.socket_mode, 0o660);
        assert_eq!(s.socketmap.listen.map(|a| a.port()), Some(2525));
        assert!(s.policy.listen.is_none());
        assert!(
            err("[sasl_service]\nsocket_mode = \"rw\"\n").starts_with("sasl_service.socket_mode: ")
        );
        assert!(err("[postfix]\nsocket_mode = \"1777\"\n").starts_with("postfix.socket_mode: "));
        assert!(
            err("[postfix]\ntrusted_networks = [\"x\"]\n")
                .starts_with("postfix.trusted_networks[0]: ")
        );
        assert!(
            err("[sasl_service]\nmax_connections = 0\n").contains("sasl_service.max_connections")
        );
        assert!(err("[sasl_service]\nsocket_path = \"/x\"\n").contains("socket_path"));
    }
}
