//! One POP3 connection. Reading the protocol means reading `Session::command`: one match over
//! (state, command), each state holding only its own data (see `state`). Replies are queued and
//! flushed when no further pipelined command is waiting, so pipelined commands are answered in
//! order with few writes. `STLS` (RFC 2595) ends one run of `serve` and starts another on the
//! TLS stream: the line buffer with anything the client sent after STLS is dropped with it
//! (STARTTLS command injection), and the session starts again in AUTHORIZATION. RETR, TOP and
//! the listings are in `retr`; `sasl` and `apop` are the other ways to log in.

use mailstore::{LoginRecord, SessionEnd, StoreError, Transfer};
use pop3_proto::{BodyEncoder, Command, LineBuffer, Reply, RespCode, encode, parse_line};
use pop3_proto::{limits::MAX_SASL_LINE, parse_sasl_line};
use tenancy::{AuthError, Authenticated, LoginContext};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::lease::Kicks;
use crate::maildrop::Maildrop;
use crate::observe::{self, PreLogin, Tally, names};
use crate::server::{Config, Services};
use crate::stream::Conn;

mod apop;
mod lang;
mod policy;
mod retr;
mod sasl;
mod state;
mod trace;
use retr::Listing;
use state::{Authorization, State, Transaction, Update};
use trace::SessionTrace;
pub use trace::Tracer;

/// Replies are written out once this much is queued, even mid-RETR.
const FLUSH_AT: usize = 64 * 1024;

/// The most a client may send before it logs in: a whole pre-login conversation (CAPA, STLS,
/// AUTH with a SCRAM exchange, USER and PASS) is well under 2 KiB. Past this the connection is
/// closed, so a connection cannot be kept busy with endless valid commands until its deadline.
const PRE_LOGIN_BYTES: usize = 16 * 1024;

/// After the shutdown grace period, how long a pending write may still take.
pub const WRITE_AFTER_ABORT: std::time::Duration = std::time::Duration::from_secs(5);

const CAPABILITIES: &[&str] = &[
    "TOP",
    "UIDL",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    concat!("IMPLEMENTATION pophost-", env!("CARGO_PKG_VERSION")),
];

/// Whether the connection goes on after a command.
enum Flow {
    Continue,
    Close,
    /// STLS was accepted: the TLS handshake comes next.
    StartTls,
}

/// Why a session stopped talking; only used for the log line.
enum End {
    Quit,
    Eof,
    Idle,
    Shutdown,
    Io(std::io::Error),
    /// STLS: `run` does the handshake and serves on.
    StartTls,
    /// The TLS handshake failed or timed out.
    Handshake(std::io::Error),
    /// An admin broke the maildrop lock (see `Kicks`).
    Kicked,
    /// Too many bad commands (see `Config::bad_commands_before_login`).
    BadCommands,
    /// The client's address already has its most connections before login.
    TooManyFromAddress,
    /// No login within `Config::login_timeout` of the accept.
    LoginDeadline,
    /// More than `PRE_LOGIN_BYTES` sent before login.
    TooMuchBeforeLogin,
}

impl End {
    /// How the session ended, for the summary line.
    fn as_str(&self) -> &'static str {
        match self {
            End::Quit => "quit",
            End::Eof => "disconnected",
            End::Idle => "timeout",
            End::Shutdown => "shutdown",
            End::Io(_) => "io-error",
            End::StartTls => "starttls",
            End::Handshake(_) => "tls-failed",
            End::Kicked => "kicked",
            End::BadCommands => "bad-commands",
            End::TooManyFromAddress => "per-ip-limit",
            End::LoginDeadline => "login-timeout",
            End::TooMuchBeforeLogin => "pre-login-bytes",
        }
    }
}

pub struct Session {
    services: Services,
    config: Config,
    abort: CancellationToken,
    state: State,
    out: Vec<u8>,
    /// Whether the connection is already TLS (POP3S, or after STLS).
    secure: bool,
    /// Where a bare login's domain comes from: the local address, then the TLS server name.
    login_ctx: LoginContext,
    /// Where this session registers its lease, so losing it ends the session.
    kicks: Kicks,
    /// Cancelled when the lease this session holds is gone from the store.
    kicked: CancellationToken,
    /// Counts for the logout summary line and the bad-command budget.
    tally: Tally,
    /// Connections before login, per client address (see `observe::PreLogin`).
    pre_login: PreLogin,
    /// Until a login succeeds, the connection ends at this instant: the TLS handshake and every
    /// read and write before login count against it, so a client that sends a byte now and then
    /// cannot hold a connection slot past it.
    login_deadline: tokio::time::Instant,
    /// Octets read before login, against `PRE_LOGIN_BYTES`.
    pre_login_bytes: usize,
    /// The protocol trace, when an admin traces this session's user (see `trace`).
    trace: SessionTrace,
    /// The language of response texts and whether UTF8 was accepted (RFC 6856, see `lang`).
    speech: lang::Speech,
}

impl Session {
    pub fn new(services: Services, config: Config, abort: CancellationToken) -> Self {
        Self {
            services,
            abort,
            state: State::Authorization(Authorization::default()),
            out: Vec::new(),
            secure: false,
            login_ctx: LoginContext::default(),
            kicks: Kicks::default(),
            kicked: CancellationToken::new(),
            tally: Tally::default(),
            pre_login: PreLogin::default(),
            login_deadline: tokio::time::Instant::now() + config.login_timeout,
            pre_login_bytes: 0,
            trace: SessionTrace::default(),
            speech: lang::Speech::default(),
            config,
        }
    }

    /// The registry of connections before login, shared by this process's POP3 listeners.
    pub fn pre_login(mut self, pre_login: PreLogin) -> Self {
        self.pre_login = pre_login;
        self
    }

    /// The registry of live leases of this server (see `Kicks`).
    pub fn kicks(mut self, kicks: Kicks) -> Self {
        self.kicks = kicks;
        self
    }

    /// Records this session if its user is traced; `connection` as in the log span.
    pub fn traced(mut self, tracer: Option<std::sync::Arc<Tracer>>, connection: u64) -> Self {
        if let Some(tracer) = tracer {
            self.trace = SessionTrace::new(tracer, connection);
        }
        self
    }

    /// The client's address (from the PROXY header when proxied).
    pub fn peer(mut self, peer: std::net::SocketAddr) -> Self {
        self.login_ctx.peer_ip = Some(peer.ip());
        self
    }

    /// Whether passwords may be sent in the clear here: under TLS, from loopback, or from the
    /// configured networks. Elsewhere USER/PASS (and SASL PLAIN/LOGIN) are refused before any
    /// hashing, and CAPA does not offer them.
    pub(crate) fn cleartext_allowed(&self) -> bool {
        self.secure
            || self
                .login_ctx
                .peer_ip
                .is_some_and(|ip| listener::is_loopback_or_in(ip, &self.config.cleartext_networks))
    }

    /// The local address the client connected to (from the PROXY header when proxied).
    pub fn local(mut self, local: std::net::SocketAddr) -> Self {
        self.login_ctx.local_ip = Some(local.ip());
        self
    }

    /// Serves one connection; `implicit_tls` (POP3S) does the TLS handshake before the greeting.
    pub async fn run(mut self, stream: listener::Stream, implicit_tls: bool) {
        let (end, conn) = match self.admit() {
            Ok(()) => self.serve_all(stream, implicit_tls).await,
            Err(end) => (end, Some(Conn::Plain(stream))),
        };
        match &end {
            End::Io(e) => tracing::info!(error = %e, "connection lost"),
            End::Handshake(e) => tracing::info!(error = %e, "TLS handshake failed"),
            End::Idle => tracing::info!("autologout after idle timeout"),
            End::Shutdown => tracing::info!("ended by shutdown"),
            End::Kicked => tracing::info!("ended: the maildrop lock was broken by an admin"),
            End::BadCommands => tracing::info!("closed after too many bad commands"),
            End::TooManyFromAddress => {
                tracing::info!("refused: too many connections from this address before login")
            }
            End::LoginDeadline => tracing::info!("closed: no login within the login timeout"),
            End::TooMuchBeforeLogin => tracing::info!("closed: too much data before login"),
            End::Quit | End::Eof | End::StartTls => tracing::debug!("session ended"),
        }
        self.summary(&end);
        // Leaving without QUIT deletes nothing; the lock is given back so the user can log in
        // again (after a failed UPDATE too).
        let (retrieved_ids, login) = self.state.ended();
        let ending = SessionEnd {
            update: None,
            retrieved: self.retrieved(),
            retrieved_ids,
            login,
        };
        if let Some(lease) = self.state.lease()
            && let Err(e) = observe::timed(
                "unlock",
                self.services.maildrops.end_session(lease, &ending),
            )
            .await
        {
            tracing::warn!(error = %e, "releasing maildrop lock failed; it expires with its lease");
        }
        if let Some(mut conn) = conn {
            // Not on POP3S: a plain-text line would only confuse a TLS client.
            if matches!(end, End::TooManyFromAddress) && !implicit_tls {
                // Said instead of the greeting, so the client does not retry at once.
                self.queue(&Reply::Err(
                    Some(RespCode::SysTemp),
                    "too many connections from your address, try again later".into(),
                ));
                let _ = self.flush(&mut conn).await;
            }
            let _ = conn.shutdown().await;
        }
    }

    /// Takes this connection's pre-login slot for its client address (POP3S included: the
    /// limit is checked before the handshake, the expensive part).
    fn admit(&mut self) -> Result<(), End> {
        let Some(ip) = self.login_ctx.peer_ip else {
            return Ok(());
        };
        match self.pre_login.enter(ip, self.config.max_connections_per_ip) {
            Some(slot) => {
                self.state = State::Authorization(Authorization {
                    _slot: Some(slot),
                    ..Authorization::default()
                });
                Ok(())
            }
            None => {
                metrics::counter!(names::LIMITED, "limit" => "per_ip").increment(1);
                Err(End::TooManyFromAddress)
            }
        }
    }

    /// The one line that sums a session up at its end, like Dovecot's `pop3_logout_format`.
    /// The span around it carries the session id, client address, tenant and user.
    fn summary(&self, end: &End) {
        let t = &self.tally;
        tracing::info!(
            end = end.as_str(),
            commands = t.commands,
            retr = t.retrieved,
            retr_bytes = t.retrieved_bytes,
            top = t.top,
            dele = t.deleted,
            bytes_out = t.bytes_out,
            duration_ms = u64::try_from(t.duration().as_millis()).unwrap_or(u64::MAX),
            "session summary"
        );
    }

    /// What this session retrieved, for the user's daily stats: counted once, when the session
    /// gives its lease up (a committed QUIT, or the end without one).
    fn retrieved(&self) -> Transfer {
        Transfer {
            messages: self.tally.retrieved,
            octets: self.tally.retrieved_bytes,
        }
    }

    /// Counts a bad command; true once the state's budget is spent (the connection closes).
    fn bad_command(&mut self) -> bool {
        self.tally.bad_commands += 1;
        let budget = match self.state {
            State::Authorization(_) => self.config.bad_commands_before_login,
            State::Transaction(_) | State::Update(_) | State::Closed => {
                self.config.bad_commands_after_login
            }
        };
        self.tally.bad_commands > budget
    }

    /// The whole conversation, across STLS; the connection comes back unless a handshake failed.
    async fn serve_all(
        &mut self,
        stream: listener::Stream,
        implicit_tls: bool,
    ) -> (End, Option<Conn>) {
        let mut conn = Conn::Plain(stream);
        if implicit_tls {
            conn = match self.handshake(conn).await {
                Ok(tls) => tls,
                Err(end) => return (end, None),
            };
        }
        let mut greet = true;
        loop {
            match self.serve(&mut conn, greet).await {
                End::StartTls => {
                    conn = match self.handshake(conn).await {
                        Ok(tls) => tls,
                        Err(end) => return (end, None),
                    };
                    // STLS is only accepted in AUTHORIZATION, which starts over, LANG included.
                    self.speech = lang::Speech::default();
                    self.state = match std::mem::replace(&mut self.state, State::Closed) {
                        State::Authorization(a) => State::Authorization(a.restart()),
                        other => other,
                    };
                    greet = false;
                }
                end => return (end, Some(conn)),
            }
        }
    }

    /// The TLS handshake on `conn` (plain), bounded by the idle timeout and shutdown.
    async fn handshake(&mut self, conn: Conn) -> Result<Conn, End> {
        let Conn::Plain(stream) = conn else {
            return Err(End::Handshake(std::io::Error::other("already TLS")));
        };
        let Some(acceptor) = self.services.tls.clone() else {
            return Err(End::Handshake(std::io::Error::other("TLS not configured")));
        };
        let limit = self.config.handshake_timeout.min(self.config.idle_timeout);
        let until = (tokio::time::Instant::now() + limit).min(self.login_deadline);
        let shake = tokio::time::timeout_at(until, acceptor.accept(stream));
        let tls = tokio::select! {
            _ = self.abort.cancelled() => return Err(End::Shutdown),
            r = shake => match r {
                Err(_) => {
                    metrics::counter!(names::LIMITED, "limit" => "tls_handshake_timeout").increment(1);
                    return Err(End::Handshake(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )));
                }
                Ok(Err(e)) => return Err(End::Handshake(e)),
                Ok(Ok(tls)) => tls,
            },
        };
        let (_, session) = tls.get_ref();
        tracing::debug!(
            sni = session.server_name().unwrap_or("-"),
            version = ?session.protocol_version(),
            "TLS established"
        );
        self.login_ctx.sni = session
            .server_name()
            .and_then(|name| mailstore::DomainName::parse(name).ok());
        self.secure = true;
        self.login_ctx.tls = true;
        Ok(Conn::Tls(Box::new(tls)))
    }

    /// Reads and answers commands until the session ends or STLS asks for TLS. A new call
    /// starts with an empty line buffer, so bytes read before STLS never reach the TLS session.
    async fn serve(&mut self, conn: &mut Conn, greet: bool) -> End {
        if greet {
            let greeting = self.greeting();
            self.queue(&Reply::Ok(greeting));
        }
        let rd = conn;
        let mut lines = LineBuffer::new();
        let mut buf = vec![0u8; 4096];
        loop {
            if !lines.has_line() {
                if let Err(e) = self.flush(rd).await {
                    return e;
                }
                let read = tokio::select! {
                    _ = self.abort.cancelled() => {
                        self.queue(&Reply::Err(Some(RespCode::SysTemp), "server shutting down, try again later".into()));
                        let _ = self.flush(rd).await;
                        return End::Shutdown;
                    }
                    _ = self.kicked.cancelled() => {
                        // The lock is gone: nothing may be deleted now, and the client is told why.
                        self.queue(&Reply::Err(Some(RespCode::SysTemp), "session ended by an administrator".into()));
                        let _ = self.flush(rd).await;
                        return End::Kicked;
                    }
                    read = tokio::time::timeout_at(self.deadline(), rd.read(&mut buf)) => read,
                };
                match read {
                    Err(_) => return self.timed_out(),
                    Ok(Err(e)) => return End::Io(e),
                    Ok(Ok(0)) => return End::Eof,
                    Ok(Ok(n)) => {
                        if matches!(self.state, State::Authorization(_)) {
                            self.pre_login_bytes += n;
                            if self.pre_login_bytes > PRE_LOGIN_BYTES {
                                metrics::counter!(names::LIMITED, "limit" => "pre_login_bytes")
                                    .increment(1);
                                self.queue(&Reply::Err(None, "too much data before login".into()));
                                let _ = self.flush(rd).await;
                                return End::TooMuchBeforeLogin;
                            }
                        }
                        lines.push(&buf[..n]);
                    }
                }
                continue;
            }
            let sasl = matches!(
                &self.state,
                State::Authorization(Authorization { sasl: Some(_), .. })
            );
            // RFC 5034 §4: response lines are not held to the 255-octet command-line limit.
            let line = if sasl {
                lines.next_line_within(MAX_SASL_LINE)
            } else {
                lines.next_line()
            };
            let Some(line) = line else {
                continue;
            };
            match &line {
                Ok(line) => self.trace.client(line, sasl),
                Err(_) => self.trace.client_too_long(),
            }
            let pending = if sasl { self.state.take_sasl() } else { None };
            let (bad_before, out_before) = (self.tally.bad_commands, self.out.len());
            let flow = match (pending, line) {
                // A response line in an AUTH exchange; too long a one ends the exchange.
                (Some(exchange), line) => {
                    let mechanism = exchange.mechanism();
                    let reply = match line {
                        Ok(line) => self.sasl_step(exchange, parse_sasl_line(&line)).await,
                        Err(_) => Reply::Err(None, "authentication response too long".into()),
                    };
                    let logged_in = matches!(self.state, State::Transaction(_));
                    observe::login_result(mechanism, &reply, logged_in);
                    self.queue(&reply);
                    Flow::Continue
                }
                (None, Err(_)) => {
                    self.tally.bad_commands += 1;
                    self.queue(&Reply::Err(None, "command line too long".into()));
                    Flow::Continue
                }
                (None, Ok(line)) => match parse_line(&line) {
                    Err(e) => {
                        self.tally.bad_commands += 1;
                        metrics::counter!(names::COMMANDS, "command" => "invalid").increment(1);
                        self.queue(&Reply::Err(None, e.to_string()));
                        Flow::Continue
                    }
                    Ok(cmd) => match self.command(cmd, rd).await {
                        Ok(flow) => flow,
                        Err(e) => return e,
                    },
                },
            };
            self.tally.commands += 1;
            // A bad command past the budget is answered with this -ERR instead of its own (a bad
            // command writes nothing else), then the connection is closed.
            if self.tally.bad_commands > bad_before {
                self.tally.bad_commands -= 1;
                if self.bad_command() {
                    metrics::counter!(names::LIMITED, "limit" => "bad_commands").increment(1);
                    self.out.truncate(out_before);
                    self.queue(&Reply::Err(None, "too many bad commands, closing".into()));
                    let _ = self.flush(rd).await;
                    return End::BadCommands;
                }
            }
            match flow {
                // One output budget for every reply: past `FLUSH_AT` unsent, the next pipelined
                // command waits until this is written, so a client that sends commands and
                // never reads holds no more than that (and the socket's buffers).
                Flow::Continue if self.out.len() >= FLUSH_AT => {
                    if let Err(e) = self.flush(rd).await {
                        return e;
                    }
                }
                Flow::Continue => {}
                Flow::Close => {
                    let _ = self.flush(rd).await;
                    return End::Quit;
                }
                Flow::StartTls => {
                    // Whatever follows STLS in `lines` is dropped here, unanswered.
                    return match self.flush(rd).await {
                        Ok(()) => End::StartTls,
                        Err(e) => e,
                    };
                }
            }
        }
    }

    /// Until when the next read or write may wait: the RFC 1939 autologout timer, and before
    /// login no later than the login deadline.
    fn deadline(&self) -> tokio::time::Instant {
        let idle = tokio::time::Instant::now() + self.config.idle_timeout;
        match self.state {
            State::Authorization(_) => idle.min(self.login_deadline),
            State::Transaction(_) | State::Update(_) | State::Closed => idle,
        }
    }

    /// How a read or write that hit `deadline` ends the session.
    fn timed_out(&self) -> End {
        match self.state {
            State::Authorization(_) if tokio::time::Instant::now() >= self.login_deadline => {
                metrics::counter!(names::LIMITED, "limit" => "login_timeout").increment(1);
                End::LoginDeadline
            }
            _ => End::Idle,
        }
    }

    async fn command<W: AsyncWrite + Unpin>(
        &mut self,
        cmd: Command,
        wr: &mut W,
    ) -> Result<Flow, End> {
        metrics::counter!(names::COMMANDS, "command" => observe::command_name(&cmd)).increment(1);
        let attempt = observe::login_mechanism(&cmd);
        let policy_capability = if matches!(cmd, Command::Capa) {
            self.policy_capability().await
        } else {
            Vec::new()
        };
        let sasl_capability = match cmd {
            Command::Capa => self.sasl_capability().await,
            _ => None,
        };
        let cleartext = self.cleartext_allowed();
        // Asks the store whether OAuth is on anywhere: only for the bare AUTH that lists them.
        let mechanisms = match cmd {
            Command::Auth {
                mechanism: None, ..
            } => self.mechanisms().await,
            _ => Vec::new(),
        };
        let reply = match (&mut self.state, cmd) {
            (_, Command::Capa) => {
                let mut lines: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
                if self.cleartext_allowed() {
                    lines.push("USER".into());
                }
                lines.extend(sasl_capability);
                lines.extend(policy_capability);
                // RFC 6856: `USER` says USER/PASS take UTF-8 names and (SASLprep'd) passwords,
                // so only where USER is offered at all.
                let utf8 = if self.cleartext_allowed() {
                    "UTF8 USER"
                } else {
                    "UTF8"
                };
                lines.push(utf8.into());
                lines.push("LANG".into());
                // Never once in TLS (RFC 2595), and only where a certificate is there to offer.
                if !self.secure && self.services.tls.is_some() {
                    lines.push("STLS".into());
                }
                Reply::Multi {
                    first: "capability list follows".into(),
                    lines,
                }
            }
            (_, Command::Quit) => {
                let reply = self.quit().await;
                self.queue(&reply);
                return Ok(Flow::Close);
            }

            (State::Authorization(_) | State::Transaction(_), Command::Lang(range)) => {
                match range {
                    None => self.speech.listing(),
                    Some(range) => self.speech.switch(&range),
                }
            }
            // RFC 6856 §2: UTF-8 from here on (response texts; message bodies are never
            // rewritten, with or without it). Valid before login only.
            (State::Authorization(_), Command::Utf8) => {
                self.speech.utf8 = true;
                Reply::Ok("UTF8 enabled".into())
            }
            (State::Transaction(_), Command::Utf8) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "UTF8 is only valid before login".into())
            }
            (State::Authorization(_), Command::User(_)) if !cleartext => Reply::Err(
                None,
                "plaintext login is not allowed here; use STLS first".into(),
            ),
            (State::Authorization(a), Command::User(name)) => {
                // Same answer for every name: USER must not reveal which mailboxes exist.
                self.trace.named(&name);
                a.user = Some(name);
                Reply::Ok("send PASS".into())
            }
            (State::Authorization(Authorization { user: None, .. }), Command::Pass(_)) => {
                Reply::Err(None, "send USER first".into())
            }
            (State::Authorization(a), Command::Pass(password)) => {
                let login = a.user.take().unwrap_or_default();
                self.login(&login, password.as_bytes(), "USER").await
            }
            (State::Authorization(a), Command::Auth { mechanism, initial }) => {
                a.user = None;
                match mechanism {
                    // A bare AUTH (Outlook: `AUTH `) lists the mechanisms (RFC 5034 §4).
                    None => Reply::Multi {
                        first: "SASL mechanisms follow".into(),
                        lines: mechanisms.iter().map(|m| m.to_string()).collect(),
                    },
                    Some(mechanism) => self.sasl_start(&mechanism, initial).await,
                }
            }
            (State::Authorization(a), Command::Apop { name, digest }) => {
                a.user = None;
                let timestamp = a.apop_timestamp.clone();
                self.trace.named(&name);
                self.apop(&name, digest.as_str(), timestamp).await
            }
            // RFC 6856 §2: clients must not; STLS would start the session over under UTF-8 mode.
            (State::Authorization(_), Command::Stls) if self.speech.utf8 => {
                Reply::Err(None, "STLS is not allowed after UTF8".into())
            }
            (State::Authorization(_), Command::Stls) if self.secure => {
                Reply::Err(None, "already using TLS".into())
            }
            (State::Authorization(_), Command::Stls) if self.services.tls.is_none() => {
                Reply::Err(None, "TLS is not available".into())
            }
            (State::Authorization(_), Command::Stls) => {
                self.queue(&Reply::Ok("Begin TLS negotiation".into()));
                return Ok(Flow::StartTls);
            }
            (State::Authorization(_), _) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "command not valid before login".into())
            }

            (
                State::Transaction(_),
                Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Apop { .. },
            ) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "already logged in".into())
            }
            (State::Transaction(_), Command::Stls) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "STLS is only valid before login".into())
            }
            (State::Transaction(_), Command::Noop) => Reply::Ok(String::new()),
            (State::Transaction(t), Command::Stat) => {
                let (count, size) = t.maildrop.stat();
                Reply::Ok(format!("{count} {size}"))
            }
            (State::Transaction(t), Command::List(None)) => {
                let (count, size) = t.maildrop.stat();
                let first = format!("{count} messages ({size} octets)");
                return self.send_listing(first, Listing::Sizes, wr).await;
            }
            (State::Transaction(t), Command::List(Some(n))) => match t.maildrop.live(n) {
                Ok(m) => Reply::Ok(format!("{n} {}", m.size)),
                Err(e) => e,
            },
            (State::Transaction(_), Command::Uidl(None)) => {
                let first = "unique-id listing follows".to_owned();
                return self.send_listing(first, Listing::Uids, wr).await;
            }
            (State::Transaction(t), Command::Uidl(Some(n))) => match t.maildrop.live(n) {
                Ok(m) => Reply::Ok(format!("{n} {}", m.uid)),
                Err(e) => e,
            },
            (State::Transaction(_), Command::Retr(n)) => {
                return self.send_message(n, BodyEncoder::retr(), true, wr).await;
            }
            (State::Transaction(_), Command::Top(n, lines)) => {
                return self
                    .send_message(n, BodyEncoder::top(lines), false, wr)
                    .await;
            }
            (State::Transaction(t), Command::Dele(n)) => match t.maildrop.delete(n) {
                Ok(()) => Reply::Ok(format!("message {n} deleted")),
                Err(e) => e,
            },
            (State::Transaction(t), Command::Rset) => {
                t.maildrop.reset();
                let (count, size) = t.maildrop.stat();
                Reply::Ok(format!("maildrop has {count} messages ({size} octets)"))
            }

            // No command is read once QUIT is answered.
            (State::Update(_) | State::Closed, _) => return Ok(Flow::Close),
        };
        if let Some(mechanism) = attempt {
            let logged_in = matches!(self.state, State::Transaction(_));
            observe::login_result(mechanism, &reply, logged_in);
        }
        self.queue(&reply);
        Ok(Flow::Continue)
    }

    /// QUIT: from TRANSACTION into UPDATE (RFC 1939 §6), whose `+OK` comes only once the
    /// deletions are committed; from AUTHORIZATION straight to the end.
    async fn quit(&mut self) -> Reply {
        let update = match std::mem::replace(&mut self.state, State::Closed) {
            State::Transaction(t) => Update::from(t),
            _ => return Reply::Ok("pophost signing off".into()),
        };
        let ending = SessionEnd {
            update: Some(&update.marked),
            retrieved: self.retrieved(),
            retrieved_ids: &update.retrieved,
            login: Some(&update.login),
        };
        let commit = self
            .services
            .maildrops
            .end_session(update.lease.lease(), &ending);
        match observe::timed("commit_update", commit).await {
            Ok(()) => {
                let deleted = u64::try_from(update.marked.len()).unwrap_or(u64::MAX);
                self.tally.deleted += deleted;
                metrics::counter!(names::DELETED).increment(deleted);
                // The lock went with the commit: the state stays `Closed`, nothing to give back.
                Reply::Ok(format!(
                    "pophost signing off ({} messages left)",
                    update.left
                ))
            }
            Err(e) => {
                // The lease is still held: `run` gives it back.
                let reply = error_reply("UPDATE", &e);
                self.state = State::Update(update);
                // RFC 1939's own words for a failed UPDATE, with the code the error maps to.
                match reply {
                    Reply::Err(code, _) => {
                        Reply::Err(code, "some deleted messages not removed".into())
                    }
                    other => other,
                }
            }
        }
    }

    /// PASS, and SASL PLAIN and LOGIN: check the password, then `enter_transaction`.
    async fn login(&mut self, login: &str, password: &[u8], mechanism: &'static str) -> Reply {
        self.login_ctx.mechanism = Some(mechanism);
        let services = &self.services;
        match services
            .auth
            .authenticate_device(login, password, &self.login_ctx)
            .await
        {
            Ok((who, device)) => self.enter_transaction_as(who, mechanism, device).await,
            Err(e) => error_reply("login", &e),
        }
    }

    /// Every successful login (USER/PASS, APOP and each SASL mechanism) ends here: take the
    /// maildrop lock, then list the maildrop, all before the `+OK` that enters TRANSACTION.
    pub(crate) async fn enter_transaction(
        &mut self,
        who: Authenticated,
        mechanism: &'static str,
    ) -> Reply {
        self.enter_transaction_as(who, mechanism, None).await
    }

    /// `enter_transaction` for a login with app password `device` (`None`: not one): its lease
    /// is marked with it, so that revoking the app password ends this session.
    pub(crate) async fn enter_transaction_as(
        &mut self,
        who: Authenticated,
        mechanism: &'static str,
        device: Option<i64>,
    ) -> Reply {
        let services = &self.services;
        let user = who.user;
        // The login's record goes into the lock's own transaction: no extra round trip.
        let login = LoginRecord {
            ip: self.login_ctx.peer_ip,
            mechanism: mechanism.to_string(),
            tls: self.secure,
        };
        let lock = services.maildrops.lock_for_login(user, &login);
        let lease = match observe::timed("lock", lock).await {
            Ok(lease) => lease,
            Err(e) => return error_reply("taking maildrop lock", &e),
        };
        if let Some(device) = device {
            // Revoked between its check and now: the login does not stand.
            match services
                .auth
                .bind_lease_to_app_password(&lease, device)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    let _ = services.maildrops.unlock(&lease).await;
                    return error_reply("login", &AuthError::Rejected);
                }
                Err(e) => {
                    let _ = services.maildrops.unlock(&lease).await;
                    return error_reply("marking the lease with its app password", &e);
                }
            }
        }
        // What CAPA shows after login is read with the lock, so it is what this session's
        // domain really runs.
        let policy = match services.policies.user_policy(user).await {
            Ok(policy) => policy,
            Err(e) => {
                let _ = services.maildrops.unlock(&lease).await;
                return error_reply("reading mailbox policy", &e);
            }
        };
        let messages = match observe::timed("list", services.maildrops.list(user)).await {
            Ok(messages) => messages,
            Err(e) => {
                let _ = services.maildrops.unlock(&lease).await;
                return error_reply("listing maildrop", &e);
            }
        };
        // The mailbox the login reached: the domain's own name, whatever alias or login form the
        // client typed.
        let span = tracing::Span::current();
        span.record("user", who.address.to_string().as_str());
        span.record("tenant", tracing::field::display(&who.address.domain));
        // Logged in: the bad-command budget starts again at the after-login size.
        self.tally.bad_commands = 0;
        self.trace.logged_in(user);
        tracing::info!(messages = messages.len(), mechanism, "logged in");
        let maildrop = Maildrop::new(messages);
        let (count, size) = maildrop.stat();
        // AUTHORIZATION ends here, and with it the pre-login slot: the connection no longer
        // counts against its address's limit.
        self.state = State::Transaction(Transaction {
            maildrop,
            lease: self.kicks.hold(lease, self.kicked.clone()),
            policy,
            login,
        });
        Reply::Ok(format!("{count} messages ({size} octets)"))
    }

    fn queue(&mut self, reply: &Reply) {
        let start = self.out.len();
        // Every reply passes here, so every text is in the session's language.
        let reply = &*self.speech.localise(reply);
        encode(reply, &mut self.out);
        self.trace.server(reply, &self.out[start..]);
    }

    async fn flush<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        let written = self.send_bytes(wr, &out).await;
        self.out = out;
        self.out.clear();
        if self.out.capacity() > 4 * FLUSH_AT {
            self.out.shrink_to(FLUSH_AT);
        }
        written
    }

    /// Writes `bytes` to the client, with the idle timeout and the shutdown deadline.
    async fn send_bytes<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        bytes: &[u8],
    ) -> Result<(), End> {
        let write = async {
            wr.write_all(bytes).await?;
            wr.flush().await
        };
        // Once the shutdown grace period is over, a write (the rest of a RETR, the closing
        // -ERR) gets a few more seconds: a client that stopped reading cannot hold up the exit.
        let abort = self.abort.clone();
        let drain_deadline = async move {
            abort.cancelled().await;
            tokio::time::sleep(WRITE_AFTER_ABORT).await;
        };
        // A client that stops reading is as idle as one that stops writing.
        let written = tokio::select! {
            written = tokio::time::timeout_at(self.deadline(), write) => written,
            _ = drain_deadline => return Err(End::Shutdown),
        };
        match written {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => Err(End::Io(e)),
            Ok(Ok(())) => {
                let sent = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                self.tally.bytes_out += sent;
                metrics::counter!(names::BYTES_SENT).increment(sent);
                Ok(())
            }
        }
    }
}

/// What failed, for [`error_reply`]: a login, or a store call.
pub(crate) enum Failure<'a> {
    Login(&'a AuthError),
    Store(&'a StoreError),
}

impl<'a> From<&'a AuthError> for Failure<'a> {
    fn from(e: &'a AuthError) -> Self {
        Failure::Login(e)
    }
}

impl<'a> From<&'a StoreError> for Failure<'a> {
    fn from(e: &'a StoreError) -> Self {
        Failure::Store(e)
    }
}

/// The one mapping of a failure to a POP3 reply, logged with what was being done (`doing`).
/// Every login failure reads the same (`[AUTH]`, whatever the reason: every mechanism, unknown
/// user or wrong password). A lock held elsewhere and LOGIN-DELAY are the client's to know (RFC
/// 2449 response codes); anything else is a temporary failure whose detail stays in the log.
pub(crate) fn error_reply<'a>(doing: &str, e: impl Into<Failure<'a>>) -> Reply {
    let e = match e.into() {
        Failure::Store(e) | Failure::Login(AuthError::Unavailable(e)) => e,
        Failure::Login(AuthError::Moving) => {
            tracing::info!("{doing}: the mailbox is being moved from the old server");
            return Reply::Err(
                Some(RespCode::SysTemp),
                "mailbox is being moved, try again in a minute".into(),
            );
        }
        Failure::Login(_) => {
            tracing::info!("{doing} failed");
            return Reply::Err(Some(RespCode::Auth), "invalid login or password".into());
        }
    };
    match e {
        StoreError::InUse => {
            metrics::counter!(names::LOCK_CONFLICTS).increment(1);
            Reply::Err(
                Some(RespCode::InUse),
                "maildrop is locked by another session".into(),
            )
        }
        StoreError::LoginDelay(wait) => {
            tracing::info!(wait, "login refused: LOGIN-DELAY");
            Reply::Err(
                Some(RespCode::LoginDelay),
                format!("logged in too recently; try again in {wait} seconds"),
            )
        }
        e => {
            tracing::warn!(error = %e, "{doing} failed");
            Reply::Err(
                Some(RespCode::SysTemp),
                "temporary server failure, try again later".into(),
            )
        }
    }
}
