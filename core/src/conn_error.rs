//! [`ConnectionErrorCode`]: why a connection was closed, as a QUIC application close code.

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

#[cfg(test)]
mod tests {
    use super::*;

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
