//! mDNS discovery: `MdnsService`s exchanging datagrams over an in-memory
//! network with a virtual clock, malformed input, one run over real UDP
//! multicast on loopback, and `Node`s (mDNS wired to the manager) driven in
//! memory only by their `poll_timeout`, as a real driver drives them.

// Tests take a start instant from the clock; all later times are derived.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use keynode_core::net::mdns::{
    MAX_QUERIES, MdnsError, MdnsService, MdnsTransmit, QUERY_LIFETIME, TXT_NODE_ID_KEY,
};
use keynode_core::net::{DriverEvent, NetCommand, NetConfig, Node};
use keynode_core::{Config, MdnsConfig, NodeId, Now, OpError, OpId, OpValue, QueryId, UserCall};
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
                        // What was due is done: a deadline left in the past
                        // would make a driver spin.
                        assert!(
                            host.mdns.poll_timeout().is_none_or(|next| next > now),
                            "a deadline stays in the past"
                        );
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

/// A question that comes soon after the responder announced (even between
/// its two announcements) is answered like any other, within the response
/// jitter: a recent announcement does not hold the answer back.
#[test]
fn a_query_soon_after_an_announcement_is_answered_within_the_jitter() {
    for offset_ms in [0, 1, 300, 999, 1000, 1001, 1500] {
        let mut lan = Lan::new(2);
        let now = lan.now;
        lan.hosts[1].mdns.announce(now).unwrap();
        lan.run(Duration::from_millis(offset_ms));
        let b = lan.hosts[1].mdns.node_id();
        let now = lan.now;
        lan.hosts[0].mdns.query(now, QueryId(1), b).unwrap();
        lan.run(Duration::from_millis(125));
        assert_eq!(
            answered(&lan.hosts[0], QueryId(1)),
            addresses_of(&lan.hosts[1]),
            "query {offset_ms} ms after the announcement"
        );
    }
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

// Nodes: mDNS wired into `Node`, driven the way a real driver drives it.

/// The mDNS port of the node-level tests (all nodes share it, as on one host).
const NODE_MDNS_PORT: u16 = 45000;

/// A `Node` of the in-memory network, with what its manager reported.
struct NodeHost {
    node: Node,
    /// Its QUIC address, the one it announces.
    quic: SocketAddr,
    /// (operation, result, when) of every finished operation.
    done: Vec<(OpId, Result<OpValue, OpError>, Instant)>,
    /// The mDNS datagrams it sent, with when.
    mdns_sent: Vec<(Instant, Vec<u8>)>,
}

/// Nodes on one host sharing the mDNS port with multicast loop on: every
/// mDNS datagram reaches every node, the sender included, from
/// 127.0.0.1:NODE_MDNS_PORT. Time only moves to the earliest
/// `Node::poll_timeout` (or to a time a test asks for), and a node's
/// `handle_timeout` runs only once its own deadline has come: exactly what a
/// real driver does, so a timer a node does not expose never fires.
struct NodeLan {
    hosts: Vec<NodeHost>,
    start: Instant,
    now: Now,
    /// Timer wakes, to catch a deadline that stays in the past (a driver
    /// would spin on it).
    wakes: usize,
}

impl NodeLan {
    fn new(count: u8) -> Self {
        let now = Now::new(Instant::now(), 1_700_000_000_000);
        let mut lan = Self {
            hosts: Vec::new(),
            start: now.mono,
            now,
            wakes: 0,
        };
        for n in 1..=count {
            let mut config = Config::default();
            config.mdns = Some(MdnsConfig {
                groups: vec![IpAddr::V4(Ipv4Addr::new(224, 0, 0, 250))],
                port: NODE_MDNS_PORT,
            });
            let mut node = Node::new(config, NetConfig::default(), &[n; 32], now, [n; 32]).unwrap();
            let quic = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000 + u16::from(n));
            node.set_announced_addresses(vec![quic]);
            // Starting announces on mDNS.
            node.call(now, UserCall::Start).unwrap();
            lan.hosts.push(NodeHost {
                node,
                quic,
                done: Vec::new(),
                mdns_sent: Vec::new(),
            });
        }
        lan.settle();
        lan
    }

    fn elapsed(&self) -> Duration {
        self.now.mono - self.start
    }

    /// Carries out every command and delivers every mDNS datagram, at the
    /// current time, until the nodes are quiet.
    fn settle(&mut self) {
        let now = self.now;
        for _ in 0..1000 {
            let mut datagrams = Vec::new();
            for host in &mut self.hosts {
                while let Some(command) = host.node.poll() {
                    match command {
                        NetCommand::MdnsTransmit(t) => {
                            assert!(t.destination.ip().is_multicast(), "{:?}", t.destination);
                            host.mdns_sent.push((now.mono, t.contents.clone()));
                            datagrams.push(t.contents);
                        }
                        NetCommand::Store(batch) => {
                            host.node.handle(now, DriverEvent::StoreCommitted(batch.id));
                        }
                        NetCommand::Done { op, result } => {
                            host.done.push((op, result, now.mono));
                        }
                        // No QUIC traffic, no hostnames in these tests.
                        NetCommand::Transmit(_)
                        | NetCommand::Resolve { .. }
                        | NetCommand::Event(_)
                        | NetCommand::App(_) => {}
                    }
                }
            }
            if datagrams.is_empty() {
                return;
            }
            let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), NODE_MDNS_PORT);
            for bytes in datagrams {
                for host in &mut self.hosts {
                    host.node.handle(
                        now,
                        DriverEvent::MdnsDatagram {
                            from,
                            bytes: &bytes,
                        },
                    );
                }
            }
        }
        panic!("the nodes never settle");
    }

    /// Runs the network until `elapsed` since the start, waking nodes only at
    /// their `poll_timeout`.
    fn run_until(&mut self, elapsed: Duration) {
        let until = self.start + elapsed;
        loop {
            self.settle();
            let next = self
                .hosts
                .iter_mut()
                .filter_map(|host| host.node.poll_timeout().map(|(at, _)| at))
                .min();
            let Some(next) = next.filter(|next| *next <= until) else {
                break;
            };
            if next > self.now.mono {
                self.now = self.now.advanced(next - self.now.mono);
            }
            let now = self.now;
            for host in &mut self.hosts {
                if host
                    .node
                    .poll_timeout()
                    .is_some_and(|(due, _)| due <= now.mono)
                {
                    host.node.handle_timeout(now);
                    self.wakes += 1;
                }
            }
            assert!(self.wakes < 10_000, "a deadline stays in the past");
        }
        if until > self.now.mono {
            self.now = self.now.advanced(until - self.now.mono);
        }
        self.settle();
    }

    /// `query_mdns` on node `asker` for node `target`'s NodeId.
    fn query(&mut self, asker: usize, target: usize, timeout: Option<Duration>) -> OpId {
        let node_id = self.hosts[target].node.node_id();
        let now = self.now;
        let op = self.hosts[asker]
            .node
            .call(now, UserCall::QueryMdns { node_id, timeout })
            .unwrap()
            .unwrap();
        self.settle();
        op
    }

    /// The result of operation `op` of node `host` and when it ended.
    fn result(&self, host: usize, op: OpId) -> Option<(Result<OpValue, OpError>, Instant)> {
        self.hosts[host]
            .done
            .iter()
            .find(|(id, _, _)| *id == op)
            .map(|(_, result, at)| (result.clone(), *at))
    }

    /// The mDNS questions node `host` sent (as opposed to its responses).
    fn questions_sent(&self, host: usize) -> usize {
        self.hosts[host]
            .mdns_sent
            .iter()
            .filter(|(_, bytes)| {
                !MessageReader::try_parse(bytes)
                    .unwrap()
                    .header()
                    .flags()
                    .is_response()
            })
            .count()
    }
}

/// Node A queries node B 300 ms after B announced (the reported case): B
/// answers and A finds B's address, although the network wakes the nodes
/// only at their `poll_timeout`.
#[test]
fn a_node_queried_soon_after_announcing_answers_under_a_real_driver() {
    let mut lan = NodeLan::new(2);
    lan.run_until(Duration::from_millis(300));
    let asked = lan.now.mono;
    // The manager's own deadline (1.5 s by default).
    let op = lan.query(0, 1, None);
    lan.run_until(Duration::from_secs(3));
    let (result, at) = lan.result(0, op).expect("the query ended");
    assert_eq!(result, Ok(OpValue::Addresses(vec![lan.hosts[1].quic])));
    assert!(at - asked <= Duration::from_millis(1500));

    // Found within 1.2 s: a query that only waits that long finds it too.
    let mut lan = NodeLan::new(2);
    lan.run_until(Duration::from_millis(300));
    let asked = lan.now.mono;
    let op = lan.query(0, 1, Some(Duration::from_millis(1200)));
    lan.run_until(Duration::from_secs(3));
    let (result, at) = lan.result(0, op).expect("the query ended");
    assert_eq!(result, Ok(OpValue::Addresses(vec![lan.hosts[1].quic])));
    assert_eq!(at - asked, Duration::from_millis(1200));
}

/// Whenever the question comes, right after the announcement, between the
/// two announcements, or long after them, the responder answers it (it is
/// not held back because it multicast its records recently) and the querier
/// has the address within 1.2 s. From 1.5 s on, no announcement falls in the
/// window, so only an answer to the question can find the address.
#[test]
fn a_query_is_answered_within_a_bounded_time_whenever_it_comes() {
    let offsets_ms = [
        0, 1, 20, 150, 300, 700, 999, 1000, 1001, 1100, 1500, 2500, 10_000, 100_000,
    ];
    for offset in offsets_ms {
        let mut lan = NodeLan::new(2);
        lan.run_until(Duration::from_millis(offset));
        let asked = lan.now.mono;
        let op = lan.query(0, 1, Some(Duration::from_millis(1200)));
        lan.run_until(Duration::from_millis(offset) + Duration::from_secs(2));
        let (result, at) = lan.result(0, op).expect("the query ended");
        assert_eq!(
            result,
            Ok(OpValue::Addresses(vec![lan.hosts[1].quic])),
            "query {offset} ms after the announcement"
        );
        assert!(at - asked <= Duration::from_millis(1200));
        // The other way round too, from the same network.
        let asked = lan.now.mono;
        let op = lan.query(1, 0, Some(Duration::from_millis(250)));
        lan.run_until(lan.elapsed() + Duration::from_secs(1));
        let (result, at) = lan.result(1, op).expect("the query ended");
        assert_eq!(
            result,
            Ok(OpValue::Addresses(vec![lan.hosts[0].quic])),
            "reverse query after {offset} ms"
        );
        assert!(at - asked <= Duration::from_millis(250));
    }
}

/// With nobody answering, the querier's retransmissions (RFC 6762 §5.2: 1 s,
/// then doubling) are timers the node exposes, and the nodes are woken only
/// when something is due.
#[test]
fn a_node_repeats_an_unanswered_question_under_a_real_driver() {
    let mut lan = NodeLan::new(2);
    lan.run_until(Duration::from_secs(2));
    let before = lan.questions_sent(0);
    let now = lan.now;
    let op = lan.hosts[0]
        .node
        .call(
            now,
            UserCall::QueryMdns {
                node_id: node_id(99),
                timeout: Some(Duration::from_millis(7500)),
            },
        )
        .unwrap()
        .unwrap();
    lan.run_until(Duration::from_secs(12));
    let (result, _) = lan.result(0, op).expect("the query ended");
    assert_eq!(result, Ok(OpValue::Addresses(Vec::new())));
    // Asked at 0, 1, 3 and 7 s after the query, then ended.
    assert_eq!(lan.questions_sent(0) - before, 4);
    // Ten minutes of idle announcing nodes: a handful of wakes (re-announces,
    // the manager's own timers), not a spin.
    let wakes = lan.wakes;
    lan.run_until(Duration::from_secs(612));
    assert!(lan.wakes - wakes < 200, "{} wakes", lan.wakes - wakes);
}

/// Defect 15.10: a forged response claiming our NodeId-named instance with
/// other records (a "conflict") must not make the node rename itself: no
/// other node can honestly hold a name that is our NodeId, so yielding would
/// only hide us from every querier.
#[test]
fn forged_conflicts_for_our_node_id_leave_the_name_and_the_answers_unchanged() {
    let mut lan = Lan::new(2);
    let now = lan.now;
    lan.hosts[1].mdns.announce(now).unwrap();
    lan.run(Duration::from_secs(3));
    let b = lan.hosts[1].mdns.node_id();
    // The attacker: a conflicting SRV (another host and port) for B's
    // instance, from the standard mDNS port, twice.
    let attacker = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 66)), 5353);
    let forged = crafted_response(b, b, Ipv4Addr::new(10, 0, 0, 66));
    for _ in 0..2 {
        let now = lan.now;
        lan.hosts[1].mdns.handle_datagram(now, attacker, &forged);
        lan.run(Duration::from_secs(2));
    }
    assert!(lan.hosts[1].mdns.is_announcing());
    // Everything B sends still names B's instance, never `<b>-1`.
    let renamed = format!("{b}-1");
    for transmit in &lan.hosts[1].sent {
        assert!(
            !transmit
                .bytes
                .windows(renamed.len())
                .any(|w| w == renamed.as_bytes()),
            "B announced itself under a new name"
        );
    }
    // A querier still finds B, now and after the records' TTL has come
    // round (B re-announces under its own name).
    for (query, after) in [(QueryId(1), 0), (QueryId(2), 200)] {
        lan.run(Duration::from_secs(after));
        let now = lan.now;
        lan.hosts[0].mdns.query(now, query, b).unwrap();
        lan.run(Duration::from_millis(500));
        assert_eq!(
            answered(&lan.hosts[0], query),
            addresses_of(&lan.hosts[1]),
            "B not found {after} s after the forged conflicts"
        );
        lan.hosts[0].mdns.end_query(query);
    }
    assert!(lan.hosts[1].mdns.stats().conflicts_ignored >= 2);
}
