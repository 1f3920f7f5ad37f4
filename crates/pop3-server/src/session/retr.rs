//! RETR, TOP and the LIST/UIDL listings: what TRANSACTION sends that may be large. A message
//! is streamed from the store a part at a time, and a listing written out `FLUSH_AT` at a time,
//! so a session holds about the same memory whatever the maildrop's size.

use std::sync::Arc;

use mailstore::{Maildrops, StoreError};
use pop3_proto::{BodyEncoder, MsgNum, Reply, encode_listing_end, encode_listing_line};
use tokio::io::AsyncWrite;
use tokio_util::task::AbortOnDropHandle;

use super::{End, FLUSH_AT, Flow, Session, State, error_reply};
use crate::observe::{self, names};

/// What a LIST or UIDL listing shows of each message.
#[derive(Clone, Copy)]
pub(super) enum Listing {
    Sizes,
    Uids,
}

impl Session {
    /// RETR and TOP: streams the message from the store a part at a time, so memory stays
    /// bounded whatever the message size.
    pub(super) async fn send_message<W: AsyncWrite + Unpin>(
        &mut self,
        n: MsgNum,
        mut body: BodyEncoder,
        retr: bool,
        wr: &mut W,
    ) -> Result<Flow, End> {
        let State::Transaction(t) = &self.state else {
            return Ok(Flow::Continue);
        };
        let message = match t.maildrop.live(n) {
            Ok(m) => m.clone(),
            Err(e) => {
                self.queue(&e);
                return Ok(Flow::Continue);
            }
        };
        let store = self.services.maildrops.clone();
        // The store is read before the status line, so a failing store still gets a clean -ERR.
        // The first read brings the header block and the first body part: all of a small
        // message in one store round trip.
        let read = observe::timed("read_parts", store.read_parts(&message, 0, 2)).await;
        let mut head = match read {
            Ok(parts) if !parts.is_empty() => parts.into_iter(),
            Ok(_) => {
                let missing = StoreError::Invalid(format!("message {} has no parts", message.id.0));
                self.queue(&error_reply("reading message", &missing));
                return Ok(Flow::Continue);
            }
            Err(e) => {
                self.queue(&error_reply("reading message", &e));
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
            if let State::Transaction(t) = &mut self.state {
                t.maildrop.note_retrieved(message.id);
            }
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
    pub(super) async fn send_listing<W: AsyncWrite + Unpin>(
        &mut self,
        first: String,
        listing: Listing,
        wr: &mut W,
    ) -> Result<Flow, End> {
        self.queue(&Reply::Ok(first));
        let mut scratch = String::new();
        let mut from = 0;
        while let State::Transaction(t) = &self.state {
            let mut rest = None;
            for (n, m) in t.maildrop.iter_live_from(from) {
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
    store: Arc<dyn Maildrops>,
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
