//! SASL `AUTH` (RFC 5034) for a session: which mechanisms there are, and each exchange step by
//! step. PLAIN (RFC 4616) and LOGIN check the password through the same
//! `Authenticator::authenticate` as USER/PASS; SCRAM-SHA-256 (RFC 7677) runs the tenancy state
//! machine against the stored verifier. Every success ends in [`Session::enter_transaction`],
//! so the lock and the replies are those of PASS. SCRAM's server-final message goes out as a
//! last `+ ` challenge, which the client answers with an empty line (POP3 has no "success with
//! data", RFC 4422 §4); only then is the maildrop locked and `+OK` sent.
//!
//! OAUTHBEARER (RFC 7628) and XOAUTH2 check a bearer token through
//! `Authenticator::authenticate_bearer`; a refused token gets the RFC 7628 error JSON as a last
//! challenge, which the client answers with a dummy line before the `-ERR`. Both are offered only
//! where PLAIN is (a bearer token is as much a credential as a password) and only while some
//! domain has OAuth settings (asked of the store at each CAPA and bare AUTH: one indexed read).
//!
//! A challenge is `+ base64` (`Reply::Challenge`); `*` cancels with `-ERR`; a response that is
//! not base64 ends the exchange with `-ERR`; the session goes on in AUTHORIZATION either way.

use pop3_proto::{Reply, RespCode, SaslLineError, SaslResponse};
use tenancy::oauth::{BearerError, BearerMechanism};
use tenancy::{AuthError, Authenticated, ScramExchange};

use super::{Session, State, error_reply};

/// The mechanisms offered, in CAPA's `SASL` line and in the reply to a bare `AUTH`.
pub(super) const MECHANISMS: &[&str] = &["PLAIN", "LOGIN", "SCRAM-SHA-256"];

/// An exchange waiting for the client's next response line.
pub(super) enum SaslExchange {
    /// PLAIN sent without an initial response: the next line is the whole message.
    Plain,
    /// LOGIN: `Username:` was sent.
    LoginUser,
    /// LOGIN: `Password:` was sent for `login`.
    LoginPass { login: String },
    /// SCRAM-SHA-256 sent without an initial response: the next line is client-first.
    ScramFirst,
    /// SCRAM-SHA-256: server-first was sent; the next line is client-final.
    ScramFinal(Box<ScramExchange>),
    /// SCRAM-SHA-256: the proof was good and server-final was sent; an empty line logs in.
    /// Who logged in, and with which app password (`None`: the main password).
    ScramDone(Authenticated, Option<i64>),
    /// OAUTHBEARER or XOAUTH2 sent without an initial response: the next line is the message.
    Bearer(BearerMechanism),
    /// The token was refused and the error JSON sent; whatever the client answers, `-ERR`.
    BearerFailed(BearerMechanism),
}

impl SaslExchange {
    /// The mechanism, as the logins counter labels it.
    pub(super) fn mechanism(&self) -> &'static str {
        match self {
            SaslExchange::Plain => "PLAIN",
            SaslExchange::LoginUser | SaslExchange::LoginPass { .. } => "LOGIN",
            SaslExchange::ScramFirst
            | SaslExchange::ScramFinal(_)
            | SaslExchange::ScramDone(..) => "SCRAM-SHA-256",
            SaslExchange::Bearer(m) | SaslExchange::BearerFailed(m) => m.name(),
        }
    }
}

impl Session {
    /// CAPA's `SASL` line, or `None` to offer no mechanism on this connection. The one place
    /// that decides what CAPA says about SASL (before and after login alike).
    pub(super) async fn sasl_capability(&self) -> Option<String> {
        Some(format!("SASL {}", self.mechanisms().await.join(" ")))
    }

    /// The mechanisms offered here: PLAIN and LOGIN send the password itself, so only where
    /// cleartext passwords are allowed (TLS, loopback, `auth.cleartext_networks`); so do the
    /// bearer mechanisms, there only while some domain has OAuth on.
    pub(super) async fn mechanisms(&self) -> Vec<&'static str> {
        let cleartext = self.cleartext_allowed();
        let mut mechanisms: Vec<&'static str> = MECHANISMS
            .iter()
            .copied()
            .filter(|m| cleartext || !matches!(*m, "PLAIN" | "LOGIN"))
            .collect();
        if cleartext && self.services.auth.oauth_offered().await {
            mechanisms.extend(BearerMechanism::ALL.map(BearerMechanism::name));
        }
        mechanisms
    }

    /// `AUTH mechanism [initial-response]` in AUTHORIZATION.
    pub(super) async fn sasl_start(
        &mut self,
        mechanism: &str,
        initial: Option<SaslResponse>,
    ) -> Reply {
        if matches!(mechanism, "PLAIN" | "LOGIN") && !self.cleartext_allowed() {
            return Reply::Err(
                None,
                "plaintext login is not allowed here; use STLS first".into(),
            );
        }
        if let Some(bearer) = BearerMechanism::parse(mechanism) {
            if !self.cleartext_allowed() {
                return Reply::Err(
                    None,
                    "bearer tokens are not allowed here; use STLS first".into(),
                );
            }
            // Not offered, not taken: CAPA and AUTH agree.
            if !self.services.auth.oauth_offered().await {
                return Reply::Err(None, "unsupported SASL mechanism".into());
            }
            return match initial {
                Some(message) => self.bearer(bearer, message.as_bytes()).await,
                None => self.challenge(Vec::new(), SaslExchange::Bearer(bearer)),
            };
        }
        match (mechanism, initial) {
            ("PLAIN", Some(message)) => self.plain(message.as_bytes()).await,
            ("PLAIN", None) => self.challenge(Vec::new(), SaslExchange::Plain),
            ("LOGIN", Some(user)) => self.login_user(&user),
            ("LOGIN", None) => self.challenge(b"Username:".to_vec(), SaslExchange::LoginUser),
            ("SCRAM-SHA-256", Some(first)) => self.scram_first(first.as_bytes()).await,
            ("SCRAM-SHA-256", None) => self.challenge(Vec::new(), SaslExchange::ScramFirst),
            _ => Reply::Err(None, "unsupported SASL mechanism".into()),
        }
    }

    /// Sends `challenge`; the client's next line is the answer to it, for `exchange`.
    fn challenge(&mut self, challenge: Vec<u8>, exchange: SaslExchange) -> Reply {
        if let State::Authorization(a) = &mut self.state {
            a.sasl = Some(exchange);
        }
        Reply::Challenge(challenge)
    }

    /// The client's line for the pending `exchange`.
    pub(super) async fn sasl_step(
        &mut self,
        exchange: SaslExchange,
        line: Result<SaslResponse, SaslLineError>,
    ) -> Reply {
        let response = match line {
            Ok(response) => response,
            Err(SaslLineError::Cancelled) => {
                return Reply::Err(None, "authentication cancelled".into());
            }
            Err(e) => return Reply::Err(None, e.to_string()),
        };
        match exchange {
            SaslExchange::Plain => self.plain(response.as_bytes()).await,
            SaslExchange::LoginUser => self.login_user(&response),
            SaslExchange::LoginPass { login } => {
                self.login(&login, response.as_bytes(), "LOGIN").await
            }
            SaslExchange::ScramFirst => self.scram_first(response.as_bytes()).await,
            SaslExchange::ScramFinal(exchange) => {
                match self
                    .services
                    .auth
                    .scram_finish_device(*exchange, response.as_bytes())
                    .await
                {
                    Ok((who, server_final, device)) => self.challenge(
                        server_final.into_bytes(),
                        SaslExchange::ScramDone(who, device),
                    ),
                    Err(e) => error_reply("SCRAM login", &e),
                }
            }
            SaslExchange::ScramDone(who, device) if response.as_bytes().is_empty() => {
                self.enter_transaction_as(who, "SCRAM-SHA-256", device)
                    .await
            }
            SaslExchange::ScramDone(..) => rejected(),
            SaslExchange::Bearer(m) => self.bearer(m, response.as_bytes()).await,
            // RFC 7628 §3.2.3: the client's dummy answer to the error challenge.
            SaslExchange::BearerFailed(_) => rejected(),
        }
    }

    /// An OAUTHBEARER or XOAUTH2 message: log in, or send the error challenge.
    async fn bearer(&mut self, mechanism: BearerMechanism, message: &[u8]) -> Reply {
        self.login_ctx.mechanism = Some(mechanism.name());
        let checked = match mechanism.parse_message(message) {
            Ok(message) => {
                self.trace.named(&message.login);
                self.services
                    .auth
                    .authenticate_bearer(&message, &self.login_ctx)
                    .await
            }
            Err(failure) => Err(BearerError::Rejected(failure)),
        };
        match checked {
            Ok(who) => self.enter_transaction(who, mechanism.name()).await,
            Err(BearerError::Rejected(failure)) => self.challenge(
                mechanism.error_challenge(failure),
                SaslExchange::BearerFailed(mechanism),
            ),
            Err(BearerError::Auth(e)) => error_reply("OAuth login", &e),
        }
    }

    async fn scram_first(&mut self, client_first: &[u8]) -> Reply {
        self.login_ctx.mechanism = Some("SCRAM-SHA-256");
        match self
            .services
            .auth
            .scram_start(client_first, &self.login_ctx)
            .await
        {
            Ok((exchange, server_first)) => self.challenge(
                server_first.into_bytes(),
                SaslExchange::ScramFinal(Box::new(exchange)),
            ),
            Err(e) => error_reply("SCRAM login", &e),
        }
    }

    fn login_user(&mut self, user: &SaslResponse) -> Reply {
        // Not UTF-8: carried on lossily, so it fails at the password like any unknown user.
        let login = String::from_utf8_lossy(user.as_bytes()).into_owned();
        self.challenge(b"Password:".to_vec(), SaslExchange::LoginPass { login })
    }

    async fn plain(&mut self, message: &[u8]) -> Reply {
        match parse_plain(message) {
            Ok((login, password)) => self.login(&login, password, "PLAIN").await,
            Err(PlainError::Malformed) => Reply::Err(None, "malformed PLAIN message".into()),
            Err(PlainError::OtherAuthzid) => {
                tracing::info!("login failed: PLAIN authorization identity of another user");
                Reply::Err(
                    Some(RespCode::Auth),
                    "authorization identity must be empty or the login itself".into(),
                )
            }
        }
    }
}

fn rejected() -> Reply {
    error_reply("SASL login", &AuthError::Rejected)
}

#[derive(Debug, PartialEq, Eq)]
enum PlainError {
    /// Not `authzid NUL authcid NUL passwd` with a UTF-8, non-empty authcid.
    Malformed,
    /// The client asked to act as someone other than the login (RFC 4616 §2 lets a server
    /// refuse): pophost has no administrators who may read other users' mail.
    OtherAuthzid,
}

/// Splits a PLAIN message (RFC 4616 §2) into the login and the password. The authorization
/// identity must be empty or exactly the login.
fn parse_plain(message: &[u8]) -> Result<(String, &[u8]), PlainError> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed);
    };
    let login = std::str::from_utf8(authcid).map_err(|_| PlainError::Malformed)?;
    if login.is_empty() {
        return Err(PlainError::Malformed);
    }
    if !authzid.is_empty() && authzid != authcid {
        return Err(PlainError::OtherAuthzid);
    }
    Ok((login.to_owned(), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        let ok = |login: &str, pw: &'static [u8]| Ok((login.to_owned(), pw));
        type Parsed = Result<(String, &'static [u8]), PlainError>;
        let cases: Vec<(&[u8], Parsed)> = vec![
            (
                b"\0john@example.com\0s3cret pass",
                ok("john@example.com", b"s3cret pass"),
            ),
            (
                b"john@example.com\0john@example.com\0pw",
                ok("john@example.com", b"pw"),
            ),
            (b"\0john\0", ok("john", b"")),
            // Acting as another user: refused whatever the password.
            (
                b"mary@example.com\0john@example.com\0pw",
                Err(PlainError::OtherAuthzid),
            ),
            (
                b"JOHN@example.com\0john@example.com\0pw",
                Err(PlainError::OtherAuthzid),
            ),
            (b"", Err(PlainError::Malformed)),
            (b"\0john", Err(PlainError::Malformed)),
            (b"\0\0pw", Err(PlainError::Malformed)),
            (b"\0john\0pw\0more", Err(PlainError::Malformed)),
            (b"\0j\xffn\0pw", Err(PlainError::Malformed)),
        ];
        for (message, expected) in cases {
            assert_eq!(
                parse_plain(message),
                expected,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }
}
