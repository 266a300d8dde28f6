//! mDNS discovery: `MdnsService`s exchanging datagrams over an in-memory
//! network with a virtual clock, malformed input, and one run over real UDP
//! multicast on loopback.

// Tests take a start instant from the clock; all later times are derived.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use keynode_core::net::mdns::{
    MAX_QUERIES, MdnsError, MdnsService, MdnsTransmit, QUERY_LIFETIME, TXT_NODE_ID_KEY,
};
use keynode_core::{MdnsConfig, NodeId, QueryId};
use mdns_proto::Name;
use mdns_proto::wire::{Flags, Header, MessageBuilder, MessageReader};
use proptest::prelude::*;

const PORT: u16 = 64023;
const QUIC_PORT: u16 = 1314;

fn node_id(byte: u8) -> NodeId {
    let mut bytes = [byte; 32];
    bytes[0] = 0xa5;
    NodeId::from_bytes(bytes)
}

/// A node of the in-memory network: its service and the address its mDNS
/// socket sends from.
struct Host {
    mdns: MdnsService,
    from: SocketAddr,
    answers: Vec<(QueryId, Vec<SocketAddr>)>,
    sent: Vec<MdnsTransmit>,
}

impl Host {
    fn new(id: NodeId, last_octet: u8, now: Instant) -> Self {
        let ip = Ipv4Addr::new(192, 168, 1, last_octet);
        let addresses = vec![
            SocketAddr::new(IpAddr::V4(ip), QUIC_PORT),
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(
                    0xfd00,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::from(last_octet),
                )),
                QUIC_PORT,
            ),
        ];
        let mdns = MdnsService::new(id, addresses, now, &MdnsConfig::default()).unwrap();
        Self {
            mdns,
            from: SocketAddr::new(IpAddr::V4(ip), PORT),
            answers: Vec::new(),
            sent: Vec::new(),
        }
    }
}

/// A LAN: every multicast datagram reaches every host, the sender included
/// (multicast loop), and a unicast one the host it is addressed to.
struct Lan {
    hosts: Vec<Host>,
    now: Instant,
}

impl Lan {
    fn new(count: u8) -> Self {
        let now = Instant::now();
        let hosts = (1..=count)
            .map(|i| Host::new(node_id(i), 10 + i, now))
            .collect();
        Self { hosts, now }
    }

    /// Delivers datagrams and fires timeouts until `duration` has passed.
    fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        loop {
            self.deliver();
            let next = self
                .hosts
                .iter()
                .filter_map(|host| host.mdns.poll_timeout())
                .min();
            match next {
                Some(next) if next <= until => {
                    self.now = self.now.max(next);
                    let now = self.now;
                    for host in &mut self.hosts {
                        host.mdns.handle_timeout(now);
                    }
                }
                _ => break,
            }
        }
        self.now = until;
        self.deliver();
    }

    fn deliver(&mut self) {
        for _ in 0..1000 {
            let mut datagrams = Vec::new();
            for host in &mut self.hosts {
                while let Some(transmit) = host.mdns.poll_transmit() {
                    host.sent.push(transmit.clone());
                    datagrams.push((host.from, transmit));
                }
            }
            if datagrams.is_empty() {
                break;
            }
            let now = self.now;
            for (from, transmit) in datagrams {
                let multicast = transmit.destination.ip().is_multicast();
                for host in &mut self.hosts {
                    if multicast || host.from == transmit.destination {
                        host.mdns.handle_datagram(now, from, &transmit.bytes);
                    }
                }
            }
            for host in &mut self.hosts {
                while let Some(answer) = host.mdns.poll_answer() {
                    host.answers.push(answer);
                }
            }
        }
    }
}

fn addresses_of(host: &Host) -> BTreeSet<SocketAddr> {
    host.mdns.addresses().iter().copied().collect()
}

fn answered(host: &Host, query: QueryId) -> BTreeSet<SocketAddr> {
    host.answers
        .iter()
        .filter(|(id, _)| *id == query)
        .flat_map(|(_, addresses)| addresses.iter().copied())
        .collect()
}

#[test]
fn a_query_finds_the_addresses_of_an_announced_node() {
    let mut lan = Lan::new(2);
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_secs(3));
    let b = lan.hosts[1].mdns.node_id();
    let now = lan.now;
    lan.hosts[0].mdns.query(now, QueryId(7), b).unwrap();
    lan.run(Duration::from_millis(500));
    assert_eq!(
        answered(&lan.hosts[0], QueryId(7)),
        addresses_of(&lan.hosts[1])
    );
    // Each address once, although the response came on both groups.
    let reported: usize = lan.hosts[0].answers.iter().map(|(_, a)| a.len()).sum();
    assert_eq!(reported, 2);
    // B heard its own loopback and ignored it (no conflict, still announcing).
    assert!(lan.hosts[1].mdns.stats().own_datagrams > 0);
    assert!(lan.hosts[1].mdns.is_announcing());
}

#[test]
fn the_first_answer_comes_within_the_response_jitter() {
    let mut lan = Lan::new(2);
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_secs(3));
    let b = lan.hosts[1].mdns.node_id();
    let now = lan.now;
    lan.hosts[0].mdns.query(now, QueryId(1), b).unwrap();
    // RFC 6762 §6: a shared-record response waits 20–120 ms.
    lan.run(Duration::from_millis(125));
    assert!(!lan.hosts[0].answers.is_empty());
}

#[test]
fn a_query_in_flight_is_answered_by_a_later_announcement() {
    let mut lan = Lan::new(2);
    let b = lan.hosts[1].mdns.node_id();
    let now = lan.now;
    lan.hosts[0].mdns.query(now, QueryId(3), b).unwrap();
    lan.run(Duration::from_millis(200));
    assert!(lan.hosts[0].answers.is_empty());
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_millis(10));
    assert_eq!(
        answered(&lan.hosts[0], QueryId(3)),
        addresses_of(&lan.hosts[1])
    );
}

#[test]
fn querying_an_unknown_node_finds_nothing() {
    let mut lan = Lan::new(3);
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.hosts[2].mdns.announce(now).unwrap();
    lan.run(Duration::from_secs(2));
    let now = lan.now;
    lan.hosts[0]
        .mdns
        .query(now, QueryId(1), node_id(99))
        .unwrap();
    let sent_before: usize = lan.hosts[1].sent.len();
    lan.run(Duration::from_secs(10));
    assert!(lan.hosts[0].answers.is_empty());
    // Nobody responded to the question (B only re-announces on its own
    // schedule, every 96 s).
    assert_eq!(lan.hosts[1].sent.len(), sent_before);
    // The question was repeated with backoff: at 0, 1, 3 and 7 s.
    let questions = lan.hosts[0].sent.len() / 2;
    assert_eq!(questions, 4);
}

#[test]
fn ended_and_expired_queries_are_cleaned_up() {
    let mut lan = Lan::new(2);
    let b = lan.hosts[1].mdns.node_id();
    let now = lan.now;
    lan.hosts[0].mdns.query(now, QueryId(1), b).unwrap();
    lan.hosts[0]
        .mdns
        .query(now, QueryId(2), node_id(42))
        .unwrap();
    assert_eq!(lan.hosts[0].mdns.queries_in_flight(), 2);
    lan.hosts[0].mdns.end_query(QueryId(1));
    assert_eq!(lan.hosts[0].mdns.queries_in_flight(), 1);
    // An ended query is not answered.
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_secs(1));
    assert!(lan.hosts[0].answers.is_empty());
    // A query never ended stops by itself after its lifetime.
    lan.run(QUERY_LIFETIME + Duration::from_secs(1));
    assert_eq!(lan.hosts[0].mdns.queries_in_flight(), 0);
    let sent = lan.hosts[0].sent.len();
    lan.run(Duration::from_secs(300));
    assert_eq!(lan.hosts[0].sent.len(), sent, "an expired query still asks");
}

#[test]
fn stop_says_goodbye_and_stops_answering() {
    let mut lan = Lan::new(2);
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_secs(2));
    let sent_before = lan.hosts[1].sent.len();
    let now = lan.now;
    lan.hosts[1].mdns.stop(now);
    assert!(!lan.hosts[1].mdns.is_announcing());
    lan.run(Duration::from_secs(3));
    let goodbyes = &lan.hosts[1].sent[sent_before..];
    assert!(!goodbyes.is_empty(), "no goodbye");
    for goodbye in goodbyes {
        let reader = MessageReader::try_parse(&goodbye.bytes).unwrap();
        assert!(reader.header().flags().is_response());
        assert!(reader.answers().all(|record| record.unwrap().ttl() == 0));
    }
    let b = lan.hosts[1].mdns.node_id();
    let now = lan.now;
    lan.hosts[0].mdns.query(now, QueryId(1), b).unwrap();
    lan.run(Duration::from_secs(5));
    assert!(lan.hosts[0].answers.is_empty());
    // Announcing again right after a stop works, although the goodbye of
    // the stop is still pending and holds the name in mdns-proto.
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_secs(2));
    let now = lan.now;
    lan.hosts[1].mdns.stop(now);
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.hosts[0].mdns.query(now, QueryId(2), b).unwrap();
    lan.run(Duration::from_secs(1));
    assert_eq!(
        answered(&lan.hosts[0], QueryId(2)),
        addresses_of(&lan.hosts[1])
    );
}

#[test]
fn the_same_inputs_give_the_same_datagrams() {
    let run = || {
        let mut lan = Lan::new(3);
        lan.now = Instant::now();
        let start = lan.now;
        for host in &mut lan.hosts {
            host.mdns.announce(start).unwrap();
        }
        let b = lan.hosts[1].mdns.node_id();
        lan.hosts[0].mdns.query(start, QueryId(1), b).unwrap();
        lan.run(Duration::from_secs(5));
        lan.hosts
            .iter()
            .map(|host| host.sent.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// A response for `instance_of`'s instance name whose TXT carries `txt_id`.
fn crafted_response(instance_of: NodeId, txt_id: NodeId, ip: Ipv4Addr) -> Vec<u8> {
    let instance = Name::try_from_str(&format!("{instance_of}._polykey._udp.local.")).unwrap();
    let host = Name::try_from_str("somehost.local.").unwrap();
    let mut buf = [0u8; 512];
    let header = Header::new().with_flags(Flags::new().with_response().with_authoritative());
    let mut builder: MessageBuilder<'_, 0> = MessageBuilder::try_new(&mut buf, header).unwrap();
    builder
        .push_srv_answer(&instance, 120, 0, 0, 4000, &host, true)
        .unwrap();
    builder
        .push_txt_answer(
            &instance,
            120,
            [format!("{TXT_NODE_ID_KEY}={txt_id}").into_bytes()],
            true,
        )
        .unwrap();
    builder.push_a_answer(&host, 120, ip, true).unwrap();
    let len = builder.finish().unwrap();
    buf[..len].to_vec()
}

#[test]
fn an_answer_counts_only_with_the_queried_node_id_in_its_txt() {
    let now = Instant::now();
    let mut a = Host::new(node_id(1), 11, now);
    let target = node_id(2);
    let impostor = node_id(3);
    a.mdns.query(now, QueryId(1), target).unwrap();
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 66)), PORT);
    let ip = Ipv4Addr::new(10, 0, 0, 66);

    a.mdns
        .handle_datagram(now, from, &crafted_response(target, impostor, ip));
    assert_eq!(a.mdns.poll_answer(), None);
    assert_eq!(a.mdns.stats().answers_rejected, 1);

    // A response from another port than the mDNS one is not trusted.
    let elsewhere = SocketAddr::new(from.ip(), 5000);
    a.mdns
        .handle_datagram(now, elsewhere, &crafted_response(target, target, ip));
    assert_eq!(a.mdns.poll_answer(), None);

    a.mdns
        .handle_datagram(now, from, &crafted_response(target, target, ip));
    assert_eq!(
        a.mdns.poll_answer(),
        Some((QueryId(1), vec![SocketAddr::new(IpAddr::V4(ip), 4000)]))
    );
}

#[test]
fn names_match_whatever_their_case_and_the_txt_node_id_round_trips() {
    let mut lan = Lan::new(2);
    let b = lan.hosts[1].mdns.node_id();
    let text = b.to_string();
    // The text form is lowercase, so the instance name mdns-proto lowercases
    // is the NodeId text unchanged; the TXT carries it too.
    assert_eq!(text, text.to_ascii_lowercase());
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_millis(10));
    let announcement = lan.hosts[1].sent[0].bytes.clone();
    let reader = MessageReader::try_parse(&announcement).unwrap();
    let txt: Vec<Vec<u8>> = reader
        .answers()
        .map(Result::unwrap)
        .filter_map(|record| match record.rdata_view().unwrap() {
            mdns_proto::wire::Rdata::Txt(txt) => Some(
                txt.segments()
                    .map(|s| s.unwrap().to_vec())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(txt, vec![format!("nodeid={text}").into_bytes()]);
    let parsed: NodeId = text.parse().unwrap();
    assert_eq!(parsed, b);

    // Uppercase every occurrence of the NodeId in a name (after its label
    // length, 53), not in the TXT entry: a responder may send names in any
    // case (RFC 6762 §16).
    let mut shouted = announcement.clone();
    let needle = text.as_bytes();
    let mut index = 1;
    let mut changed = 0;
    while index + needle.len() <= shouted.len() {
        if &shouted[index..index + needle.len()] == needle && shouted[index - 1] == 53 {
            shouted[index..index + needle.len()].make_ascii_uppercase();
            changed += 1;
        }
        index += 1;
    }
    assert!(changed >= 2, "instance and host names");
    let now = lan.now;
    let a = &mut lan.hosts[0];
    a.mdns.query(now, QueryId(9), b).unwrap();
    let from = lan.hosts[1].from;
    let a = &mut lan.hosts[0];
    a.mdns.handle_datagram(now, from, &shouted);
    let (query, addresses) = a.mdns.poll_answer().unwrap();
    assert_eq!(query, QueryId(9));
    assert_eq!(
        addresses.into_iter().collect::<BTreeSet<_>>(),
        addresses_of(&lan.hosts[1])
    );
}

#[test]
fn the_service_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<MdnsService>();
}

#[test]
fn construction_and_limits_are_checked() {
    let now = Instant::now();
    let id = node_id(1);
    let v4 = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2)), port);
    let config = MdnsConfig::default();
    assert!(matches!(
        MdnsService::new(id, vec![v4(1), v4(2)], now, &config),
        Err(MdnsError::MixedPorts { first: 1, other: 2 })
    ));
    assert!(matches!(
        MdnsService::new(id, vec![v4(0)], now, &config),
        Err(MdnsError::Unannounceable { .. })
    ));
    assert!(matches!(
        MdnsService::new(id, vec!["0.0.0.0:1314".parse().unwrap()], now, &config),
        Err(MdnsError::Unannounceable { .. })
    ));
    let many = (0..17u8)
        .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 1314))
        .collect();
    assert!(matches!(
        MdnsService::new(id, many, now, &config),
        Err(MdnsError::TooManyAddresses { found: 17, .. })
    ));
    let no_groups = MdnsConfig {
        groups: vec![],
        port: PORT,
    };
    assert_eq!(
        MdnsService::new(id, vec![], now, &no_groups).unwrap_err(),
        MdnsError::NoGroups
    );
    let unicast_group = MdnsConfig {
        groups: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))],
        port: PORT,
    };
    assert!(matches!(
        MdnsService::new(id, vec![], now, &unicast_group),
        Err(MdnsError::NotMulticast { .. })
    ));
    let port_zero = MdnsConfig {
        port: 0,
        ..MdnsConfig::default()
    };
    assert_eq!(
        MdnsService::new(id, vec![], now, &port_zero).unwrap_err(),
        MdnsError::PortZero
    );

    // A node without addresses can ask but not announce.
    let mut asker = MdnsService::new(id, vec![], now, &config).unwrap();
    assert_eq!(asker.announce(now), Err(MdnsError::NoAddresses));
    for i in 0..MAX_QUERIES {
        asker
            .query(now, QueryId(i as u64), node_id(i as u8))
            .unwrap();
    }
    assert_eq!(
        asker.query(now, QueryId(1000), node_id(200)),
        Err(MdnsError::TooManyQueries { max: MAX_QUERIES })
    );
    // Reusing an id restarts that query rather than adding one.
    asker.query(now, QueryId(0), node_id(201)).unwrap();
    assert_eq!(asker.queries_in_flight(), MAX_QUERIES);
    // The transmit queue is bounded: each query asked on two groups.
    let mut queued = 0;
    while asker.poll_transmit().is_some() {
        queued += 1;
    }
    assert!(queued <= keynode_core::net::mdns::MAX_PENDING_TRANSMITS);
    assert!(asker.stats().transmits_dropped > 0);

    // IPv4-mapped addresses are announced as IPv4.
    let mapped: SocketAddr = "[::ffff:192.168.1.2]:1314".parse().unwrap();
    let service = MdnsService::new(id, vec![mapped, v4(1314)], now, &config).unwrap();
    assert_eq!(service.addresses(), &[v4(1314)]);
}

/// A service that announces and queries, to feed garbage into.
fn busy_service(now: Instant) -> MdnsService {
    let mut host = Host::new(node_id(1), 11, now);
    host.mdns.announce(now).unwrap();
    host.mdns.query(now, QueryId(1), node_id(2)).unwrap();
    host.mdns
}

fn sample_datagrams() -> &'static [Vec<u8>] {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(record_samples)
}

fn record_samples() -> Vec<Vec<u8>> {
    let mut lan = Lan::new(2);
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    let b = lan.hosts[1].mdns.node_id();
    lan.hosts[0].mdns.query(now, QueryId(1), b).unwrap();
    lan.run(Duration::from_secs(2));
    let mut samples: Vec<Vec<u8>> = lan
        .hosts
        .iter()
        .flat_map(|host| host.sent.iter().map(|t| t.bytes.clone()))
        .collect();
    samples.push(crafted_response(
        node_id(2),
        node_id(2),
        Ipv4Addr::LOCALHOST,
    ));
    samples.dedup();
    samples
}

fn from_addresses() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        Just(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 9)),
            PORT
        )),
        Just(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 9)),
            5353
        )),
        Just(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40000)),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        from in from_addresses(),
    ) {
        let now = Instant::now();
        let mut mdns = busy_service(now);
        mdns.handle_datagram(now, from, &bytes);
        mdns.handle_timeout(now + Duration::from_secs(1));
        while mdns.poll_transmit().is_some() {}
        while mdns.poll_answer().is_some() {}
    }

    #[test]
    fn damaged_datagrams_never_panic(
        sample in 0usize..64,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        from in from_addresses(),
    ) {
        let samples = sample_datagrams();
        let mut bytes = samples[sample % samples.len()].clone();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= value;
        }
        // Truncated anywhere, including to nothing.
        let len = cut.index(bytes.len() + 1);
        let now = Instant::now();
        let mut mdns = busy_service(now);
        mdns.handle_datagram(now, from, &bytes[..len]);
        mdns.handle_datagram(now, from, &bytes);
        mdns.handle_timeout(now + Duration::from_secs(1));
        while mdns.poll_transmit().is_some() {}
        while mdns.poll_answer().is_some() {}
    }
}

/// Two services over real UDP multicast on loopback (IPv4 224.0.0.250 with
/// IP_MULTICAST_IF 127.0.0.1 and multicast loop on). Skipped, with the
/// reason printed, where the sandbox has no multicast on `lo`.
#[test]
fn discovery_over_real_multicast_on_loopback() {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::UdpSocket;

    let group = Ipv4Addr::new(224, 0, 0, 250);
    // A port of its own, so parallel runs of this test do not meet.
    let port = 40000 + (std::process::id() % 20000) as u16;
    let open = || -> std::io::Result<UdpSocket> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).into())?;
        socket.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)?;
        socket.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        socket.set_multicast_loop_v4(true)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(socket.into())
    };
    let sockets = match (open(), open()) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(error), _) | (_, Err(error)) => {
            println!("skipped: cannot set up multicast on loopback: {error}");
            return;
        }
    };
    // Is multicast on lo delivered at all?
    let probe = b"keynode mdns probe";
    if let Err(error) = sockets[0].send_to(probe, SocketAddr::new(IpAddr::V4(group), port)) {
        println!("skipped: cannot send to {group} on loopback: {error}");
        return;
    }
    let mut buf = [0u8; 2048];
    match sockets[1].recv_from(&mut buf) {
        Ok((len, _)) if &buf[..len] == probe => {}
        Ok(_) => {}
        Err(error) => {
            println!("skipped: multicast on loopback is not delivered here: {error}");
            return;
        }
    }
    for socket in &sockets {
        while socket.recv_from(&mut buf).is_ok() {}
    }

    let config = MdnsConfig {
        groups: vec![IpAddr::V4(group)],
        port,
    };
    let start = Instant::now();
    let quic = |last: u8| {
        vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            1314,
        )]
    };
    let mut services = [
        MdnsService::new(node_id(1), quic(1), start, &config).unwrap(),
        MdnsService::new(node_id(2), quic(2), start, &config).unwrap(),
    ];
    services[1].announce(start).unwrap();
    services[0].query(start, QueryId(1), node_id(2)).unwrap();

    let mut answers = Vec::new();
    let deadline = start + Duration::from_secs(5);
    while answers.is_empty() && Instant::now() < deadline {
        let now = Instant::now();
        for (service, socket) in services.iter_mut().zip(&sockets) {
            if service.poll_timeout().is_some_and(|due| due <= now) {
                service.handle_timeout(now);
            }
            while let Some(transmit) = service.poll_transmit() {
                socket
                    .send_to(&transmit.bytes, transmit.destination)
                    .unwrap();
            }
        }
        for (service, socket) in services.iter_mut().zip(&sockets) {
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                service.handle_datagram(Instant::now(), from, &buf[..len]);
            }
        }
        while let Some(answer) = services[0].poll_answer() {
            answers.push(answer);
        }
    }
    assert_eq!(answers, vec![(QueryId(1), quic(2))]);
    // Both heard their own datagrams looped back and ignored them.
    assert!(services[0].stats().own_datagrams > 0);
    assert!(services[1].stats().own_datagrams > 0);
}
