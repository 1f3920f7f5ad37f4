//! APOP (RFC 1939 §7) for a session: the greeting's `<timestamp>` and the `APOP` command. Only
//! where the listener has APOP on does the greeting carry a timestamp (clients such as curl try
//! APOP whenever they see one); elsewhere `APOP` is refused. The check itself is
//! `tenancy::ApopVerifier`; a success ends in [`Session::enter_transaction`], like PASS.

use pop3_proto::Reply;

use super::{Session, auth_reply};

impl Session {
    /// The greeting text after `+OK`; with APOP on, a fresh timestamp that `APOP` is checked
    /// against for the rest of the connection.
    pub(super) fn greeting(&mut self) -> String {
        match &self.services.apop {
            Some(apop) => {
                let timestamp = apop.timestamp();
                let greeting = format!("pophost ready {timestamp}");
                self.apop_timestamp = Some(timestamp);
                greeting
            }
            None => "pophost ready".into(),
        }
    }

    /// `APOP name digest` in AUTHORIZATION. Every failure gets the same reply.
    pub(super) async fn apop(&mut self, name: &str, digest: &str) -> Reply {
        let (Some(apop), Some(timestamp)) =
            (self.services.apop.clone(), self.apop_timestamp.clone())
        else {
            return Reply::Err(None, "APOP is not available here".into());
        };
        match apop
            .authenticate(name, &timestamp, digest, &self.login_ctx)
            .await
        {
            Ok(user) => self.enter_transaction(user, name).await,
            Err(e) => auth_reply("APOP login", &e),
        }
    }
}
