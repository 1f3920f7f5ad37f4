//! Migration at first login, wired to the `migrate` crate's POP3 client: the old server a domain
//! names (`--migrate-from`) checks the password and gives up its mail (see `tenancy::migration`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use mailstore::{Maildrops, Policies, UserId};
use migrate::{Source, TlsOptions};

/// The old POP3 servers of domains in migration mode.
pub struct OldPop3 {
    pub policies: Arc<dyn Policies>,
    pub maildrops: Arc<dyn Maildrops>,
    /// `migration.ca_file`.
    pub ca_file: Option<PathBuf>,
}

fn source(url: &str, ca_file: Option<PathBuf>) -> Result<Source, migrate::Error> {
    Source::parse(url, TlsOptions::for_migration(url, ca_file))
}

#[async_trait]
impl tenancy::OldServer for OldPop3 {
    async fn check(&self, url: &str, login: &str, password: &str) -> Result<bool, String> {
        let source = source(url, self.ca_file.clone()).map_err(|e| e.to_string())?;
        migrate::check_login(&source, login, password)
            .await
            .map_err(|e| e.to_string())
    }

    async fn pull(
        &self,
        url: &str,
        user: UserId,
        login: &str,
        password: &str,
    ) -> Result<(), String> {
        let source = source(url, self.ca_file.clone()).map_err(|e| e.to_string())?;
        let report = migrate::pull(
            &*self.policies,
            &*self.maildrops,
            user,
            &source,
            login,
            password,
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(
            added = report.added,
            octets = report.octets,
            present = report.present,
            renumbered = report.renumbered,
            "mail copied from the old server"
        );
        Ok(())
    }
}
