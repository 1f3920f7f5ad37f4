//! The services an MTA (Postfix, Exim) asks pophost, so that pophost is the one source of truth
//! for the accounts it hosts: SMTP AUTH over the Dovecot authentication protocol (`auth`), the
//! hosted domains and mailboxes as a Postfix socketmap (`socketmap`), and the quota check at
//! RCPT as a Postfix policy service (`policy`). Each handler runs on any byte stream, so the same
//! code serves a TCP listener and a UNIX socket (`serve`).

pub mod auth;
pub mod policy;
pub mod serve;
pub mod socketmap;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reads what the peer sent next onto `buf`. False when the connection is over: the peer
/// closed it or failed, nothing came by `deadline`, or `abort` was cancelled.
pub(crate) async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    deadline: Instant,
    abort: &CancellationToken,
    service: &'static str,
) -> bool {
    let mut chunk = [0u8; 4096];
    let read = tokio::select! {
        biased;
        () = abort.cancelled() => return false,
        r = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => r,
    };
    match read {
        Ok(Ok(0)) => false,
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, service, "connection lost");
            false
        }
        Err(_) => {
            tracing::debug!(service, "connection idle; closing");
            false
        }
    }
}

/// Writes a reply, giving a peer that does not read `limit`. False when the connection is over
/// (or `abort` was cancelled meanwhile).
pub(crate) async fn write_reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    reply: &[u8],
    limit: Duration,
    abort: &CancellationToken,
) -> bool {
    let wrote = tokio::time::timeout(limit, async {
        stream.write_all(reply).await?;
        stream.flush().await
    })
    .await;
    matches!(wrote, Ok(Ok(()))) && !abort.is_cancelled()
}
