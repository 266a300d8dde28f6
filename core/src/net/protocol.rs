//! [`Protocol`]: the name an application stream or datagram carries, and the
//! header that names it. One QUIC connection per node pair carries every
//! protocol (keynode's own RPC and the application's), so each stream, and
//! each datagram, opens with a header: one byte of length, then the name.
//!
//! Why not one ALPN per protocol, as iroh does: a connection to a node may
//! have cost a signal through a third node and a hole punch, and the pool
//! keeps one per node. A header costs `1 + len` bytes per stream.

use std::fmt;

use bytes::Bytes;

/// The longest protocol name, in bytes.
pub const MAX_PROTOCOL_LEN: usize = 64;

/// Names starting with this are keynode's own; an application cannot
/// register them.
pub const RESERVED_PREFIX: &[u8] = b"keynode/";

/// The protocol of keynode's own requests and claim exchanges.
pub(super) const RPC: &[u8] = b"keynode/rpc/1";

/// A protocol name: 1 to [`MAX_PROTOCOL_LEN`] bytes, e.g. `b"myapp/echo/1"`.
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(Bytes);

/// Why a protocol name was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The name is empty.
    #[error("a protocol name cannot be empty")]
    Empty,
    /// The name is too long.
    #[error("a protocol name of {len} bytes is longer than {MAX_PROTOCOL_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The name starts with `keynode/`, which keynode keeps for itself.
    #[error("protocol names starting with \"keynode/\" are keynode's own")]
    Reserved,
}

impl Protocol {
    /// A protocol name an application may register and open streams of.
    pub fn new(name: impl Into<Bytes>) -> Result<Self, ProtocolError> {
        let name = Self::any(name.into())?;
        if name.is_reserved() {
            return Err(ProtocolError::Reserved);
        }
        Ok(name)
    }

    /// Any well-formed name, keynode's own included.
    fn any(name: Bytes) -> Result<Self, ProtocolError> {
        match name.len() {
            0 => Err(ProtocolError::Empty),
            len if len > MAX_PROTOCOL_LEN => Err(ProtocolError::TooLong { len }),
            _ => Ok(Self(name)),
        }
    }

    /// keynode's own RPC.
    pub(super) fn rpc() -> Self {
        Self(Bytes::from_static(RPC))
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether keynode keeps this name for itself.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_PREFIX)
    }

    /// The header that opens a stream (or datagram) of this protocol.
    pub(super) fn header(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(1 + self.0.len());
        self.write_header(&mut header);
        header
    }

    /// Appends the header to `out`.
    pub(super) fn write_header(&self, out: &mut Vec<u8>) {
        // At most MAX_PROTOCOL_LEN (64), so the length fits its byte.
        out.push(u8::try_from(self.0.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.0);
    }

    /// The length of its header.
    pub(super) fn header_len(&self) -> usize {
        1 + self.0.len()
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol({self})")
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

impl TryFrom<&'static str> for Protocol {
    type Error = ProtocolError;

    fn try_from(name: &'static str) -> Result<Self, ProtocolError> {
        Self::new(Bytes::from_static(name.as_bytes()))
    }
}

/// What the start of a stream or datagram says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) enum Header {
    /// Not all of it yet: this many more bytes are needed at least.
    Partial {
        /// Bytes still missing.
        need: usize,
    },
    /// The protocol and the header's length.
    Complete {
        /// The protocol it names.
        protocol: Protocol,
        /// Bytes of header (the data follows).
        len: usize,
    },
}

/// A header that cannot be one (empty or too long a name).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("malformed protocol header: {0}")]
pub(super) struct HeaderError(pub(super) ProtocolError);

/// Parses the header at the start of `bytes`.
pub(super) fn parse_header(bytes: &[u8]) -> Result<Header, HeaderError> {
    let Some(&len) = bytes.first() else {
        return Ok(Header::Partial { need: 1 });
    };
    let len = usize::from(len);
    if len == 0 {
        return Err(HeaderError(ProtocolError::Empty));
    }
    if len > MAX_PROTOCOL_LEN {
        return Err(HeaderError(ProtocolError::TooLong { len }));
    }
    match bytes.get(1..1 + len) {
        Some(name) => Ok(Header::Complete {
            protocol: Protocol(Bytes::copy_from_slice(name)),
            len: 1 + len,
        }),
        None => Ok(Header::Partial {
            need: 1 + len - bytes.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn header_round_trips_and_parses_in_pieces() {
        let p = Protocol::try_from("myapp/echo/1").expect("a name");
        let mut bytes = p.header();
        assert_eq!(bytes.len(), p.header_len());
        bytes.extend_from_slice(b"data");
        for cut in 0..p.header_len() {
            match parse_header(&bytes[..cut]) {
                Ok(Header::Partial { need }) => assert!(cut + need <= p.header_len()),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert_eq!(
            parse_header(&bytes),
            Ok(Header::Complete {
                protocol: p.clone(),
                len: p.header_len()
            })
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(Protocol::new(Bytes::new()), Err(ProtocolError::Empty));
        assert_eq!(
            Protocol::new(vec![b'a'; 65]),
            Err(ProtocolError::TooLong { len: 65 })
        );
        assert!(Protocol::new(vec![b'a'; 64]).is_ok());
        assert_eq!(
            Protocol::try_from("keynode/rpc/1"),
            Err(ProtocolError::Reserved)
        );
        assert_eq!(parse_header(&[0]), Err(HeaderError(ProtocolError::Empty)));
        assert_eq!(
            parse_header(&[65]),
            Err(HeaderError(ProtocolError::TooLong { len: 65 }))
        );
        assert!(Protocol::rpc().is_reserved());
    }

    /// The start of a stream as a peer may send it: a length byte, often a
    /// valid one, then bytes (often keynode's prefix first), cut anywhere.
    fn stream_start() -> impl Strategy<Value = Vec<u8>> {
        let len = prop_oneof![1u8..=64, any::<u8>()];
        let name = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            proptest::collection::vec(any::<u8>(), 0..72).prop_map(|rest| {
                let mut name = RESERVED_PREFIX.to_vec();
                name.extend(rest);
                name
            }),
        ];
        (len, name, 0usize..=90).prop_map(|(len, name, cut)| {
            let mut bytes = vec![len];
            bytes.extend(name);
            bytes.truncate(cut);
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever a peer sends, the parse is what the length byte says:
        /// refused if it is 0 or over 64; else complete once that many name
        /// bytes are there (the name is exactly them, reserved or not, and
        /// its header is the bytes read), and otherwise it asks for exactly
        /// the missing bytes.
        #[test]
        fn any_stream_start_parses_as_its_length_byte_says(bytes in stream_start()) {
            let parsed = parse_header(&bytes);
            match bytes.first().map(|&b| usize::from(b)) {
                None => prop_assert_eq!(parsed, Ok(Header::Partial { need: 1 })),
                Some(0) => prop_assert_eq!(parsed, Err(HeaderError(ProtocolError::Empty))),
                Some(len) if len > MAX_PROTOCOL_LEN => {
                    prop_assert_eq!(parsed, Err(HeaderError(ProtocolError::TooLong { len })))
                }
                Some(len) if bytes.len() > len => {
                    let Ok(Header::Complete { protocol, len: header_len }) = parsed else {
                        return Err(TestCaseError::fail(format!("{parsed:?}")));
                    };
                    prop_assert_eq!(header_len, 1 + len);
                    prop_assert_eq!(protocol.as_bytes(), &bytes[1..=len]);
                    prop_assert_eq!(protocol.header(), bytes[..=len].to_vec());
                    prop_assert_eq!(
                        protocol.is_reserved(),
                        bytes[1..=len].starts_with(RESERVED_PREFIX)
                    );
                }
                Some(len) => {
                    prop_assert_eq!(&parsed, &Ok(Header::Partial { need: 1 + len - bytes.len() }));
                    // The bytes it asks for complete it.
                    let mut more = bytes.clone();
                    more.resize(1 + len, b'x');
                    let complete = matches!(
                        parse_header(&more),
                        Ok(Header::Complete { len: l, .. }) if l == 1 + len
                    );
                    prop_assert!(complete);
                }
            }
        }
    }
}
