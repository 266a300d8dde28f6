//! [`ConnectionErrorCode`]: why a connection was closed, as a QUIC application close code,
//! and [`CloseReason`]: why this node closes one, the only mapping to the code it sends.

use std::fmt;

/// The application close code keynode sends when it closes a QUIC connection.
///
/// Spec: `ConnectionErrorCode`; its text is [`ConnectionErrorCode::reason`]
/// (the spec's `ConnectionErrorReason`). `ForceClose = 1` is the original's; the
/// others are keynode's, so that a peer learns why it was closed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u32)]
pub enum ConnectionErrorCode {
    /// The connection is being destroyed (the original's only code).
    ForceClose = 1,
    /// The connection was idle past its time to live.
    IdleTimeout = 2,
    /// The peer's certificate key is not the NodeId that was dialled.
    PeerIdMismatch = 3,
    /// The peer sent a malformed, oversized or unexpected message.
    ProtocolViolation = 4,
    /// A limit (connections, streams, rate) was reached.
    LimitExceeded = 5,
    /// The node is stopping.
    NodeStopping = 6,
    /// A dial-back proved the peer's address; the peer's own connection
    /// carries the traffic, so this second one is not kept.
    DialBackDone = 7,
}

/// Spec: `ConnectionErrorReason`: the text of a [`ConnectionErrorCode`].
pub type ConnectionErrorReason = &'static str;

impl ConnectionErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ConnectionErrorCode; 7] = [
        Self::ForceClose,
        Self::IdleTimeout,
        Self::PeerIdMismatch,
        Self::ProtocolViolation,
        Self::LimitExceeded,
        Self::NodeStopping,
        Self::DialBackDone,
    ];

    /// The number sent as the QUIC application error code.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The reason phrase sent with the code.
    pub const fn reason(self) -> ConnectionErrorReason {
        match self {
            Self::ForceClose => "NodeConnection is forcing destruction",
            Self::IdleTimeout => "NodeConnection was idle past its time to live",
            Self::PeerIdMismatch => "peer certificate does not match the expected NodeId",
            Self::ProtocolViolation => "peer sent a malformed or unexpected message",
            Self::LimitExceeded => "a connection, stream or rate limit was reached",
            Self::NodeStopping => "node is stopping",
            Self::DialBackDone => "dial-back verified the address; the connection is not needed",
        }
    }

    /// The code with this number, if keynode knows it.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| u64::from(c.code()) == code)
    }
}

impl fmt::Display for ConnectionErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.code())
    }
}

/// Why this node closes a connection (or gives up a peer's stream).
///
/// Every place that closes a connection or resets a stream for a reason
/// names its reason here; [`CloseReason::code`] is the one mapping from
/// reasons to the [`ConnectionErrorCode`] the peer receives.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The connection is destroyed on request (the spec's `destroy`).
    Destroyed,
    /// No use of the connection within its time to live.
    Idle,
    /// The peer's certificate is not the NodeId that was dialled (or it
    /// presented none).
    WrongNodeId,
    /// The peer presented this node's own NodeId.
    OwnNodeId,
    /// `max_connections`, or an admission bound per source, was reached.
    ConnectionLimit,
    /// An idle inbound connection gives its slot to this node's own dial.
    Evicted,
    /// The peer sent a malformed, oversized or unexpected frame.
    ProtocolViolation,
    /// This node is stopping.
    Stopping,
    /// A dial-back proved the peer's address; the peer's own connection
    /// carries the traffic.
    DialBackDone,
}

impl CloseReason {
    /// Every reason, for tests and documentation.
    pub const ALL: [CloseReason; 9] = [
        Self::Destroyed,
        Self::Idle,
        Self::WrongNodeId,
        Self::OwnNodeId,
        Self::ConnectionLimit,
        Self::Evicted,
        Self::ProtocolViolation,
        Self::Stopping,
        Self::DialBackDone,
    ];

    /// The application close code sent for this reason.
    pub const fn code(self) -> ConnectionErrorCode {
        match self {
            Self::Destroyed => ConnectionErrorCode::ForceClose,
            Self::Idle => ConnectionErrorCode::IdleTimeout,
            Self::WrongNodeId | Self::OwnNodeId => ConnectionErrorCode::PeerIdMismatch,
            Self::ConnectionLimit | Self::Evicted => ConnectionErrorCode::LimitExceeded,
            Self::ProtocolViolation => ConnectionErrorCode::ProtocolViolation,
            Self::Stopping => ConnectionErrorCode::NodeStopping,
            Self::DialBackDone => ConnectionErrorCode::DialBackDone,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Destroyed => "the connection was destroyed",
            Self::Idle => "the connection was idle past its time to live",
            Self::WrongNodeId => "the peer is not the NodeId dialled",
            Self::OwnNodeId => "the peer presented this node's own NodeId",
            Self::ConnectionLimit => "a connection limit was reached",
            Self::Evicted => "an idle inbound connection made room for a dial",
            Self::ProtocolViolation => "the peer sent a malformed or unexpected frame",
            Self::Stopping => "the node is stopping",
            Self::DialBackDone => "a dial-back verified the address",
        };
        write!(f, "{text} (code {})", self.code().code())
    }
}

impl From<CloseReason> for ConnectionErrorCode {
    fn from(reason: CloseReason) -> Self {
        reason.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_close_reason_sends_its_code() {
        use CloseReason as R;
        use ConnectionErrorCode as C;
        let table = [
            (R::Destroyed, C::ForceClose),
            (R::Idle, C::IdleTimeout),
            (R::WrongNodeId, C::PeerIdMismatch),
            (R::OwnNodeId, C::PeerIdMismatch),
            (R::ConnectionLimit, C::LimitExceeded),
            (R::Evicted, C::LimitExceeded),
            (R::ProtocolViolation, C::ProtocolViolation),
            (R::Stopping, C::NodeStopping),
            (R::DialBackDone, C::DialBackDone),
        ];
        assert_eq!(
            table.map(|(r, _)| r),
            CloseReason::ALL,
            "the table lists every reason"
        );
        for (reason, code) in table {
            assert_eq!(reason.code(), code, "{reason:?}");
            assert_eq!(ConnectionErrorCode::from(reason), code);
        }
        // Every code is sent for some reason.
        for code in ConnectionErrorCode::ALL {
            assert!(
                CloseReason::ALL.iter().any(|r| r.code() == code),
                "{code:?} is never sent"
            );
        }
    }

    #[test]
    fn force_close_matches_the_original() {
        assert_eq!(ConnectionErrorCode::ForceClose.code(), 1);
        assert_eq!(
            ConnectionErrorCode::ForceClose.reason(),
            "NodeConnection is forcing destruction"
        );
    }

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for code in ConnectionErrorCode::ALL {
            assert_eq!(
                ConnectionErrorCode::from_code(code.code().into()),
                Some(code)
            );
        }
        assert_eq!(ConnectionErrorCode::from_code(0), None);
        assert_eq!(ConnectionErrorCode::from_code(99), None);
    }
}
