//! Logs, traces and metrics of a running server. Logs go to standard error, human-readable or
//! one JSON object per line (`log.format`), filtered by `RUST_LOG` or `log.filter`. With
//! `telemetry.otlp_endpoint` set, spans (one per POP3 session, with its id, client, tenant and
//! user) are also exported over OTLP/HTTP (protobuf) in batches from a background thread; unset,
//! no exporter, thread or layer exists. Metrics: the Prometheus recorder is installed here, once
//! per process, and rendered by the admin listener's `/metrics`.
//!
//! Nothing secret reaches any of them: sessions record the login name, never what follows it
//! (passwords, AUTH responses and APOP digests are redacted types in `pop3-proto`).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-26T17:00:00Z  INFO pop3{session=1 peer=…}: logged in` (colour on a terminal).
    #[default]
    Human,
    /// One JSON object per line, span fields included: for log shippers.
    Json,
}

/// The logging and tracing settings (`[log]`, `[telemetry]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG`, when set, wins.
    pub filter: String,
    /// OTLP/HTTP traces URL (`http://collector:4318/v1/traces`); `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".into(),
            otlp_endpoint: None,
            service_name: "pophost".into(),
        }
    }
}

/// Swaps the log filter of the installed subscriber.
type FilterReload = Box<dyn Fn(EnvFilter) -> anyhow::Result<()> + Send + Sync>;

/// Keeps the trace exporter alive; `shutdown` flushes the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    reload: FilterReload,
    /// `RUST_LOG` was set at start: it keeps winning over `log.filter`.
    from_env: bool,
}

impl Telemetry {
    /// SIGHUP: applies `log.filter` from the re-read config file (unless `RUST_LOG` set the
    /// filter at start). A bad filter keeps the old one. Returns the filter now in force.
    pub fn reload_filter(&self, settings: &LogSettings) -> anyhow::Result<Option<String>> {
        if self.from_env {
            return Ok(None);
        }
        let filter = EnvFilter::try_new(&settings.filter).context("log.filter")?;
        (self.reload)(filter)?;
        Ok(Some(settings.filter.clone()))
    }

    /// Exports what is queued (bounded by the exporter's timeout), then stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces at exit failed");
        }
    }
}

/// Installs the global subscriber. Must run inside the Tokio runtime: the OTLP client sends
/// its requests on it.
pub fn init(settings: &LogSettings) -> anyhow::Result<Telemetry> {
    let env = std::env::var("RUST_LOG").ok().filter(|d| !d.is_empty());
    let from_env = env.is_some();
    let filter = match env {
        Some(directive) => EnvFilter::try_new(&directive).context("RUST_LOG")?,
        None => EnvFilter::try_new(&settings.filter).context("log.filter")?,
    };
    // Behind a reload handle, so SIGHUP can change the level without a restart.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let reload: FilterReload =
        Box::new(move |filter| handle.reload(filter).context("the log subscriber is gone"));
    let fmt = match settings.format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut layers = vec![fmt];
    let provider = match &settings.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let provider = tracer_provider(endpoint, &settings.service_name)?;
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("pophost"))
                    .boxed(),
            );
            Some(provider)
        }
    };
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .context("installing the log subscriber")?;
    if let Some(endpoint) = &settings.otlp_endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry {
        provider,
        reload,
        from_env,
    })
}

fn tracer_provider(endpoint: &str, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(TokioHttp::new()?)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .context("telemetry.otlp_endpoint")?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The OTLP exporter's HTTP client: hyper on this process's Tokio runtime. The batch
/// processor exports from its own thread (no runtime there), so each request is spawned onto
/// the runtime and its result awaited from that thread. Plain `http://` only: collectors run
/// beside the service; TLS to a remote one belongs to a local collector or sidecar.
#[derive(Debug, Clone)]
struct TokioHttp {
    runtime: tokio::runtime::Handle,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl TokioHttp {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the OTLP exporter needs the Tokio runtime")?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Self { runtime, client })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::BodyExt;
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, http_body_util::Full::new(body));
        let call = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            // Collectors answer with a small status message; cap what is read all the same.
            let body = http_body_util::Limited::new(body, 1 << 20)
                .collect()
                .await?;
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(
                parts,
                body.to_bytes(),
            ))
        };
        self.runtime.spawn(call).await?
    }
}

/// The process's Prometheus recorder, installed on first use (the `metrics` macros in every
/// crate record into it from then on).
pub fn metrics() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    // Store calls take from well under a millisecond (SQLite, a warm pool) to seconds (a
    // Postgres failover): buckets from 0.5 ms to 10 s.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("pophost_store_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )
        .context("metric buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histogram samples are kept until upkeep folds them into the buckets: without it, a server
    // nobody scrapes grows by every sample.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .context("starting the metrics upkeep thread")?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `# HELP` lines for the metrics, so a scrape explains itself.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "pophost_connections_open",
        "Connections being served, by listener"
    );
    describe_counter!(
        "pophost_connections_total",
        "Connections accepted, by listener"
    );
    describe_counter!(
        "pophost_connections_refused_total",
        "Connections refused at the listener's cap"
    );
    describe_counter!(
        "pophost_pop3_logins_total",
        "POP3 login attempts, by result and mechanism"
    );
    describe_counter!("pophost_pop3_commands_total", "POP3 commands, by command");
    describe_counter!(
        "pophost_admin_refused_total",
        "Admin requests refused: another tenant's domain (cross_tenant) or a 403 (forbidden)"
    );
    describe_counter!(
        "pophost_pop3_bytes_sent_total",
        "Bytes sent to POP3 clients"
    );
    describe_counter!(
        "pophost_pop3_limited_total",
        "POP3 connections ended by a limit"
    );
    describe_counter!(
        "pophost_messages_delivered_total",
        "Messages delivered over LMTP (one per recipient)"
    );
    describe_counter!(
        "pophost_lmtp_deduplicated_total",
        "LMTP deliveries answered 250 without storing: the mailbox got that message within lmtp.dedup_window_secs"
    );
    describe_counter!(
        "pophost_messages_retrieved_total",
        "Messages sent whole by RETR"
    );
    describe_counter!(
        "pophost_messages_deleted_total",
        "Messages deleted by QUIT's UPDATE"
    );
    describe_counter!(
        "pophost_lock_conflicts_total",
        "Logins refused because the maildrop was locked"
    );
    describe_counter!(
        "pophost_auth_penalties_total",
        "Login attempts slowed by the brute-force penalty"
    );
    describe_histogram!(
        "pophost_store_seconds",
        metrics::Unit::Seconds,
        "Store call latency, by operation"
    );
    describe_gauge!(
        "pophost_store_pool_connections",
        "Store connection pool: open connections by state, and the maximum"
    );
    describe_gauge!(
        "pophost_accounts_legacy_password",
        "Accounts still holding a password hash imported from another server, by scheme"
    );
    describe_counter!(
        "pophost_legacy_hash_upgrades_total",
        "Imported password hashes replaced with argon2id at a login, by scheme"
    );
    describe_counter!(
        "pophost_migrated_logins_total",
        "Users moved from their domain's old POP3 server at their first login"
    );
    describe_counter!(
        "pophost_smtp_auth_total",
        "SMTP AUTH checks for the MTA, by result and mechanism"
    );
    describe_counter!(
        "pophost_socketmap_lookups_total",
        "Postfix socketmap lookups, by map and result"
    );
    describe_counter!(
        "pophost_policy_checks_total",
        "Postfix quota policy checks, by action"
    );
    describe_counter!(
        mailstore::ALARM_COUNTER,
        "Re-download alarms recorded (see the README), by domain and kind"
    );
}

/// `/metrics`' renderer: refreshes the pool gauges from `pool`, then renders.
pub fn metrics_render(
    handle: PrometheusHandle,
    pool: impl Fn() -> mailstore::PoolUsage + Send + Sync + 'static,
) -> admin_web::MetricsRender {
    std::sync::Arc::new(move || {
        let usage = pool();
        let idle = usage.idle as f64;
        let in_use = f64::from(usage.size) - idle;
        metrics::gauge!("pophost_store_pool_connections", "state" => "idle").set(idle);
        metrics::gauge!("pophost_store_pool_connections", "state" => "in_use").set(in_use.max(0.0));
        metrics::gauge!("pophost_store_pool_connections", "state" => "max")
            .set(f64::from(usage.max));
        handle.run_upkeep();
        handle.render()
    })
}
