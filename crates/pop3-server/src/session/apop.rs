//! APOP (RFC 1939 §7) for a session: the greeting's `<timestamp>` and the `APOP` command. Only
//! where the listener has APOP on does the greeting carry a timestamp (clients such as curl try
//! APOP whenever they see one); elsewhere `APOP` is refused. The check itself is
//! `tenancy::ApopVerifier`; a success ends in [`Session::enter_transaction`], like PASS.

use pop3_proto::Reply;

use super::{Session, State, error_reply};

impl Session {
    /// The greeting text after `+OK`; with APOP on, a fresh timestamp that `APOP` is checked
    /// against for the rest of AUTHORIZATION.
    pub(super) fn greeting(&mut self) -> String {
        let Some(apop) = &self.services.apop else {
            return "pophost ready".into();
        };
        let timestamp = apop.timestamp();
        let greeting = format!("pophost ready {timestamp}");
        if let State::Authorization(a) = &mut self.state {
            a.apop_timestamp = Some(timestamp);
        }
        greeting
    }

    /// `APOP name digest` in AUTHORIZATION, against the greeting's `timestamp`. Every failure
    /// gets the same reply.
    pub(super) async fn apop(
        &mut self,
        name: &str,
        digest: &str,
        timestamp: Option<String>,
    ) -> Reply {
        let (Some(apop), Some(timestamp)) = (self.services.apop.clone(), timestamp) else {
            return Reply::Err(None, "APOP is not available here".into());
        };
        self.login_ctx.mechanism = Some("APOP");
        match apop
            .authenticate(name, &timestamp, digest, &self.login_ctx)
            .await
        {
            Ok(who) => self.enter_transaction(who, "APOP").await,
            Err(e) => error_reply("APOP login", &e),
        }
    }
}
