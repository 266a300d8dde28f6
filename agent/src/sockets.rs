//! The agent's UDP sockets, made with `socket2` and handed to the driver
//! as non-blocking std sockets, which each runtime wraps in its own type.

use std::net::{SocketAddr, UdpSocket};

/// The QUIC socket, with buffers large enough that a burst of handshakes
/// (each Initial is 1200 bytes) is not dropped while the loop works.
pub(crate) fn quic_socket(bind: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel caps these at net.core.[rw]mem_max; a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The mDNS socket: the mDNS port, shared with other agents on the host
/// (SO_REUSEADDR/SO_REUSEPORT), joined to the groups on `interface` (an
/// IPv6 group is an `InvalidInput` error: the socket is IPv4),
/// multicasting from it with loopback on (so that agents on one host hear
/// each other).
pub(crate) fn mdns_socket(
    config: &keynode_core::MdnsConfig,
    interface: std::net::Ipv4Addr,
) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, config.port)).into())?;
    for group in &config.groups {
        match group {
            std::net::IpAddr::V4(group) => socket.join_multicast_v4(group, &interface)?,
            // An IPv4 socket cannot join it: refused, not silently dropped.
            std::net::IpAddr::V6(group) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "mDNS group {group} is IPv6, and the agent's mDNS socket is IPv4 only: give IPv4 groups (e.g. 224.0.0.250)"
                    ),
                ));
            }
        }
    }
    socket.set_multicast_if_v4(&interface)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// For a socket bound to the wildcard: the host's addresses that routes
/// to the internet leave from (IPv4 and IPv6 for their family), which a
/// public host's peers see it at. Each is found by connecting a throwaway
/// UDP socket to a documentation address (RFC 5737, RFC 3849) and reading
/// the source the kernel picked: nothing is sent, and the kernel only picks
/// addresses of its own interfaces, so an address found is the host's. A
/// host with no default route finds none (its NAT class is then never
/// public: see `keynode_core::nat`). Empty for a socket bound to one
/// address. Read once, when the agent opens.
pub(crate) fn route_addresses(bound: SocketAddr) -> Vec<std::net::IpAddr> {
    if !bound.ip().is_unspecified() {
        return Vec::new();
    }
    let (any, probe): (SocketAddr, SocketAddr) = if bound.is_ipv4() {
        (([0, 0, 0, 0], 0).into(), ([192, 0, 2, 1], 9).into())
    } else {
        (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            (std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
        )
    };
    UdpSocket::bind(any)
        .and_then(|s| s.connect(probe).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .into_iter()
        .collect()
}
