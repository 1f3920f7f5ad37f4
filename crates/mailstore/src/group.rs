//! Group commit for deliveries. An acknowledged delivery must be durable, so each needs a
//! committed (fsynced) transaction; one commit per delivery makes the fsync, and on SQLite the
//! single writer lock, the bound of LMTP. Instead one task per store takes every delivery
//! waiting at that moment into one transaction and one commit, then answers them all: while
//! a commit is flushing, the next deliveries queue up and share the following one.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::{Parcel, Result, StoreError};

/// The most deliveries one transaction takes (a bound on how long the write lock is held).
const MAX_BATCH: usize = 64;

/// One outcome per recipient of a parcel.
pub(crate) type Outcomes = Vec<Result<()>>;

/// A backend's way of storing parcels.
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// Stores every parcel in one transaction and commits it before returning: one list of
    /// outcomes per parcel, in order. On `Err` nothing of the batch was stored.
    async fn write_batch(&self, parcels: &[Parcel]) -> Result<Vec<Outcomes>>;
}

struct Job {
    parcel: Parcel,
    reply: oneshot::Sender<Result<Outcomes>>,
}

/// The handle deliveries go through; the writer task ends when the store (its last handle) is
/// dropped.
pub(crate) struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    pub(crate) fn start(writer: impl BatchWriter) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(writer, queue));
        Self { jobs }
    }

    pub(crate) async fn deliver(&self, parcel: Parcel) -> Result<Outcomes> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { parcel, reply })
            .map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?
    }
}

async fn run(writer: impl BatchWriter, mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (parcels, replies): (Vec<Parcel>, Vec<_>) =
            jobs.drain(..).map(|j| (j.parcel, j.reply)).unzip();
        match writer.write_batch(&parcels).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The session may have gone (its client hung up); the mail is stored anyway.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if parcels.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            Err(e) => {
                // One parcel's failure must not fail the others: each goes again on its own.
                tracing::debug!(error = %e, batch = parcels.len(), "batch failed; delivering singly");
                for (parcel, reply) in parcels.iter().zip(replies) {
                    let alone = writer
                        .write_batch(std::slice::from_ref(parcel))
                        .await
                        .map(|mut v| v.pop().unwrap_or_default());
                    let _ = reply.send(alone);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{Recipient, UserId};

    /// Records each batch's parcel sizes; holds the first batch until told, so that the
    /// deliveries sent meanwhile queue up; fails any batch holding a parcel of size 13.
    struct Fake {
        batches: Arc<Mutex<Vec<Vec<u64>>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait]
    impl BatchWriter for Fake {
        async fn write_batch(&self, parcels: &[Parcel]) -> Result<Vec<Outcomes>> {
            let _pass = self.gate.acquire().await.expect("gate");
            self.batches
                .lock()
                .expect("lock")
                .push(parcels.iter().map(|p| p.size).collect());
            if parcels.iter().any(|p| p.size == 13) {
                return Err(StoreError::Invalid("bad parcel".into()));
            }
            Ok(parcels
                .iter()
                .map(|p| p.recipients.iter().map(|_| Ok(())).collect())
                .collect())
        }
    }

    fn parcel(size: u64) -> Parcel {
        Parcel {
            size,
            recipients: vec![Recipient {
                user: UserId(1),
                prefix: Vec::new(),
            }],
            ..Parcel::default()
        }
    }

    #[tokio::test]
    async fn waiting_deliveries_share_a_batch_and_a_bad_one_fails_alone() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let group = Arc::new(GroupCommit::start(Fake {
            batches: batches.clone(),
            gate: gate.clone(),
        }));
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.deliver(parcel(1)).await }
        });
        tokio::task::yield_now().await;
        let rest: Vec<_> = [2, 13, 4, 5]
            .into_iter()
            .map(|size| {
                let group = group.clone();
                tokio::spawn(async move { (size, group.deliver(parcel(size)).await) })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(100);
        assert!(first.await.expect("task").is_ok());
        for task in rest {
            let (size, outcome) = task.await.expect("task");
            match size {
                13 => assert!(matches!(outcome, Err(StoreError::Invalid(_)))),
                _ => assert_eq!(outcome.expect("delivered").len(), 1),
            }
        }
        let batches = batches.lock().expect("lock").clone();
        // The first alone, then the four that waited together (failing), then each singly.
        assert_eq!(batches[0], vec![1]);
        assert_eq!(batches[1].len(), 4, "{batches:?}");
        assert_eq!(batches[2..].len(), 4, "{batches:?}");
    }
}
