//! `pophost user trace`: start, stop and show a user's protocol trace, over
//! `admin_web::provision::traces` as the actor `cli` (checked and audited like the user page and
//! the API). The POP3 side is `pop3_server`'s tracer; expired traces are deleted by it.

use admin_web::Actor;
use admin_web::provision::traces as ops;
use clap::Subcommand;
use mailstore::Address;

use crate::retention::now_ms;

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Record the user's POP3 commands and first reply lines for --minutes (1 to 60), replacing
    /// any trace they had.
    Start {
        address: String,
        #[arg(long, default_value_t = 10)]
        minutes: u32,
    },
    /// Stop recording; the trace stays readable until it ends.
    Stop { address: String },
    /// Print the trace as text (audited as a download).
    Show { address: String },
}

pub async fn command(
    roles: &admin_web::Roles,
    cli: &Actor,
    command: TraceCommand,
) -> anyhow::Result<String> {
    Ok(match command {
        TraceCommand::Start { address, minutes } => {
            let address = Address::parse(&address)?;
            let info = ops::start(roles, cli, &address, minutes, now_ms()).await?;
            format!(
                "tracing {address} until {}",
                admin_web::pages::human_time(info.until)
            )
        }
        TraceCommand::Stop { address } => {
            let address = Address::parse(&address)?;
            if ops::stop(roles, cli, &address, now_ms()).await? {
                format!("stopped the trace of {address}")
            } else {
                anyhow::bail!("{address} is not being traced")
            }
        }
        TraceCommand::Show { address } => {
            let address = Address::parse(&address)?;
            ops::download(roles, cli, &address, now_ms())
                .await?
                .trim_end()
                .to_string()
        }
    })
}
