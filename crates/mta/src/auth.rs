//! SMTP AUTH for the MTA: the server side of the Dovecot authentication protocol (v1.x), which
//! Postfix (`smtpd_sasl_type = dovecot`) and Exim (`driver = dovecot`) speak to an auth service
//! over a socket. pophost answers it itself so that the MTA authenticates submitters against
//! the same accounts, login forms, aliases, disabled flags and brute-force counters as a POP3
//! login: one source of truth, no second password database to keep in step. PLAIN and LOGIN
//! are offered, and OAUTHBEARER and XOAUTH2 (bearer tokens, `tenancy::oauth`) when some domain has
//! OAuth settings at the time the MTA connects; like POP3's USER/PASS all are refused on an SMTP
//! session that is neither under TLS (`secured`) nor from loopback or a trusted network. A
//! refused token gets its RFC 7628 error JSON as a `CONT`, and the `FAIL` after the client's
//! dummy answer, as Dovecot does.
//!
//! The MTA is a trusted peer but relays untrusted SMTP clients' bytes, so the connection is
//! bounded: a line longer than `Config::max_line` (default 16 KiB, what Dovecot expects lines to
//! fit in) or any protocol violation closes it, at most `MAX_IN_FLIGHT` requests are kept per
//! connection, and a connection silent for `Config::idle_timeout` is closed. Passwords and SASL
//! responses are never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use tenancy::oauth::{BearerError, BearerMechanism};
use tenancy::{AuthError, Authenticated, Authenticator, LoginContext};

/// How the auth service treats its MTA connections.
#[derive(Debug, Clone)]
pub struct Config {
    /// SMTP clients (`rip=`) in these networks may use cleartext mechanisms without TLS, like
    /// POP3's `cleartext_networks`; loopback always may.
    pub trusted_networks: Vec<listener::Network>,
    /// A connection that sends no complete line for this long (while no check of its own is
    /// under way) is closed; so is one that does not read its replies for this long.
    pub idle_timeout: Duration,
    /// The longest line accepted, without its LF; a longer one closes the connection.
    pub max_line: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            trusted_networks: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            max_line: 16 * 1024,
        }
    }
}

/// Requests (waiting for the client's next round, or being checked) one connection may have at
/// once. Postfix and Exim have one at a time per connection; more is a misbehaving peer.
pub const MAX_IN_FLIGHT: usize = 16;

/// The protocol version we speak; a client with another major version is not talking to us.
const MAJOR: u32 = 1;
const MINOR: u32 = 2;

const PROMPT_USERNAME: &str = "Username:";
const PROMPT_PASSWORD: &str = "Password:";

/// Metric: finished SMTP AUTH requests by result and mechanism.
const METRIC_AUTH: &str = "pophost_smtp_auth_total";

/// Lenient about padding (some clients drop it), strict about the alphabet.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Answers the MTA's SMTP AUTH questions with `tenancy::Authenticator`. Shared by every MTA
/// connection (`Send + Sync`).
pub struct AuthService {
    authenticator: Arc<Authenticator>,
    config: Config,
    /// Connection ids (`CUID`), unique within this process.
    next_cuid: AtomicU32,
}

impl AuthService {
    pub fn new(authenticator: Arc<Authenticator>, config: Config) -> Self {
        Self {
            authenticator,
            config,
            next_cuid: AtomicU32::new(1),
        }
    }

    /// Serves one MTA connection until it closes, errors, times out or `abort` is cancelled.
    pub async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        mut stream: S,
        abort: CancellationToken,
    ) {
        let cuid = self.next_cuid.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("mta_auth", cuid);
        let end = self
            .serve(&mut stream, &abort, cuid)
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        match end {
            End::Eof => tracing::debug!("MTA closed the auth connection"),
            End::Io(e) => tracing::info!(error = %e, "auth connection lost"),
            End::Idle => tracing::info!("auth connection closed after idle timeout"),
            End::Aborted => tracing::debug!("auth connection ended by shutdown"),
            End::Protocol(why) => tracing::warn!(why, "auth connection closed: protocol error"),
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &self,
        stream: &mut S,
        abort: &CancellationToken,
        cuid: u32,
    ) -> End {
        let idle = self.config.idle_timeout;
        let mut conn = Conn::new(self);
        let oauth = self.authenticator.oauth_offered().await;
        conn.handshake(cuid, oauth);
        if let Err(end) = conn.flush(stream, idle, abort).await {
            return end;
        }
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let mut deadline = Instant::now() + idle;
        loop {
            let event = tokio::select! {
                biased;
                () = abort.cancelled() => Event::Aborted,
                Some(done) = conn.checks.join_next(), if !conn.checks.is_empty() => {
                    Event::Checked(done)
                }
                read = stream.read(&mut chunk) => Event::Read(read),
                // A check of ours under way is no silence of the client's.
                () = sleep_until(deadline), if conn.checks.is_empty() => Event::Idle,
            };
            match event {
                Event::Aborted => return End::Aborted,
                Event::Idle => return End::Idle,
                Event::Read(Err(e)) => return End::Io(e),
                Event::Read(Ok(0)) => return End::Eof,
                Event::Read(Ok(n)) => {
                    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    let mut closing = None;
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        if pos > self.config.max_line {
                            closing = Some(End::Protocol("line too long"));
                            break;
                        }
                        let mut line: Vec<u8> = buf.drain(..=pos).collect();
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        deadline = Instant::now() + idle;
                        if let Err(why) = conn.on_line(&line) {
                            closing = Some(End::Protocol(why));
                            break;
                        }
                    }
                    if closing.is_none() && buf.len() > self.config.max_line {
                        closing = Some(End::Protocol("line too long"));
                    }
                    if let Some(end) = closing {
                        // Replies to the lines before the bad one still go out.
                        let _ = conn.flush(stream, idle, abort).await;
                        return end;
                    }
                }
                Event::Checked(Ok((id, outcome))) => {
                    conn.checked(id, outcome);
                    deadline = Instant::now() + idle;
                }
                Event::Checked(Err(e)) => {
                    // The request's id went with the task: closing makes the MTA answer its
                    // SMTP client with a temporary failure instead of waiting forever.
                    tracing::error!(error = %e, "an SMTP AUTH check failed");
                    return End::Protocol("internal error");
                }
            }
            if let Err(end) = conn.flush(stream, idle, abort).await {
                return end;
            }
        }
    }

    /// Cleartext mechanisms need TLS between the SMTP client and the MTA, or a client on
    /// loopback or a trusted network (as POP3's `cleartext_allowed`).
    fn cleartext_allowed(&self, secured: bool, rip: Option<IpAddr>) -> bool {
        secured
            || rip.is_some_and(|ip| listener::is_loopback_or_in(ip, &self.config.trusted_networks))
    }
}

/// Why a connection ended, for the log.
enum End {
    Eof,
    Io(std::io::Error),
    Idle,
    Aborted,
    Protocol(&'static str),
}

enum Event {
    Aborted,
    Idle,
    Read(std::io::Result<usize>),
    Checked(Result<(u32, Checked), tokio::task::JoinError>),
}

/// What a check task hands back.
struct Checked {
    mech: Mech,
    rip: Option<IpAddr>,
    /// A refused bearer token is `BearerError::Rejected`; a password login's errors are
    /// `BearerError::Auth`.
    result: Result<Authenticated, BearerError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mech {
    Plain,
    Login,
    Bearer(BearerMechanism),
}

impl Mech {
    fn parse(name: &[u8]) -> Option<Mech> {
        if name.eq_ignore_ascii_case(b"PLAIN") {
            Some(Mech::Plain)
        } else if name.eq_ignore_ascii_case(b"LOGIN") {
            Some(Mech::Login)
        } else {
            std::str::from_utf8(name)
                .ok()
                .and_then(BearerMechanism::parse)
                .map(Mech::Bearer)
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mech::Plain => "PLAIN",
            Mech::Login => "LOGIN",
            Mech::Bearer(m) => m.name(),
        }
    }
}

/// One AUTH request in flight, and what it waits for.
struct Request {
    mech: Mech,
    ctx: LoginContext,
    step: Step,
}

enum Step {
    /// PLAIN without an initial response: the client's `CONT` carries it.
    PlainResponse,
    /// LOGIN after the `Username:` prompt.
    LoginUser,
    /// LOGIN after the `Password:` prompt.
    LoginPassword { login: String },
    /// OAUTHBEARER or XOAUTH2 without an initial response: the client's `CONT` carries it.
    BearerResponse,
    /// The token was refused and its error JSON sent; the client's dummy `CONT` gets the `FAIL`.
    BearerFailed,
    /// Handed to the authenticator; its answer ends the request.
    Checking,
}

/// A client line, its fields unescaped.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Version { major: u32 },
    Cpid,
    Auth(AuthRequest),
    Cont { id: u32, data: Vec<u8> },
}

#[derive(Debug, Default, PartialEq, Eq)]
struct AuthRequest {
    id: u32,
    mech: Vec<u8>,
    service: Option<Vec<u8>>,
    secured: bool,
    lip: Option<IpAddr>,
    rip: Option<IpAddr>,
    /// Still base64; `Some` even when empty (`resp=`), which differs from no response.
    resp: Option<Vec<u8>>,
}

/// Parses one line (without its LF). `Err` names the violation that closes the connection.
fn parse_command(line: &[u8]) -> Result<Command, &'static str> {
    let fields: Vec<Vec<u8>> = line.split(|b| *b == b'\t').map(unescape).collect();
    let (name, args) = fields.split_first().ok_or("empty line")?;
    match name.as_slice() {
        b"VERSION" => {
            let major = args.first().and_then(|m| number(m)).ok_or("bad VERSION")?;
            Ok(Command::Version { major })
        }
        b"CPID" => Ok(Command::Cpid),
        b"AUTH" => {
            let id = args.first().and_then(|i| number(i)).ok_or("bad AUTH id")?;
            let mut req = AuthRequest {
                id,
                mech: args.get(1).cloned().unwrap_or_default(),
                ..AuthRequest::default()
            };
            for param in args.iter().skip(2) {
                let (key, value) = match param.iter().position(|b| *b == b'=') {
                    Some(eq) => (&param[..eq], Some(&param[eq + 1..])),
                    None => (param.as_slice(), None),
                };
                match (key, value) {
                    (b"service", Some(v)) => req.service = Some(v.to_vec()),
                    // Newer clients may say how (`secured=tls`); any form means secured.
                    (b"secured", _) => req.secured = true,
                    (b"lip", Some(v)) => req.lip = ip(v),
                    (b"rip", Some(v)) => req.rip = ip(v),
                    (b"resp", Some(v)) => req.resp = Some(v.to_vec()),
                    // nologin, no-penalty, session=, lport=, … change nothing here.
                    _ => {}
                }
            }
            Ok(Command::Auth(req))
        }
        b"CONT" => {
            let id = args.first().and_then(|i| number(i)).ok_or("bad CONT id")?;
            Ok(Command::Cont {
                id,
                data: args.get(1).cloned().unwrap_or_default(),
            })
        }
        _ => Err("unknown command"),
    }
}

/// A request id or version: decimal digits only (no sign, no spaces), as `u32`.
fn number(field: &[u8]) -> Option<u32> {
    if field.is_empty() || field.len() > 10 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// `rip=`/`lip=`: an address, possibly bracketed; anything else is no address.
fn ip(field: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Dovecot's tab-unescaping: `\001` then `0` NUL, `1` \001, `t` TAB, `r` CR, `n` LF (`l`, as
/// the design document spells it, is read as LF too); any other character stands for itself.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != 1 {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b'1') => out.push(1),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n' | b'l') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The inverse of `unescape`, for the values we send.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\u{1}' => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\r' => out.push_str("\u{1}r"),
            '\n' => out.push_str("\u{1}n"),
            '\0' => out.push_str("\u{1}0"),
            c => out.push(c),
        }
    }
    out
}

/// A SASL response: base64, where a lone `=` is the empty response (RFC 4954).
fn decode_base64(data: &[u8]) -> Option<Vec<u8>> {
    if data == b"=" {
        return Some(Vec::new());
    }
    BASE64.decode(data).ok()
}

/// PLAIN's `authzid NUL authcid NUL password` (RFC 4616): the login and the password, or why
/// not.
fn parse_plain(message: &[u8]) -> Result<(String, Vec<u8>), &'static str> {
    let mut parts = message.splitn(3, |b| *b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(REASON_MALFORMED);
    };
    let (Ok(authzid), Ok(authcid)) = (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
    else {
        return Err(REASON_MALFORMED);
    };
    if authcid.is_empty() {
        return Err(REASON_MALFORMED);
    }
    // Logging in as someone else (a master user) is not offered.
    if !authzid.is_empty() && authzid != authcid {
        return Err(REASON_AUTHZID);
    }
    Ok((authcid.to_string(), password.to_vec()))
}

const REASON_FAILED: &str = "Authentication failed";
const REASON_TEMP: &str = "Temporary authentication failure, try again later";
const REASON_CLEARTEXT: &str =
    "Plaintext authentication disallowed on non-secure (SSL/TLS) connections";
const REASON_MECH: &str = "Unsupported authentication mechanism";
const REASON_BASE64: &str = "Invalid base64 data";
const REASON_MALFORMED: &str = "Malformed authentication data";
const REASON_AUTHZID: &str = "Authorization identity differs from the login";
const REASON_SERVICE: &str = "Missing service";
const REASON_BUSY: &str = "Too many authentication requests in progress";
const REASON_DUPLICATE: &str = "Authentication request id already in use";
const REASON_UNKNOWN_ID: &str = "Unknown authentication request id";

/// One connection's protocol state.
struct Conn<'a> {
    service: &'a AuthService,
    /// The client's VERSION has been seen (with our major version).
    greeted: bool,
    requests: HashMap<u32, Request>,
    checks: JoinSet<(u32, Checked)>,
    /// Replies not yet written.
    out: Vec<u8>,
}

impl<'a> Conn<'a> {
    fn new(service: &'a AuthService) -> Self {
        Self {
            service,
            greeted: false,
            requests: HashMap::new(),
            checks: JoinSet::new(),
            out: Vec::new(),
        }
    }

    /// `oauth`: whether some domain has OAuth on, so the bearer mechanisms are offered.
    fn handshake(&mut self, cuid: u32, oauth: bool) {
        let cookie: [u8; 16] = rand::random();
        let cookie: String = cookie.iter().map(|b| format!("{b:02x}")).collect();
        self.line(&format!("VERSION\t{MAJOR}\t{MINOR}"));
        // Postfix wants the MECH lines before SPID: that is how it tells this socket from a
        // Dovecot master socket.
        let bearer = BearerMechanism::ALL.map(Mech::Bearer);
        let bearer = if oauth { &bearer[..] } else { &[] };
        for mech in [Mech::Plain, Mech::Login].iter().chain(bearer) {
            self.line(&format!("MECH\t{}\tplaintext", mech.label()));
        }
        self.line(&format!("SPID\t{}", std::process::id()));
        self.line(&format!("CUID\t{cuid}"));
        self.line(&format!("COOKIE\t{cookie}"));
        self.line("DONE");
    }

    fn line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.push(b'\n');
    }

    fn cont(&mut self, id: u32, challenge: &[u8]) {
        let challenge = BASE64.encode(challenge);
        self.line(&format!("CONT\t{id}\t{challenge}"));
    }

    /// Refuses a request before anything was checked (no attempt counted).
    fn refuse(&mut self, id: u32, mech: Option<Mech>, reason: &str) {
        let label = mech.map_or("other", Mech::label);
        metrics::counter!(METRIC_AUTH, "result" => "refused", "mechanism" => label).increment(1);
        self.line(&format!("FAIL\t{id}\treason={}", escape(reason)));
    }

    async fn flush<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        idle: Duration,
        abort: &CancellationToken,
    ) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        // An MTA that stops reading must hold this task neither forever nor past shutdown.
        let write = timeout(idle, async {
            stream.write_all(&out).await?;
            stream.flush().await
        });
        let written = tokio::select! {
            written = write => written,
            () = abort.cancelled() => return Err(End::Aborted),
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Idle),
        }
    }

    /// Handles one line; `Err` closes the connection.
    fn on_line(&mut self, line: &[u8]) -> Result<(), &'static str> {
        if line.is_empty() {
            return Ok(());
        }
        let command = parse_command(line)?;
        match command {
            Command::Version { major } if major != MAJOR => Err("unsupported major version"),
            Command::Version { .. } => {
                self.greeted = true;
                Ok(())
            }
            _ if !self.greeted => Err("command before VERSION"),
            Command::Cpid => Ok(()),
            Command::Auth(req) => {
                self.auth(req);
                Ok(())
            }
            Command::Cont { id, data } => self.cont_from_client(id, &data),
        }
    }

    fn auth(&mut self, req: AuthRequest) {
        let id = req.id;
        if self.requests.contains_key(&id) {
            return self.refuse(id, None, REASON_DUPLICATE);
        }
        if self.requests.len() >= MAX_IN_FLIGHT {
            return self.refuse(id, None, REASON_BUSY);
        }
        let Some(mech) = Mech::parse(&req.mech) else {
            return self.refuse(id, None, REASON_MECH);
        };
        if req.service.is_none() {
            return self.refuse(id, Some(mech), REASON_SERVICE);
        }
        // Every mechanism is cleartext: refused before any name is resolved or hash run.
        if !self.service.cleartext_allowed(req.secured, req.rip) {
            return self.refuse(id, Some(mech), REASON_CLEARTEXT);
        }
        let ctx = LoginContext {
            peer_ip: req.rip,
            local_ip: req.lip,
            ..LoginContext::default()
        };
        let resp = match req.resp.as_deref().map(decode_base64) {
            None => None,
            Some(Some(data)) => Some(data),
            Some(None) => return self.refuse(id, Some(mech), REASON_BASE64),
        };
        match (mech, resp) {
            (Mech::Plain, None) => {
                self.requests.insert(
                    id,
                    Request {
                        mech,
                        ctx,
                        step: Step::PlainResponse,
                    },
                );
                self.cont(id, b"");
            }
            (Mech::Plain, Some(message)) => self.plain(id, ctx, &message),
            (Mech::Bearer(m), Some(message)) if !message.is_empty() => {
                self.bearer(id, m, ctx, &message)
            }
            (Mech::Bearer(_), _) => {
                self.requests.insert(
                    id,
                    Request {
                        mech,
                        ctx,
                        step: Step::BearerResponse,
                    },
                );
                self.cont(id, b"");
            }
            // SMTP's `AUTH LOGIN` with an initial response gives the user name.
            (Mech::Login, Some(user)) if !user.is_empty() => self.login_user(id, ctx, user),
            (Mech::Login, _) => {
                self.requests.insert(
                    id,
                    Request {
                        mech,
                        ctx,
                        step: Step::LoginUser,
                    },
                );
                self.cont(id, PROMPT_USERNAME.as_bytes());
            }
        }
    }

    fn cont_from_client(&mut self, id: u32, data: &[u8]) -> Result<(), &'static str> {
        let Some(request) = self.requests.remove(&id) else {
            self.refuse(id, None, REASON_UNKNOWN_ID);
            return Ok(());
        };
        let Request { mech, ctx, step } = request;
        if matches!(step, Step::Checking) {
            // Its answer is still coming: a second one would be ambiguous.
            return Err("CONT for a request being checked");
        }
        let Some(data) = decode_base64(data) else {
            self.refuse(id, Some(mech), REASON_BASE64);
            return Ok(());
        };
        match step {
            Step::PlainResponse => self.plain(id, ctx, &data),
            Step::LoginUser => self.login_user(id, ctx, data),
            Step::LoginPassword { login } => self.check(id, Mech::Login, ctx, login, data),
            Step::BearerResponse => match mech {
                Mech::Bearer(m) => self.bearer(id, m, ctx, &data),
                _ => self.refuse(id, Some(mech), REASON_MALFORMED),
            },
            Step::BearerFailed => {
                metrics::counter!(METRIC_AUTH, "result" => "rejected", "mechanism" => mech.label())
                    .increment(1);
                self.line(&format!("FAIL\t{id}\treason={REASON_FAILED}"));
            }
            Step::Checking => {}
        }
        Ok(())
    }

    fn plain(&mut self, id: u32, ctx: LoginContext, message: &[u8]) {
        match parse_plain(message) {
            Ok((login, password)) => self.check(id, Mech::Plain, ctx, login, password),
            Err(reason) => self.refuse(id, Some(Mech::Plain), reason),
        }
    }

    fn login_user(&mut self, id: u32, ctx: LoginContext, user: Vec<u8>) {
        match String::from_utf8(user) {
            Ok(login) if !login.is_empty() => {
                let step = Step::LoginPassword { login };
                self.requests.insert(
                    id,
                    Request {
                        mech: Mech::Login,
                        ctx,
                        step,
                    },
                );
                self.cont(id, PROMPT_PASSWORD.as_bytes());
            }
            _ => self.refuse(id, Some(Mech::Login), REASON_MALFORMED),
        }
    }

    /// A bearer-token message: checked in a task like a password (see `check`).
    fn bearer(&mut self, id: u32, mech: BearerMechanism, ctx: LoginContext, message: &[u8]) {
        let message = match mech.parse_message(message) {
            Ok(message) => message,
            Err(failure) => {
                // Malformed: the error JSON, as for a refused token.
                let checked = Checked {
                    mech: Mech::Bearer(mech),
                    rip: ctx.peer_ip,
                    result: Err(BearerError::Rejected(failure)),
                };
                self.requests.insert(
                    id,
                    Request {
                        mech: Mech::Bearer(mech),
                        ctx,
                        step: Step::Checking,
                    },
                );
                return self.checked(id, checked);
            }
        };
        let authenticator = self.service.authenticator.clone();
        let rip = ctx.peer_ip;
        self.requests.insert(
            id,
            Request {
                mech: Mech::Bearer(mech),
                ctx: ctx.clone(),
                step: Step::Checking,
            },
        );
        let check = async move {
            let result = authenticator.authenticate_bearer(&message, &ctx).await;
            let mech = Mech::Bearer(mech);
            (id, Checked { mech, rip, result })
        };
        self.checks.spawn(check.in_current_span());
    }

    /// Hands the login to the authenticator in a task of its own, so that one request's
    /// failure delay or brute-force penalty does not hold up the others on this connection.
    /// The tasks go with the connection.
    fn check(&mut self, id: u32, mech: Mech, ctx: LoginContext, login: String, password: Vec<u8>) {
        let authenticator = self.service.authenticator.clone();
        let rip = ctx.peer_ip;
        self.requests.insert(
            id,
            Request {
                mech,
                ctx: ctx.clone(),
                step: Step::Checking,
            },
        );
        let check = async move {
            let result = authenticator
                .authenticate(&login, &password, &ctx)
                .await
                .map_err(BearerError::Auth);
            (id, Checked { mech, rip, result })
        };
        self.checks.spawn(check.in_current_span());
    }

    fn checked(&mut self, id: u32, checked: Checked) {
        let request = self.requests.remove(&id);
        let Checked { mech, rip, result } = checked;
        let mechanism = mech.label();
        let rip = rip.map(|ip| ip.to_string());
        let result = match result {
            Ok(who) => {
                tracing::info!(id, mechanism, rip, user = %who.address, "SMTP AUTH succeeded");
                self.line(&format!(
                    "OK\t{id}\tuser={}",
                    escape(&who.address.to_string())
                ));
                "ok"
            }
            Err(BearerError::Rejected(failure)) => {
                tracing::info!(id, mechanism, rip, "SMTP AUTH bearer token refused");
                if let (Some(request), Mech::Bearer(m)) = (request, mech) {
                    self.requests.insert(
                        id,
                        Request {
                            step: Step::BearerFailed,
                            ..request
                        },
                    );
                    self.cont(id, &m.error_challenge(failure));
                }
                // Counted when the FAIL goes out, after the client's answer.
                return;
            }
            Err(BearerError::Auth(AuthError::Rejected)) => {
                tracing::info!(id, mechanism, rip, "SMTP AUTH rejected");
                self.line(&format!("FAIL\t{id}\treason={REASON_FAILED}"));
                "rejected"
            }
            Err(e) => {
                tracing::warn!(id, mechanism, rip, error = %e, "SMTP AUTH could not be checked");
                self.line(&format!("FAIL\t{id}\treason={REASON_TEMP}\ttemp"));
                "unavailable"
            }
        };
        metrics::counter!(METRIC_AUTH, "result" => result, "mechanism" => mechanism).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstore::{Address, Admin, Directory, DomainName, LockOptions, SqliteStore};
    use tenancy::{AuthPolicy, DefaultDomains, hash_password, network_key};
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

    const WAIT: Duration = Duration::from_secs(20);

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<SqliteStore>,
        service: Arc<AuthService>,
    }

    /// example.com (alias example.net) with john (password "secret") and mary, disabled.
    async fn setup(config: Config) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db"), LockOptions::default(), true)
            .await
            .unwrap();
        let store = Arc::new(store);
        let domain = DomainName::parse("example.com").unwrap();
        store.add_domain(&domain).await.unwrap();
        let alias = DomainName::parse("example.net").unwrap();
        store.add_alias(&alias, &domain).await.unwrap();
        let hash = hash_password(b"secret").unwrap();
        for user in ["john@example.com", "mary@example.com"] {
            let address = Address::parse(user).unwrap();
            store.add_user(&address, &hash, None).await.unwrap();
        }
        let mary = Address::parse("mary@example.com").unwrap();
        store.set_user_enabled(&mary, false).await.unwrap();
        let policy = AuthPolicy {
            failure_delay: Duration::ZERO,
            ..AuthPolicy::default()
        };
        let directory: Arc<dyn Directory> = store.clone();
        let authenticator = Authenticator::new(directory, 1, DefaultDomains::default(), policy)
            .unwrap()
            .with_oauth(tenancy::oauth::OAuth::new(store.clone()).unwrap());
        let service = Arc::new(AuthService::new(Arc::new(authenticator), config));
        Fixture {
            _dir: dir,
            store,
            service,
        }
    }

    /// The MTA's side of one connection.
    struct Mta {
        rd: BufReader<ReadHalf<DuplexStream>>,
        wr: WriteHalf<DuplexStream>,
        _abort: tokio_util::sync::DropGuard,
    }

    impl Mta {
        /// Connects and reads the server's handshake.
        async fn connect(service: &Arc<AuthService>) -> (Mta, Vec<String>) {
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            let abort = CancellationToken::new();
            let service = service.clone();
            let token = abort.clone();
            tokio::spawn(async move { service.handle(theirs, token).await });
            let (rd, wr) = tokio::io::split(ours);
            let mut mta = Mta {
                rd: BufReader::new(rd),
                wr,
                _abort: abort.drop_guard(),
            };
            let mut greeting = Vec::new();
            loop {
                let line = mta.line().await.expect("handshake");
                let done = line == "DONE";
                greeting.push(line);
                if done {
                    return (mta, greeting);
                }
            }
        }

        /// Connects and says VERSION and CPID, as Postfix does.
        async fn ready(service: &Arc<AuthService>) -> Mta {
            let (mut mta, _) = Mta::connect(service).await;
            mta.send("VERSION\t1\t2").await;
            mta.send("CPID\t4242").await;
            mta
        }

        async fn send(&mut self, line: &str) {
            self.send_bytes(format!("{line}\n").as_bytes()).await;
        }

        async fn send_bytes(&mut self, bytes: &[u8]) {
            // The server may already have closed: what it answers is what the test checks.
            let _ = self.wr.write_all(bytes).await;
            let _ = self.wr.flush().await;
        }

        /// The next line, or `None` when the server closed the connection.
        async fn line(&mut self) -> Option<String> {
            let mut line = String::new();
            let n = timeout(WAIT, self.rd.read_line(&mut line))
                .await
                .expect("no answer in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            assert!(line.ends_with('\n'), "{line:?}");
            line.pop();
            Some(line)
        }

        async fn closed(&mut self) -> bool {
            self.line().await.is_none()
        }
    }

    fn b64(data: &[u8]) -> String {
        BASE64.encode(data)
    }

    fn plain(login: &str, password: &str) -> String {
        b64(format!("\0{login}\0{password}").as_bytes())
    }

    /// `secured` from a non-trusted client, as Postfix sends under TLS.
    fn auth_plain(id: u32, login: &str, password: &str) -> String {
        format!(
            "AUTH\t{id}\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=198.51.100.7\tsecured\tresp={}",
            plain(login, password)
        )
    }

    fn secured() -> Config {
        Config::default()
    }

    /// OAUTHBEARER and XOAUTH2 are offered once a domain has OAuth settings; a good token logs
    /// in (with an initial response or after an empty `CONT`), a refused one gets the RFC 7628
    /// error JSON as a `CONT` and the `FAIL` after the client's dummy answer.
    #[tokio::test]
    async fn bearer_tokens_log_in_and_a_refused_one_gets_its_error_json() {
        use mailstore::{JwksSource, JwtAlgorithm, OAuthConfig, OAuthSettings};
        use tenancy::oauth::testing::{self, TestKey};
        let f = setup(secured()).await;
        let (_, greeting) = Mta::connect(&f.service).await;
        assert!(
            !greeting.iter().any(|l| l.contains("OAUTH")),
            "{greeting:?}"
        );
        let key = TestKey::ec("k1");
        let file = f._dir.path().join("jwks.json");
        std::fs::write(&file, testing::jwks(&[&key])).unwrap();
        let settings = OAuthConfig {
            issuer: "https://id.example.com".into(),
            jwks: JwksSource::File(file.to_string_lossy().into_owned()),
            audience: "smtp".into(),
            claim: "email".into(),
            algorithms: vec![JwtAlgorithm::Es256],
        };
        let domain = DomainName::parse("example.com").unwrap();
        f.store
            .set_oauth_settings(&domain, &settings)
            .await
            .unwrap();
        let (_, greeting) = Mta::connect(&f.service).await;
        assert_eq!(greeting[3], "MECH\tOAUTHBEARER\tplaintext");
        assert_eq!(greeting[4], "MECH\tXOAUTH2\tplaintext");

        let mut mta = Mta::ready(&f.service).await;
        let token = key.sign(&testing::claims(
            "https://id.example.com",
            "smtp",
            "john@example.com",
        ));
        let resp = b64(&testing::oauthbearer("john@example.net", &token));
        mta.send(&format!(
            "AUTH\t1\tOAUTHBEARER\tservice=smtp\tsecured\tresp={resp}"
        ))
        .await;
        assert_eq!(mta.line().await.unwrap(), "OK\t1\tuser=john@example.com");
        mta.send("AUTH\t2\tXOAUTH2\tservice=smtp\tsecured").await;
        assert_eq!(mta.line().await.unwrap(), "CONT\t2\t");
        let resp = b64(&testing::xoauth2("john@example.com", &token));
        mta.send(&format!("CONT\t2\t{resp}")).await;
        assert_eq!(mta.line().await.unwrap(), "OK\t2\tuser=john@example.com");

        // Mary's login with John's token: the claim names another mailbox.
        let resp = b64(&testing::oauthbearer("mary@example.com", &token));
        mta.send(&format!(
            "AUTH\t3\tOAUTHBEARER\tservice=smtp\tsecured\tresp={resp}"
        ))
        .await;
        let cont = mta.line().await.unwrap();
        let challenge = cont.strip_prefix("CONT\t3\t").expect("a CONT");
        let json: serde_json::Value =
            serde_json::from_slice(&BASE64.decode(challenge).unwrap()).unwrap();
        assert_eq!(json["status"], "invalid_token");
        mta.send("CONT\t3\tAQ==").await;
        assert_eq!(
            mta.line().await.unwrap(),
            format!("FAIL\t3\treason={REASON_FAILED}")
        );
        // Not on a cleartext SMTP session from afar.
        let resp = b64(&testing::xoauth2("john@example.com", &token));
        mta.send(&format!(
            "AUTH\t4\tXOAUTH2\tservice=smtp\trip=198.51.100.7\tresp={resp}"
        ))
        .await;
        assert_eq!(
            mta.line().await.unwrap(),
            format!("FAIL\t4\treason={REASON_CLEARTEXT}")
        );
    }

    #[test]
    fn the_service_can_be_shared_across_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<AuthService>();
    }

    #[tokio::test]
    async fn the_handshake_announces_version_mechanisms_and_done() {
        let f = setup(secured()).await;
        let (_mta, greeting) = Mta::connect(&f.service).await;
        assert_eq!(greeting.len(), 7, "{greeting:?}");
        assert_eq!(greeting[0], "VERSION\t1\t2");
        assert_eq!(greeting[1], "MECH\tPLAIN\tplaintext");
        assert_eq!(greeting[2], "MECH\tLOGIN\tplaintext");
        assert_eq!(greeting[3], format!("SPID\t{}", std::process::id()));
        let cuid = greeting[4].strip_prefix("CUID\t").unwrap();
        assert!(cuid.parse::<u32>().is_ok(), "{cuid}");
        let cookie = greeting[5].strip_prefix("COOKIE\t").unwrap();
        assert_eq!(cookie.len(), 32);
        assert!(
            cookie
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(greeting[6], "DONE");
        let (_other, again) = Mta::connect(&f.service).await;
        assert_ne!(again[4], greeting[4], "each connection has its own CUID");
        assert_ne!(again[5], greeting[5], "and its own cookie");
    }

    #[tokio::test]
    async fn plain_with_an_initial_response_answers_the_canonical_address() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        for (id, login) in [
            (1, "john@example.com"),
            (2, "John@Example.NET"),
            (3, "john%example.com"),
            (4, "john+example.net"),
        ] {
            mta.send(&auth_plain(id, login, "secret")).await;
            assert_eq!(
                mta.line().await.unwrap(),
                format!("OK\t{id}\tuser=john@example.com"),
                "{login}"
            );
        }
        // The authzid may repeat the login.
        let resp = b64(b"john@example.com\0john@example.com\0secret");
        mta.send(&format!(
            "AUTH\t5\tPLAIN\tservice=smtp\tsecured\tresp={resp}"
        ))
        .await;
        assert_eq!(mta.line().await.unwrap(), "OK\t5\tuser=john@example.com");
    }

    #[tokio::test]
    async fn plain_without_an_initial_response_asks_for_it() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        mta.send("AUTH\t7\tPLAIN\tservice=smtp\trip=198.51.100.7\tsecured")
            .await;
        assert_eq!(mta.line().await.unwrap(), "CONT\t7\t");
        mta.send(&format!("CONT\t7\t{}", plain("john@example.net", "secret")))
            .await;
        assert_eq!(mta.line().await.unwrap(), "OK\t7\tuser=john@example.com");
        // The id is free again once answered.
        mta.send("AUTH\t7\tPLAIN\tservice=smtp\tsecured").await;
        assert_eq!(mta.line().await.unwrap(), "CONT\t7\t");
    }

    #[tokio::test]
    async fn login_asks_for_the_username_then_the_password() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        mta.send("AUTH\t3\tLOGIN\tservice=smtp\trip=198.51.100.7\tsecured")
            .await;
        assert_eq!(
            mta.line().await.unwrap(),
            format!("CONT\t3\t{}", b64(b"Username:"))
        );
        mta.send(&format!("CONT\t3\t{}", b64(b"john%example.com")))
            .await;
        assert_eq!(
            mta.line().await.unwrap(),
            format!("CONT\t3\t{}", b64(b"Password:"))
        );
        mta.send(&format!("CONT\t3\t{}", b64(b"secret"))).await;
        assert_eq!(mta.line().await.unwrap(), "OK\t3\tuser=john@example.com");

        // With an initial response (SMTP `AUTH LOGIN dXNlcg==`) it is the username.
        let user = b64(b"john@example.com");
        mta.send(&format!(
            "AUTH\t4\tLOGIN\tservice=smtp\tsecured\tresp={user}"
        ))
        .await;
        assert_eq!(
            mta.line().await.unwrap(),
            format!("CONT\t4\t{}", b64(b"Password:"))
        );
        mta.send(&format!("CONT\t4\t{}", b64(b"wrong"))).await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t4\treason=Authentication failed"
        );
    }

    /// Wrong password, unknown user and disabled user get the same answer.
    #[tokio::test]
    async fn failures_are_indistinguishable() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        let mut answers = Vec::new();
        for (id, login, password) in [
            (1, "john@example.com", "wrong"),
            (2, "nobody@example.com", "secret"),
            (3, "nobody@nowhere.example", "secret"),
            (4, "mary@example.com", "secret"),
        ] {
            mta.send(&auth_plain(id, login, password)).await;
            let answer = mta.line().await.unwrap();
            answers.push(answer.replacen(&id.to_string(), "N", 1));
        }
        assert!(
            answers
                .iter()
                .all(|a| a == "FAIL\tN\treason=Authentication failed"),
            "{answers:?}"
        );
    }

    #[tokio::test]
    async fn cleartext_needs_tls_loopback_or_a_trusted_network() {
        let config = Config {
            trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
            ..Config::default()
        };
        let f = setup(config).await;
        let mut mta = Mta::ready(&f.service).await;
        let resp = plain("john@example.com", "secret");
        let refused =
            "reason=Plaintext authentication disallowed on non-secure (SSL/TLS) connections";
        // Refused before the password is looked at: even the right one.
        for (id, params) in [
            (1, "rip=198.51.100.7".to_string()),
            (2, String::new()),
            (3, "rip=not-an-address".to_string()),
            (4, "rip=2001:db8::1".to_string()),
        ] {
            mta.send(&format!(
                "AUTH\t{id}\tPLAIN\tservice=smtp\t{params}\tresp={resp}"
            ))
            .await;
            assert_eq!(mta.line().await.unwrap(), format!("FAIL\t{id}\t{refused}"));
        }
        mta.send("AUTH\t5\tLOGIN\tservice=smtp\trip=198.51.100.7")
            .await;
        assert_eq!(mta.line().await.unwrap(), format!("FAIL\t5\t{refused}"));
        for (id, params) in [
            (6, "rip=198.51.100.7\tsecured"),
            (7, "rip=127.0.0.1"),
            (8, "rip=::1"),
            (9, "rip=10.1.2.3"),
            (10, "rip=::ffff:10.1.2.3"),
            (11, "secured=tls"),
        ] {
            mta.send(&format!(
                "AUTH\t{id}\tPLAIN\tservice=smtp\t{params}\tresp={resp}"
            ))
            .await;
            assert_eq!(
                mta.line().await.unwrap(),
                format!("OK\t{id}\tuser=john@example.com"),
                "{params}"
            );
        }
    }

    #[tokio::test]
    async fn an_over_long_line_closes_the_connection() {
        let config = Config {
            max_line: 1024,
            ..Config::default()
        };
        let f = setup(config).await;
        let mut mta = Mta::ready(&f.service).await;
        // Without its LF: the server must not wait for one.
        mta.send_bytes(&vec![b'A'; 2000]).await;
        assert!(mta.closed().await);

        let mut mta = Mta::ready(&f.service).await;
        let long = format!(
            "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp={}",
            "A".repeat(1100)
        );
        mta.send(&long).await;
        assert!(mta.closed().await);

        // A line of exactly the limit is fine.
        let mut mta = Mta::ready(&f.service).await;
        let head = "AUTH\t1\tPLAIN\tservice=smtp\tsecured\tx=";
        let line = format!("{head}{}", "A".repeat(1024 - head.len()));
        assert_eq!(line.len(), 1024);
        mta.send(&line).await;
        assert_eq!(mta.line().await.unwrap(), "CONT\t1\t");
    }

    #[tokio::test]
    async fn bad_base64_and_unknown_mechanisms_fail_the_request_only() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        mta.send("AUTH\t1\tPLAIN\tservice=smtp\tsecured\tresp=not*base64")
            .await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t1\treason=Invalid base64 data"
        );
        mta.send("AUTH\t2\tLOGIN\tservice=smtp\tsecured").await;
        mta.line().await.unwrap();
        mta.send("CONT\t2\t%%%").await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t2\treason=Invalid base64 data"
        );
        mta.send("AUTH\t3\tCRAM-MD5\tservice=smtp\tsecured").await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t3\treason=Unsupported authentication mechanism"
        );
        mta.send("AUTH\t4\tPLAIN\tsecured").await;
        assert_eq!(mta.line().await.unwrap(), "FAIL\t4\treason=Missing service");
        // A message that is not `authzid NUL authcid NUL password`.
        mta.send(&format!(
            "AUTH\t5\tPLAIN\tservice=smtp\tsecured\tresp={}",
            b64(b"john")
        ))
        .await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t5\treason=Malformed authentication data"
        );
        // No logging in as someone else.
        let resp = b64(b"mary@example.com\0john@example.com\0secret");
        mta.send(&format!(
            "AUTH\t6\tPLAIN\tservice=smtp\tsecured\tresp={resp}"
        ))
        .await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t6\treason=Authorization identity differs from the login"
        );
        mta.send("CONT\t99\tAAAA").await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t99\treason=Unknown authentication request id"
        );
        // The connection still works.
        mta.send(&auth_plain(7, "john@example.com", "secret")).await;
        assert_eq!(mta.line().await.unwrap(), "OK\t7\tuser=john@example.com");
    }

    #[tokio::test]
    async fn ids_in_flight_are_unique_and_capped() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        mta.send("AUTH\t1\tLOGIN\tservice=smtp\tsecured").await;
        mta.line().await.unwrap();
        mta.send("AUTH\t1\tPLAIN\tservice=smtp\tsecured").await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t1\treason=Authentication request id already in use"
        );
        for id in 2..=MAX_IN_FLIGHT as u32 {
            mta.send(&format!("AUTH\t{id}\tPLAIN\tservice=smtp\tsecured"))
                .await;
            assert_eq!(mta.line().await.unwrap(), format!("CONT\t{id}\t"));
        }
        mta.send("AUTH\t100\tPLAIN\tservice=smtp\tsecured").await;
        assert_eq!(
            mta.line().await.unwrap(),
            "FAIL\t100\treason=Too many authentication requests in progress"
        );
        // The first one still completes, interleaved with the others.
        mta.send(&format!("CONT\t1\t{}", b64(b"john@example.com")))
            .await;
        assert_eq!(
            mta.line().await.unwrap(),
            format!("CONT\t1\t{}", b64(b"Password:"))
        );
        mta.send(&format!("CONT\t1\t{}", b64(b"secret"))).await;
        assert_eq!(mta.line().await.unwrap(), "OK\t1\tuser=john@example.com");
    }

    #[tokio::test]
    async fn protocol_violations_close_the_connection() {
        let f = setup(secured()).await;
        // Another major version.
        let (mut mta, _) = Mta::connect(&f.service).await;
        mta.send("VERSION\t2\t0").await;
        assert!(mta.closed().await);
        // AUTH before VERSION.
        let (mut mta, _) = Mta::connect(&f.service).await;
        mta.send(&auth_plain(1, "john@example.com", "secret")).await;
        assert!(mta.closed().await);
        // An unknown command.
        let mut mta = Mta::ready(&f.service).await;
        mta.send("HELLO\tthere").await;
        assert!(mta.closed().await);
        // An id that is no number.
        let mut mta = Mta::ready(&f.service).await;
        mta.send("AUTH\tx\tPLAIN\tservice=smtp").await;
        assert!(mta.closed().await);
        // Replies to the lines before the bad one still arrive.
        let mut mta = Mta::ready(&f.service).await;
        mta.send("AUTH\t1\tPLAIN\tservice=smtp\tsecured\nBOGUS")
            .await;
        assert_eq!(mta.line().await.unwrap(), "CONT\t1\t");
        assert!(mta.closed().await);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let config = Config {
            idle_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        let f = setup(config).await;
        let mut mta = Mta::ready(&f.service).await;
        // Bytes without an end of line are no activity.
        mta.send_bytes(b"AUTH\t1").await;
        let started = std::time::Instant::now();
        assert!(mta.closed().await);
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn cancelling_abort_ends_the_connection() {
        let f = setup(secured()).await;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let abort = CancellationToken::new();
        let service = f.service.clone();
        let token = abort.clone();
        let task = tokio::spawn(async move { service.handle(theirs, token).await });
        abort.cancel();
        timeout(WAIT, task).await.unwrap().unwrap();
        drop(ours);
    }

    #[test]
    fn parameters_are_tab_unescaped() {
        assert_eq!(
            unescape(b"a\x01tb\x01nc\x01rd\x010e\x011f\x01lg\x01xh\x01"),
            b"a\tb\nc\rd\0e\x01f\ngxh"
        );
        assert_eq!(
            escape("a\tb\nc\rd\0e\u{1}f"),
            "a\u{1}tb\u{1}nc\u{1}rd\u{1}0e\u{1}1f"
        );
        assert_eq!(
            unescape(escape("x\t\u{1}\n\r\0y").as_bytes()),
            b"x\t\x01\n\r\0y"
        );
        let parsed =
            parse_command(b"AUTH\t9\tPL\x01AIN\tservice=s\x01mtp\trip=10.0.0\x01.1\tresp=\x01=")
                .unwrap();
        assert_eq!(
            parsed,
            Command::Auth(AuthRequest {
                id: 9,
                mech: b"PLAIN".to_vec(),
                service: Some(b"smtp".to_vec()),
                rip: Some("10.0.0.1".parse().unwrap()),
                resp: Some(b"=".to_vec()),
                ..AuthRequest::default()
            })
        );
    }

    /// An escaped parameter means what it decodes to, end to end: `secur\001ed` is `secured`.
    #[tokio::test]
    async fn escaped_parameters_are_decoded_on_the_wire() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        let resp = plain("john@example.com", "secret");
        mta.send(&format!(
            "AUTH\t1\tPLAIN\tservice=smtp\trip=198.51.100.7\tsecur\u{1}ed\tresp={resp}"
        ))
        .await;
        assert_eq!(mta.line().await.unwrap(), "OK\t1\tuser=john@example.com");
    }

    #[test]
    fn odd_input_parses_without_panicking() {
        for line in [
            &b""[..],
            b"\t",
            b"AUTH",
            b"AUTH\t",
            b"AUTH\t99999999999\tPLAIN",
            b"AUTH\t-1\tPLAIN",
            b"CONT",
            b"CONT\t1",
            b"VERSION",
            b"VERSION\t\t",
            b"\x01",
            b"\xff\xfe\t\x01",
            b"AUTH\t1\tPLAIN\t=\t==\trip=\trip=[::1]\tlip=[",
        ] {
            let _ = parse_command(line);
        }
        assert_eq!(ip(b"[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(decode_base64(b"="), Some(Vec::new()));
        assert_eq!(decode_base64(b"am9obg"), Some(b"john".to_vec()));
        assert_eq!(parse_plain(b"\0\0"), Err(REASON_MALFORMED));
        assert_eq!(
            parse_plain(b"\0a\0b\0c"),
            Ok(("a".into(), b"b\0c".to_vec()))
        );
    }

    /// SMTP failures count in tenancy's brute-force counters under the SMTP client's address
    /// (`rip`), not the MTA's: after five failures of one (client, account) pair the sixth
    /// waits the pair's penalty (without holding up the connection's other requests), and a
    /// client elsewhere is not counted with it.
    #[tokio::test]
    async fn failures_are_counted_against_the_smtp_clients_address() {
        let f = setup(secured()).await;
        let mut mta = Mta::ready(&f.service).await;
        let attempt = |id: u32, rip: &str| {
            format!(
                "AUTH\t{id}\tPLAIN\tservice=smtp\tsecured\trip={rip}\tresp={}",
                plain("john@example.com", "wrong")
            )
        };
        for id in 1..=tenancy::PAIR_FREE_FAILURES as u32 {
            mta.send(&attempt(id, "203.0.113.9")).await;
            assert!(
                mta.line()
                    .await
                    .unwrap()
                    .starts_with(&format!("FAIL\t{id}\t"))
            );
        }
        mta.send(&attempt(50, "192.0.2.200")).await;
        assert!(mta.line().await.unwrap().starts_with("FAIL\t50\t"));

        let started = std::time::Instant::now();
        mta.send(&attempt(6, "203.0.113.9")).await;
        // While the sixth waits, another request on the same connection is answered.
        let right = plain("john@example.com", "secret");
        mta.send(&format!(
            "AUTH\t60\tPLAIN\tservice=smtp\tsecured\trip=192.0.2.200\tresp={right}"
        ))
        .await;
        assert_eq!(mta.line().await.unwrap(), "OK\t60\tuser=john@example.com");
        assert!(mta.line().await.unwrap().starts_with("FAIL\t6\t"));
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "the sixth failure waits the pair's penalty: {:?}",
            started.elapsed()
        );

        // Each count includes the probe itself.
        let keys = [
            network_key("203.0.113.9".parse().unwrap()),
            network_key("192.0.2.200".parse().unwrap()),
        ];
        let (_, counts) = f
            .store
            .count_auth_attempt(&keys, Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(counts, vec![7, 2]);
    }
}
