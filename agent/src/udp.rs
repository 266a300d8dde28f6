//! [`UdpIo`]: the QUIC socket's system calls, through quinn-udp: many
//! datagrams per send (segmentation offload, GSO) and per receive
//! (`recvmmsg`, and GRO where the kernel coalesces). On loopback the send
//! system call is the largest cost of a bulk transfer; quinn sends the same
//! way, and this is what lets a stream approach its throughput.
//!
//! Both drivers use it through their runtime's readiness (tokio's
//! `UdpSocket::async_io`, smol's `Async::read_with`/`write_with`): the
//! calls here never block, and report `WouldBlock` when the socket is not
//! ready.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use keynode_core::net::Transmit;
use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

/// Datagrams per [`Transmit`] at most, however many the kernel could take:
/// quinn's figure (`MAX_TRANSMIT_SEGMENTS`, "around 10 is a good
/// compromise" between system calls and the buffer each transmit needs).
const MAX_SEGMENTS: usize = 10;

/// The largest UDP payload received: quinn-proto's `EndpointConfig`
/// default (`max_udp_payload_size`), which the node keeps.
const MAX_UDP_PAYLOAD: usize = 1472;

/// The QUIC socket's offload state (what the kernel supports, found when
/// the socket was made).
pub struct UdpIo {
    state: UdpSocketState,
}

impl UdpIo {
    /// Probes `socket` for GSO and GRO (and turns on what the receive path
    /// needs to report them).
    pub(crate) fn new(socket: &std::net::UdpSocket) -> io::Result<Self> {
        Ok(Self {
            state: UdpSocketState::new(socket.into())?,
        })
    }

    /// Whether a datagram sent may be fragmented on its way (the socket
    /// could not set Don't Fragment): path MTU probes are then meaningless.
    pub fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    /// Datagrams one transmit may carry: 1 without GSO. May drop to 1 at
    /// run time if the kernel refuses a segmented send.
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments().clamp(1, MAX_SEGMENTS)
    }

    /// Sends every datagram of `t`. `WouldBlock` if the socket's buffer is
    /// full (nothing was sent: try again when it is writable); any other
    /// failure is dropped as UDP drops (QUIC retransmits) and reported as
    /// sent, except that an unsupported segmented send lowers
    /// [`UdpIo::max_segments`] for the next ones.
    pub fn send<'s>(&self, socket: impl Into<UdpSockRef<'s>>, t: &Transmit) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: t.destination,
            ecn: None,
            contents: &t.contents,
            segment_size: t.segment_size,
            src_ip: None,
        };
        self.state.send(socket.into(), &transmit)
    }

    /// Receives what is waiting into `buffers` (one system call): the
    /// number of buffers filled, `WouldBlock` if nothing was waiting.
    pub fn recv<'s>(
        &self,
        socket: impl Into<UdpSockRef<'s>>,
        buffers: &mut RecvBuffers,
    ) -> io::Result<usize> {
        let mut slots = buffers.storage.chunks_mut(buffers.slot);
        let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or(&mut [])));
        let n = self
            .state
            .recv(socket.into(), &mut slices, &mut buffers.meta)?;
        buffers.filled = n.min(buffers.meta.len());
        Ok(buffers.filled)
    }

    /// Buffers for [`UdpIo::recv`], sized for this socket's GRO.
    pub fn recv_buffers(&self) -> RecvBuffers {
        let slot = MAX_UDP_PAYLOAD * self.state.gro_segments().max(1);
        RecvBuffers {
            storage: vec![0; slot * quinn_udp::BATCH_SIZE],
            slot,
            meta: vec![RecvMeta::default(); quinn_udp::BATCH_SIZE],
            filled: 0,
        }
    }
}

impl std::fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpIo")
            .field("max_segments", &self.max_segments())
            .field("gro_segments", &self.state.gro_segments())
            .finish()
    }
}

/// What one [`UdpIo::recv`] received: up to `quinn_udp::BATCH_SIZE`
/// buffers, each one datagram or several of one size from one source (GRO).
pub struct RecvBuffers {
    storage: Vec<u8>,
    slot: usize,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl RecvBuffers {
    /// How many buffers the last receive filled.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether the last receive filled none.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The buffers of the last receive: each one datagram, or several of
    /// `stride` bytes (the last maybe shorter) from one source.
    pub(crate) fn segments(&self) -> impl Iterator<Item = (SocketAddr, &[u8], usize)> {
        self.meta
            .iter()
            .zip(self.storage.chunks(self.slot))
            .take(self.filled)
            .map(|(meta, slot)| (meta.addr, slot.get(..meta.len).unwrap_or(slot), meta.stride))
    }
}
