//! A locked maildrop as one session sees it: the message list fixed at login (mail that arrives
//! during the session shows at the next login) and the session's deletion marks.

use mailstore::{MessageId, MessageMeta};
use pop3_proto::{MsgNum, Reply};

pub struct Maildrop {
    messages: Vec<MessageMeta>,
    deleted: Vec<bool>,
    /// Messages this session retrieved in full (RETR), in the order first retrieved.
    retrieved: Vec<MessageId>,
}

impl Maildrop {
    pub fn new(messages: Vec<MessageMeta>) -> Self {
        let deleted = vec![false; messages.len()];
        Self {
            messages,
            deleted,
            retrieved: Vec::new(),
        }
    }

    /// The one lookup behind LIST n, UIDL n, RETR, TOP and DELE: unknown and deleted numbers
    /// are refused here, so no command can see a deleted message.
    pub fn live(&self, n: MsgNum) -> Result<&MessageMeta, Reply> {
        let i = n.index();
        match (self.messages.get(i), self.deleted.get(i)) {
            (Some(m), Some(false)) => Ok(m),
            (Some(_), _) => Err(Reply::Err(None, format!("message {n} already deleted"))),
            _ => Err(Reply::Err(None, "no such message".into())),
        }
    }

    /// Live messages with their numbers, for STAT and the LIST/UIDL listings.
    pub fn iter_live(&self) -> impl Iterator<Item = (MsgNum, &MessageMeta)> {
        self.iter_live_from(0)
    }

    /// As `iter_live`, from the message at `index` (0-based) on: a listing written in parts.
    pub fn iter_live_from(&self, index: usize) -> impl Iterator<Item = (MsgNum, &MessageMeta)> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .enumerate()
            .skip(index)
            .filter(|(_, (_, deleted))| !**deleted)
            .filter_map(|(i, (m, _))| Some((MsgNum::from_index(i)?, m)))
    }

    pub fn stat(&self) -> (usize, u64) {
        self.iter_live()
            .fold((0, 0), |(count, size), (_, m)| (count + 1, size + m.size))
    }

    pub fn delete(&mut self, n: MsgNum) -> Result<(), Reply> {
        self.live(n)?;
        if let Some(d) = self.deleted.get_mut(n.index()) {
            *d = true;
        }
        Ok(())
    }

    pub fn reset(&mut self) {
        self.deleted.fill(false);
    }

    /// Records that message `id` was retrieved in full (a second RETR of it adds nothing).
    pub fn note_retrieved(&mut self, id: MessageId) {
        if !self.retrieved.contains(&id) {
            self.retrieved.push(id);
        }
    }

    pub fn retrieved(&self) -> &[MessageId] {
        &self.retrieved
    }

    pub fn marked(&self) -> Vec<MessageId> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.id)
            .collect()
    }
}
