//! The states of a POP3 session (RFC 1939 §3), each holding only what belongs to it. A transition
//! replaces the state, so what the old one held goes with it: login drops the pre-login slot and
//! any half-done exchange, and leaving TRANSACTION drops the maildrop and the lease's `Kicks`
//! entry.

use mailstore::{Lease, LoginRecord, MessageId, UserPolicy};

use super::sasl::SaslExchange;
use crate::lease::HeldLease;
use crate::maildrop::Maildrop;
use crate::observe::PreLoginSlot;

pub(super) enum State {
    Authorization(Authorization),
    Transaction(Transaction),
    /// QUIT in TRANSACTION whose commit failed: the lease is still held, for `run` to give back.
    Update(Update),
    /// Nothing left to do or give back: QUIT was answered.
    Closed,
}

/// Before login.
#[derive(Default)]
pub(super) struct Authorization {
    /// The name from `USER`, waiting for `PASS`.
    pub user: Option<String>,
    /// An `AUTH` exchange waiting for the client's next response line (RFC 5034); while one is
    /// pending, lines are SASL responses, not commands.
    pub sasl: Option<SaslExchange>,
    /// The `<timestamp>` this connection's greeting carried, when APOP is on.
    pub apop_timestamp: Option<String>,
    /// This connection's place in its address's pre-login limit (see `observe::PreLogin`),
    /// held for its `Drop` only: given back with this state at login.
    pub _slot: Option<PreLoginSlot>,
}

impl Authorization {
    /// RFC 2595: after STLS the session starts over; nothing said before it counts. The greeting
    /// (and its APOP timestamp) is not repeated, and the connection keeps its pre-login slot.
    pub fn restart(self) -> Self {
        Self {
            user: None,
            sasl: None,
            ..self
        }
    }
}

/// Logged in, with the maildrop locked.
pub(super) struct Transaction {
    pub maildrop: Maildrop,
    pub lease: HeldLease,
    /// The user's retention and login delay, for CAPA.
    pub policy: UserPolicy,
    /// How this session logged in, kept with what its UPDATE deletes.
    pub login: LoginRecord,
}

/// QUIT in TRANSACTION (RFC 1939 §6): the deletions to commit under the lease.
pub(super) struct Update {
    pub marked: Vec<MessageId>,
    /// What the session retrieved in full, for `SessionEnd::retrieved_ids`.
    pub retrieved: Vec<MessageId>,
    pub login: LoginRecord,
    /// Messages the maildrop keeps, for the `+OK`.
    pub left: usize,
    pub lease: HeldLease,
}

impl From<Transaction> for Update {
    fn from(t: Transaction) -> Self {
        Self {
            marked: t.maildrop.marked(),
            retrieved: t.maildrop.retrieved().to_vec(),
            login: t.login,
            left: t.maildrop.stat().0,
            lease: t.lease,
        }
    }
}

impl State {
    /// The maildrop lease this state holds, which a session ending without a committed UPDATE
    /// gives back.
    pub fn lease(&self) -> Option<&Lease> {
        match self {
            State::Transaction(t) => Some(t.lease.lease()),
            State::Update(u) => Some(u.lease.lease()),
            State::Authorization(_) | State::Closed => None,
        }
    }

    /// What a session ending in this state retrieved in full, and how it logged in: for
    /// `SessionEnd`.
    pub fn ended(&self) -> (&[MessageId], Option<&LoginRecord>) {
        match self {
            State::Transaction(t) => (t.maildrop.retrieved(), Some(&t.login)),
            State::Update(u) => (&u.retrieved, Some(&u.login)),
            State::Authorization(_) | State::Closed => (&[], None),
        }
    }

    /// The pending `AUTH` exchange, taken out to be stepped.
    pub fn take_sasl(&mut self) -> Option<SaslExchange> {
        match self {
            State::Authorization(a) => a.sasl.take(),
            _ => None,
        }
    }
}
