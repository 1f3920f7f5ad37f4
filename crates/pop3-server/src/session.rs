//! One POP3 connection. Reading the protocol means reading `Session::command`: one match over
//! (state, command). Replies are queued and flushed when no further pipelined command is
//! waiting, so pipelined commands are answered in order with few writes. `STLS` (RFC 2595) ends
//! one run of `serve` and starts another on the TLS stream: the line buffer with anything the
//! client sent after STLS is dropped with it (STARTTLS command injection), and the session
//! starts again in AUTHORIZATION.

use mailstore::StoreError;
use pop3_proto::{
    BodyEncoder, Command, LineBuffer, MsgNum, Reply, RespCode, encode, encode_listing_end,
    encode_listing_line, parse_line,
};
use pop3_proto::{limits::MAX_SASL_LINE, parse_sasl_line};
use tenancy::{AuthError, LoginContext};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::stream::Conn;

use crate::maildrop::Maildrop;
use crate::observe::{self, PreLogin, PreLoginSlot, Tally, names};

mod apop;
mod policy;
mod sasl;
use crate::server::{Config, Services};
use sasl::SaslExchange;

/// Replies are written out once this much is queued, even mid-RETR.
const FLUSH_AT: usize = 64 * 1024;

/// The most a client may send before it logs in: a whole pre-login conversation (CAPA, STLS,
/// AUTH with a SCRAM exchange, USER and PASS) is well under 2 KiB. Past this the connection is
/// closed, so a connection cannot be kept busy with endless valid commands until its deadline.
const PRE_LOGIN_BYTES: usize = 16 * 1024;

/// After the shutdown grace period, how long a pending write may still take.
const WRITE_AFTER_ABORT: std::time::Duration = std::time::Duration::from_secs(5);

const CAPABILITIES: &[&str] = &[
    "TOP",
    "UIDL",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    concat!("IMPLEMENTATION pophost-", env!("CARGO_PKG_VERSION")),
];

enum State {
    Authorization {
        user: Option<String>,
    },
    /// Logged in: the maildrop, and its lease's entry in `Kicks`, removed when this state ends
    /// however it ends (QUIT, disconnect, STLS never applies here).
    // Kept for its `Drop` only.
    Transaction(Maildrop, #[allow(dead_code)] Held),
}

/// What a LIST or UIDL listing shows of each message.
#[derive(Clone, Copy)]
enum Listing {
    Sizes,
    Uids,
}

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
    /// The `<timestamp>` this connection's greeting carried, when APOP is on.
    apop_timestamp: Option<String>,
    /// An `AUTH` exchange waiting for the client's next response line (RFC 5034); while one is
    /// pending, lines are SASL responses, not commands.
    sasl: Option<SaslExchange>,
    /// Where this session registers its lease, so losing it ends the session.
    kicks: Kicks,
    /// Cancelled when the lease this session holds is gone from the store.
    kicked: CancellationToken,
    /// The logged-in user's retention and login delay, for CAPA after login.
    user_policy: Option<mailstore::UserPolicy>,
    /// Counts for the logout summary line and the bad-command budget.
    tally: Tally,
    /// Connections before login, per client address (see `observe::PreLogin`).
    pre_login: PreLogin,
    /// This connection's pre-login slot, given back at login.
    pre_login_slot: Option<PreLoginSlot>,
    /// The mechanism of the login attempt under way (for the logins counter).
    login_mechanism: &'static str,
    /// Until a login succeeds, the connection ends at this instant: the TLS handshake and every
    /// read and write before login count against it, so a client that sends a byte now and then
    /// cannot hold a connection slot past it.
    login_deadline: tokio::time::Instant,
    /// Octets read before login, against `PRE_LOGIN_BYTES`.
    pre_login_bytes: usize,
}

impl Session {
    pub fn new(services: Services, config: Config, abort: CancellationToken) -> Self {
        Self {
            services,
            abort,
            state: State::Authorization { user: None },
            out: Vec::new(),
            secure: false,
            login_ctx: LoginContext::default(),
            apop_timestamp: None,
            sasl: None,
            kicks: Kicks::default(),
            kicked: CancellationToken::new(),
            user_policy: None,
            tally: Tally::default(),
            pre_login: PreLogin::default(),
            pre_login_slot: None,
            login_mechanism: "USER",
            login_deadline: tokio::time::Instant::now() + config.login_timeout,
            pre_login_bytes: 0,
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

    /// The local address the client connected to (from the PROXY header when proxied).
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
            || self.login_ctx.peer_ip.is_some_and(|ip| {
                ip.is_loopback()
                    || ip.to_canonical().is_loopback()
                    || self
                        .config
                        .cleartext_networks
                        .iter()
                        .any(|n| n.contains(ip))
            })
    }

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
        // Leaving without QUIT deletes nothing; the lock is given back so the user can log in again.
        if let State::Transaction(drop, _) = &self.state
            && let Err(e) = observe::timed("unlock", self.services.store.unlock(&drop.lease)).await
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
                self.pre_login_slot = Some(slot);
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

    /// Counts a bad command; true once the state's budget is spent (the connection closes).
    fn bad_command(&mut self) -> bool {
        self.tally.bad_commands += 1;
        let budget = match self.state {
            State::Authorization { .. } => self.config.bad_commands_before_login,
            State::Transaction(..) => self.config.bad_commands_after_login,
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
                    // RFC 2595: the session starts over; nothing said before STLS counts.
                    self.state = State::Authorization { user: None };
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
                        if matches!(self.state, State::Authorization { .. }) {
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
            // RFC 5034 §4: response lines are not held to the 255-octet command-line limit.
            let line = if self.sasl.is_some() {
                lines.next_line_within(MAX_SASL_LINE)
            } else {
                lines.next_line()
            };
            let Some(line) = line else {
                continue;
            };
            let (bad_before, out_before) = (self.tally.bad_commands, self.out.len());
            let flow = match line {
                // A response line in an AUTH exchange; too long a one ends the exchange.
                _ if self.sasl.is_some() => {
                    let reply = match line {
                        Ok(line) => self.sasl_step(parse_sasl_line(&line)).await,
                        Err(_) => {
                            self.sasl = None;
                            Reply::Err(None, "authentication response too long".into())
                        }
                    };
                    let logged_in = matches!(self.state, State::Transaction(..));
                    observe::login_result(self.login_mechanism, &reply, logged_in);
                    self.queue(&reply);
                    Flow::Continue
                }
                Err(_) => {
                    self.tally.bad_commands += 1;
                    self.queue(&Reply::Err(None, "command line too long".into()));
                    Flow::Continue
                }
                Ok(line) => match parse_line(&line) {
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
            State::Authorization { .. } => idle.min(self.login_deadline),
            State::Transaction(..) => idle,
        }
    }

    /// How a read or write that hit `deadline` ends the session.
    fn timed_out(&self) -> End {
        match self.state {
            State::Authorization { .. } if tokio::time::Instant::now() >= self.login_deadline => {
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
        if let Some(mechanism) = attempt {
            self.login_mechanism = mechanism;
        }
        let policy_capability = if matches!(cmd, Command::Capa) {
            self.policy_capability().await
        } else {
            Vec::new()
        };
        let sasl_capability = matches!(cmd, Command::Capa)
            .then(|| self.sasl_capability())
            .flatten();
        let cleartext = self.cleartext_allowed();
        let mechanisms = self.mechanisms();
        let reply = match (&mut self.state, cmd) {
            (_, Command::Capa) => {
                let mut lines: Vec<String> = CAPABILITIES.iter().map(|c| c.to_string()).collect();
                if self.cleartext_allowed() {
                    lines.push("USER".into());
                }
                lines.extend(sasl_capability);
                lines.extend(policy_capability);
                // Never once in TLS (RFC 2595), and only where a certificate is there to offer.
                if !self.secure && self.services.tls.is_some() {
                    lines.push("STLS".into());
                }
                Reply::Multi {
                    first: "capability list follows".into(),
                    lines,
                }
            }

            (State::Authorization { .. }, Command::User(_)) if !cleartext => Reply::Err(
                None,
                "plaintext login is not allowed here; use STLS first".into(),
            ),
            (State::Authorization { user }, Command::User(name)) => {
                // Same answer for every name: USER must not reveal which mailboxes exist.
                *user = Some(name);
                Reply::Ok("send PASS".into())
            }
            (State::Authorization { user: None }, Command::Pass(_)) => {
                Reply::Err(None, "send USER first".into())
            }
            (State::Authorization { user }, Command::Pass(password)) => {
                let login = user.take().unwrap_or_default();
                self.login(&login, password.as_bytes()).await
            }
            (State::Authorization { user }, Command::Auth { mechanism, initial }) => {
                *user = None;
                match mechanism {
                    // A bare AUTH (Outlook: `AUTH `) lists the mechanisms (RFC 5034 §4).
                    None => Reply::Multi {
                        first: "SASL mechanisms follow".into(),
                        lines: mechanisms.iter().map(|m| m.to_string()).collect(),
                    },
                    Some(mechanism) => self.sasl_start(&mechanism, initial).await,
                }
            }
            (State::Authorization { user }, Command::Apop { name, digest }) => {
                *user = None;
                self.apop(&name, digest.as_str()).await
            }
            (State::Authorization { .. }, Command::Stls) if self.secure => {
                Reply::Err(None, "already using TLS".into())
            }
            (State::Authorization { .. }, Command::Stls) if self.services.tls.is_none() => {
                Reply::Err(None, "TLS is not available".into())
            }
            (State::Authorization { .. }, Command::Stls) => {
                self.queue(&Reply::Ok("Begin TLS negotiation".into()));
                return Ok(Flow::StartTls);
            }
            (State::Authorization { .. }, Command::Quit) => {
                self.queue(&Reply::Ok("pophost signing off".into()));
                return Ok(Flow::Close);
            }
            (State::Authorization { .. }, _) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "command not valid before login".into())
            }

            (
                State::Transaction(..),
                Command::User(_) | Command::Pass(_) | Command::Auth { .. },
            ) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "already logged in".into())
            }
            (State::Transaction(..), Command::Stls) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "STLS is only valid before login".into())
            }
            (State::Transaction(..), Command::Apop { .. }) => {
                self.tally.bad_commands += 1;
                Reply::Err(None, "already logged in".into())
            }
            (State::Transaction(..), Command::Noop) => Reply::Ok(String::new()),
            (State::Transaction(drop, _), Command::Stat) => {
                let (count, size) = drop.stat();
                Reply::Ok(format!("{count} {size}"))
            }
            (State::Transaction(drop, _), Command::List(None)) => {
                let (count, size) = drop.stat();
                let first = format!("{count} messages ({size} octets)");
                return self.send_listing(first, Listing::Sizes, wr).await;
            }
            (State::Transaction(drop, _), Command::List(Some(n))) => match drop.live(n) {
                Ok(m) => Reply::Ok(format!("{n} {}", m.size)),
                Err(e) => e,
            },
            (State::Transaction(..), Command::Uidl(None)) => {
                let first = "unique-id listing follows".to_owned();
                return self.send_listing(first, Listing::Uids, wr).await;
            }
            (State::Transaction(drop, _), Command::Uidl(Some(n))) => match drop.live(n) {
                Ok(m) => Reply::Ok(format!("{n} {}", m.uid)),
                Err(e) => e,
            },
            (State::Transaction(..), Command::Retr(n)) => {
                return self.send_message(n, BodyEncoder::retr(), true, wr).await;
            }
            (State::Transaction(..), Command::Top(n, lines)) => {
                return self
                    .send_message(n, BodyEncoder::top(lines), false, wr)
                    .await;
            }
            (State::Transaction(drop, _), Command::Dele(n)) => match drop.delete(n) {
                Ok(()) => Reply::Ok(format!("message {n} deleted")),
                Err(e) => e,
            },
            (State::Transaction(drop, _), Command::Rset) => {
                drop.reset();
                let (count, size) = drop.stat();
                Reply::Ok(format!("maildrop has {count} messages ({size} octets)"))
            }
            (State::Transaction(drop, _), Command::Quit) => {
                // UPDATE: +OK only once the deletions are committed.
                let marked = drop.marked();
                let update = self.services.store.commit_update(&drop.lease, &marked);
                let reply = match observe::timed("commit_update", update).await {
                    Ok(()) => {
                        let deleted = u64::try_from(marked.len()).unwrap_or(u64::MAX);
                        self.tally.deleted += deleted;
                        metrics::counter!(names::DELETED).increment(deleted);
                        let (count, _) = drop.stat();
                        // The lock went with the commit: nothing left for `run` to release.
                        self.state = State::Authorization { user: None };
                        Reply::Ok(format!("pophost signing off ({count} messages left)"))
                    }
                    // RFC 1939's own words for a failed UPDATE, with the code the error maps to.
                    Err(e) => match store_reply("UPDATE", &e) {
                        Reply::Err(code, _) => {
                            Reply::Err(code, "some deleted messages not removed".into())
                        }
                        other => other,
                    },
                };
                self.queue(&reply);
                return Ok(Flow::Close);
            }
        };
        if let Some(mechanism) = attempt {
            let logged_in = matches!(self.state, State::Transaction(..));
            observe::login_result(mechanism, &reply, logged_in);
        }
        self.queue(&reply);
        Ok(Flow::Continue)
    }

    /// PASS: authenticate, take the maildrop lock, then list the maildrop: all before the `+OK`
    /// that enters TRANSACTION.
    async fn login(&mut self, login: &str, password: &[u8]) -> Reply {
        let services = &self.services;
        let user = match services
            .auth
            .authenticate(login, password, &self.login_ctx)
            .await
        {
            Ok(user) => user,
            Err(e) => return auth_reply("login", &e),
        };
        self.enter_transaction(user, login).await
    }

    /// Every successful login (USER/PASS, and each SASL mechanism) ends here: take the maildrop
    /// lock, then list the maildrop, all before the `+OK` that enters TRANSACTION.
    pub(crate) async fn enter_transaction(
        &mut self,
        user: mailstore::UserId,
        login: &str,
    ) -> Reply {
        let services = &self.services;
        let lease = match observe::timed("lock", services.store.lock(user)).await {
            Ok(lease) => lease,
            Err(e) => return store_reply("taking maildrop lock", &e),
        };
        // What CAPA shows after login is read with the lock, so it is what this session's
        // domain really runs.
        let policy = match services.store.user_policy(user).await {
            Ok(policy) => policy,
            Err(e) => {
                let _ = services.store.unlock(&lease).await;
                return store_reply("reading mailbox policy", &e);
            }
        };
        let messages = match observe::timed("list", services.store.list(user)).await {
            Ok(messages) => messages,
            Err(e) => {
                let _ = services.store.unlock(&lease).await;
                return store_reply("listing maildrop", &e);
            }
        };
        let span = tracing::Span::current();
        span.record("user", login);
        // The tenant as the login names it, else the one the connection implies (TLS name).
        let tenant = tenancy::Login::parse(login)
            .and_then(|l| l.domain)
            .or_else(|| self.login_ctx.sni.clone());
        if let Some(tenant) = tenant {
            span.record("tenant", tracing::field::display(tenant));
        }
        // Logged in: the connection no longer counts against its address's pre-login limit,
        // and its bad-command budget starts again at the after-login size.
        self.pre_login_slot = None;
        self.tally.bad_commands = 0;
        tracing::info!(messages = messages.len(), "logged in");
        let held = self.kicks.insert(lease.token, self.kicked.clone());
        let drop = Maildrop::new(lease, messages);
        let (count, size) = drop.stat();
        self.user_policy = Some(policy);
        self.state = State::Transaction(drop, held);
        Reply::Ok(format!("{count} messages ({size} octets)"))
    }

    /// RETR and TOP: streams the message from the store a part at a time, so memory stays
    /// bounded whatever the message size.
    async fn send_message<W: AsyncWrite + Unpin>(
        &mut self,
        n: MsgNum,
        mut body: BodyEncoder,
        retr: bool,
        wr: &mut W,
    ) -> Result<Flow, End> {
        let State::Transaction(drop, _) = &self.state else {
            return Ok(Flow::Continue);
        };
        let message = match drop.live(n) {
            Ok(m) => m.clone(),
            Err(e) => {
                self.queue(&e);
                return Ok(Flow::Continue);
            }
        };
        let store = self.services.store.clone();
        // The store is read before the status line, so a failing store still gets a clean -ERR.
        // The first read brings the header block and the first body part: all of a small
        // message in one store round trip.
        let read = observe::timed("read_parts", store.read_parts(&message, 0, 2)).await;
        let mut head = match read {
            Ok(parts) if !parts.is_empty() => parts.into_iter(),
            Ok(_) => {
                let missing = StoreError::Invalid(format!("message {} has no parts", message.id.0));
                self.queue(&store_reply("reading message", &missing));
                return Ok(Flow::Continue);
            }
            Err(e) => {
                self.queue(&store_reply("reading message", &e));
                return Ok(Flow::Continue);
            }
        };
        let mut part = head.next();
        self.queue(&Reply::Ok(format!("{} octets", message.size)));
        let mut read: u64 = 0;
        // For RETR, a message of more than one body part is read by a task of its own, a few
        // parts ahead of the writes (see `read_ahead`); anything else is read here part by part.
        let mut ahead = None;
        let mut next = 1;
        while let Some(data) = part {
            read = read.saturating_add(data.len() as u64);
            // A large part with no line to stuff goes out as it is: one copy fewer per octet
            // of a large message. Smaller ones join the reply in `out`, one write for all.
            if data.len() >= FLUSH_AT && body.pass_through(&data) {
                self.flush(wr).await?;
                self.send_bytes(wr, &data).await?;
            } else {
                body.push(&data, &mut self.out);
                if self.out.len() >= FLUSH_AT {
                    self.flush(wr).await?;
                }
            }
            std::mem::drop(data);
            // A message's size is exactly the sum of its parts: once they add up, the read that
            // would only answer "no more parts" is skipped (one store round trip per RETR, a
            // third of a small message's; see docs/BENCHMARKS.md).
            if body.is_done() || read == message.size {
                break;
            }
            let large = message.size.saturating_sub(read) > mailstore::CHUNK_SIZE as u64;
            // TOP usually stops within the first body part: no reading ahead for it.
            let fetched = if let Some(data) = head.next() {
                Some(Ok(Some(data)))
            } else if retr && ahead.is_none() && large {
                let mut parts = read_ahead(store.clone(), message.clone(), next, read);
                let first = parts.recv().await;
                ahead = Some(parts);
                first
            } else if let Some(parts) = &mut ahead {
                parts.recv().await
            } else {
                Some(observe::timed("read_part", store.read_part(&message, next)).await)
            };
            part = match fetched {
                None => None,
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    // Mid-message there is no way to say -ERR: drop the connection (no UPDATE).
                    tracing::warn!(error = %e, "reading message failed mid-transfer");
                    return Err(End::Io(std::io::Error::other("store failed mid-message")));
                }
            };
            next += 1;
        }
        // The parts ran out short of the size they add up to: one is missing from the store.
        // Ending the reply with "." would hand the client a cut message as if whole (and it may
        // DELE it next): drop the connection instead, as when a read fails (no UPDATE).
        if !body.is_done() && read < message.size {
            tracing::error!(
                message = message.id.0,
                read,
                size = message.size,
                "message body is shorter than its size; a body part is missing from the store"
            );
            return Err(End::Io(std::io::Error::other("message body incomplete")));
        }
        body.finish(&mut self.out);
        if retr {
            self.tally.retrieved += 1;
            self.tally.retrieved_bytes += message.size;
            metrics::counter!(names::RETRIEVED).increment(1);
        } else {
            self.tally.top += 1;
        }
        Ok(Flow::Continue)
    }

    /// LIST and UIDL without an argument: written out `FLUSH_AT` at a time, so a listing of a
    /// large maildrop takes no more memory than any other reply.
    async fn send_listing<W: AsyncWrite + Unpin>(
        &mut self,
        first: String,
        listing: Listing,
        wr: &mut W,
    ) -> Result<Flow, End> {
        self.queue(&Reply::Ok(first));
        let mut scratch = String::new();
        let mut from = 0;
        while let State::Transaction(drop, _) = &self.state {
            let mut rest = None;
            for (n, m) in drop.iter_live_from(from) {
                if self.out.len() >= FLUSH_AT {
                    rest = Some(n.index());
                    break;
                }
                match listing {
                    Listing::Sizes => encode_listing_line(n, m.size, &mut scratch, &mut self.out),
                    Listing::Uids => encode_listing_line(n, &m.uid, &mut scratch, &mut self.out),
                }
            }
            let Some(rest) = rest else {
                break;
            };
            from = rest;
            self.flush(wr).await?;
        }
        encode_listing_end(&mut self.out);
        Ok(Flow::Continue)
    }

    fn queue(&mut self, reply: &Reply) {
        encode(reply, &mut self.out);
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

/// The reader of a large message fetches this many body parts per store call. 8 rather than 4:
/// half the store calls per message, and on Postgres half the round trips (docs/BENCHMARKS.md, (b)).
const READ_AHEAD: u32 = 8;

/// Store calls a large RETR keeps under way at once. Two: the next batch is being read (on a
/// second pool connection) while this one is handed over, so the store is never idle waiting for
/// the writer to ask, and a RETR holds at most about `(2 + IN_FLIGHT) * READ_AHEAD` parts
/// (~4 MiB): the channel's, the batch in hand, the ones under way.
const IN_FLIGHT: usize = 2;

/// Reads the body parts of `message` from `first` on, `READ_AHEAD` per store call and ahead of
/// the writes, so reading overlaps dot-stuffing and writing. It stops once the parts add up to
/// `message.size` (counting the `read` octets already sent), at the end of the parts (`None`),
/// at the first error (passed on), or when the session drops the receiver.
fn read_ahead(
    store: std::sync::Arc<dyn mailstore::Store>,
    message: mailstore::MessageMeta,
    first: u32,
    mut read: u64,
) -> tokio::sync::mpsc::Receiver<Result<Option<Vec<u8>>, StoreError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD as usize);
    tokio::spawn(async move {
        let fetch = |from: u32| {
            let (store, message) = (store.clone(), message.clone());
            // Dropped (the client went away), a read under way stops.
            AbortOnDropHandle::new(tokio::spawn(async move {
                let batch = store.read_parts(&message, from, READ_AHEAD);
                observe::timed("read_parts", batch).await
            }))
        };
        let batch_octets = u64::from(READ_AHEAD) * mailstore::CHUNK_SIZE as u64;
        let mut under_way = std::collections::VecDeque::new();
        let (mut next, mut asked) = (first, read);
        while read < message.size {
            // A second batch only while the ones asked for may fall short of the size, reckoning
            // `CHUNK_SIZE` a part (a delivered part is that or a little more). The estimate only
            // saves a read past the end; the loop does not rely on it.
            while under_way.is_empty() || (under_way.len() < IN_FLIGHT && asked < message.size) {
                under_way.push_back(fetch(next));
                next = next.saturating_add(READ_AHEAD);
                asked = asked.saturating_add(batch_octets);
            }
            let Some(batch) = under_way.pop_front() else {
                return;
            };
            let parts = match batch.await {
                Ok(Ok(parts)) => parts,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    // The store call panicked (a bug): the session ends mid-message, as on a
                    // store error, rather than sending a cut message as if whole.
                    let failed = StoreError::Invalid(format!("reading the message failed: {e}"));
                    let _ = tx.send(Err(failed)).await;
                    return;
                }
            };
            // A short batch is the end of the parts: the batches after it start past a gap.
            let short = parts.len() < READ_AHEAD as usize;
            for data in parts {
                read = read.saturating_add(data.len() as u64);
                if tx.send(Ok(Some(data))).await.is_err() {
                    return;
                }
            }
            if short && read < message.size {
                let _ = tx.send(Ok(None)).await;
                return;
            }
        }
    });
    rx
}

fn sys_temp() -> Reply {
    Reply::Err(
        Some(RespCode::SysTemp),
        "temporary server failure, try again later".into(),
    )
}

/// The one mapping of a failed login to a POP3 reply: every mechanism's failure reads the same
/// (`[AUTH]`, whatever the reason), a store that cannot answer is `[SYS/TEMP]`.
pub(crate) fn auth_reply(doing: &str, e: &AuthError) -> Reply {
    match e {
        AuthError::Unavailable(e) => store_reply(doing, e),
        _ => {
            tracing::info!("{doing} failed");
            Reply::Err(Some(RespCode::Auth), "invalid login or password".into())
        }
    }
}

/// The one mapping of a store error to a POP3 reply, logged with what was being done (`doing`).
/// A lock held elsewhere and LOGIN-DELAY are the client's to know (RFC 2449 response codes);
/// everything else is a temporary failure whose detail stays in the log.
pub(crate) fn store_reply(doing: &str, e: &StoreError) -> Reply {
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
            sys_temp()
        }
    }
}

/// The leases this server's sessions hold, by token: when lease renewal finds one gone from the
/// store (an admin broke the lock, or it expired and another frontend took it), the session
/// holding it is ended at once instead of at its next QUIT.
#[derive(Clone, Default)]
pub struct Kicks(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i64, CancellationToken>>>,
);

impl Kicks {
    /// Registers a lease; the entry lives as long as the returned guard.
    fn insert(&self, token: i64, kicked: CancellationToken) -> Held {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(token, kicked);
        metrics::gauge!(names::MAILDROPS_HELD).set(map.len() as f64);
        Held {
            kicks: self.clone(),
            token,
        }
    }

    /// Ends the sessions holding `lost` leases.
    pub fn kick(&self, lost: &[i64]) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for token in lost {
            if let Some(kicked) = map.get(token) {
                kicked.cancel();
            }
        }
    }
}

/// A lease's entry in `Kicks`, owned by the TRANSACTION state: the entry goes when the state
/// does, whichever way the session leaves it.
pub(crate) struct Held {
    kicks: Kicks,
    token: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.kicks.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.token);
        metrics::gauge!(names::MAILDROPS_HELD).set(map.len() as f64);
    }
}
