//! `pophost user app-password`: add, list and revoke a user's app passwords over
//! `admin_web::provision::app_passwords` as the actor `cli` (checked and audited like the user
//! page and the API). `add` prints the new password alone on standard output, so a script can
//! capture it; it is never shown again.

use admin_web::Actor;
use admin_web::pages::human_time;
use admin_web::provision::app_passwords as ops;
use clap::Subcommand;
use mailstore::Address;

#[derive(Debug, Subcommand)]
pub enum AppPasswordCommand {
    /// Make a new app password for a device and print it (only it) once.
    Add {
        address: String,
        /// The device's name, unique per user ("Anna's phone").
        #[arg(long)]
        label: String,
    },
    /// One line per app password: label, created, last use (time, client address, mechanism).
    List { address: String },
    /// Revoke one app password; a POP3 session logged in with it ends.
    Revoke {
        address: String,
        #[arg(long)]
        label: String,
    },
}

pub async fn command(
    roles: &admin_web::Roles,
    cli: &Actor,
    command: AppPasswordCommand,
) -> anyhow::Result<String> {
    Ok(match command {
        AppPasswordCommand::Add { address, label } => {
            let address = Address::parse(&address)?;
            ops::add(roles, cli, &address, &label).await?
        }
        AppPasswordCommand::List { address } => {
            let address = Address::parse(&address)?;
            let listed = ops::list(roles, cli, &address).await?;
            if listed.is_empty() {
                return Ok(format!("{address} has no app passwords"));
            }
            listed
                .iter()
                .map(|a| {
                    let used = match a.last_used_at {
                        Some(at) => format!(
                            "last used {} from {} ({})",
                            human_time(at),
                            a.last_ip.as_deref().unwrap_or("-"),
                            a.last_mechanism.as_deref().unwrap_or("-")
                        ),
                        None => "never used".to_string(),
                    };
                    format!("{}\tcreated {}\t{used}", a.label, human_time(a.created_at))
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        AppPasswordCommand::Revoke { address, label } => {
            let address = Address::parse(&address)?;
            ops::revoke(roles, cli, &address, &label).await?;
            format!("revoked app password {:?} of {address}", label.trim())
        }
    })
}
