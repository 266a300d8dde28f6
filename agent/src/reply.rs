//! [`Reply`]: the answer channel of one operation, typed by what the
//! operation returns. The one place where the node's untyped
//! [`OpValue`] becomes a caller's result, so that every agent method
//! returns its own type.

use std::net::SocketAddr;

use futures::channel::oneshot;
use keynode_core::claims::SignedClaim;
use keynode_core::wire::Response;
use keynode_core::{ConnId, LeaseId, NodeAddress, NodeContactAddressData, NodeId, OpValue};

use crate::error::AgentError;

/// Where a node was reached, and how (`find_node`, `ping_node`).
pub type Found = Option<(NodeAddress, NodeContactAddressData)>;

/// One caller's answer channel.
pub(crate) type Tx<T> = oneshot::Sender<Result<T, AgentError>>;

/// A use of a connection the node handed out (`acquire_connection`).
#[derive(Debug)]
pub(crate) struct Leased {
    pub(crate) lease: LeaseId,
    pub(crate) conn: ConnId,
    pub(crate) peer: NodeId,
}

/// The kinds of result an operation has, as its call expects them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResultKind {
    /// Nothing.
    Unit,
    /// Where a node was reached.
    Found,
    /// Whether a node answered.
    Reachable,
    /// Addresses found on mDNS.
    Addresses,
    /// Claims of a chain.
    Chain,
    /// A peer's response.
    Response,
    /// A use of a connection.
    Connection,
}

/// The answer channel of one operation, of the type its caller awaits.
pub(crate) enum Reply {
    Unit(Tx<()>),
    Found(Tx<Found>),
    Reachable(Tx<bool>),
    Addresses(Tx<Vec<SocketAddr>>),
    Chain(Tx<Vec<SignedClaim>>),
    Response(Tx<Response>),
    Connection(Tx<Leased>),
}

impl Reply {
    /// Tells the caller that the operation failed.
    pub(crate) fn fail(self, e: AgentError) {
        let _ = self.send(Err(e));
    }

    /// Sends the operation's result to its caller. A use of a connection
    /// that nobody is there to take any more (its caller's future was
    /// dropped) is returned, for the loop to release.
    #[must_use]
    pub(crate) fn send(self, result: Result<OpValue, AgentError>) -> Option<LeaseId> {
        match self {
            Reply::Unit(tx) => deliver(tx, result, ResultKind::Unit, |_| Some(())).and(None),
            Reply::Found(tx) => deliver(tx, result, ResultKind::Found, |v| match v {
                OpValue::Found(f) => Some(f),
                _ => None,
            })
            .and(None),
            Reply::Reachable(tx) => deliver(tx, result, ResultKind::Reachable, |v| match v {
                OpValue::Reachable(r) => Some(r),
                _ => None,
            })
            .and(None),
            Reply::Addresses(tx) => deliver(tx, result, ResultKind::Addresses, |v| match v {
                OpValue::Addresses(a) => Some(a),
                _ => None,
            })
            .and(None),
            Reply::Chain(tx) => deliver(tx, result, ResultKind::Chain, |v| match v {
                OpValue::Chain { claims, .. } => Some(claims),
                _ => None,
            })
            .and(None),
            Reply::Response(tx) => deliver(tx, result, ResultKind::Response, |v| match v {
                OpValue::Response(r) => Some(r),
                _ => None,
            })
            .and(None),
            Reply::Connection(tx) => deliver(tx, result, ResultKind::Connection, |v| match v {
                OpValue::Connection { lease, conn, peer } => Some(Leased { lease, conn, peer }),
                _ => None,
            })
            .map(|leased| leased.lease),
        }
    }
}

/// Sends `result`, taken as a `T`, on `tx`; the value back if the caller
/// is gone.
fn deliver<T>(
    tx: Tx<T>,
    result: Result<OpValue, AgentError>,
    expected: ResultKind,
    take: impl FnOnce(OpValue) -> Option<T>,
) -> Option<T> {
    let result = result.and_then(|value| {
        take(value).ok_or_else(|| {
            tracing::error!("a {expected:?} call got another kind of result: a bug");
            AgentError::WrongResult { expected }
        })
    });
    match tx.send(result) {
        Ok(()) => None,
        Err(unsent) => unsent.ok(),
    }
}
