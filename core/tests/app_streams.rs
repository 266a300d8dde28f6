//! Application streams and datagrams between full nodes on the virtual
//! datagram network: what a user of `Node`'s stream API sees (echo, a large
//! transfer under flow control, unidirectional streams, datagrams,
//! refusals, inbound caps), that every stream leaves the tables once done,
//! that answered keynode requests do too, and that an open stream keeps its
//! connection from idling out. Also keynode's own streams under a peer that
//! misbehaves (issue 15): requests and claim exchanges leave every table,
//! half-sent frames are bounded and time out, streams ended mid-frame are
//! reset.

mod common;
mod datagram_net;

use std::time::Duration;

use datagram_net::{DatagramNet, address, config};
use keynode_core::net::{
    AppEvent, NetConfig, Protocol, ProtocolOptions, Refusal, StreamDir, StreamError, StreamHandle,
    StreamTables,
};
use keynode_core::{ConnId, ConnectionErrorCode, NodeId, OpValue, UserCall};

/// Steps any one wait may take before the test fails.
const STEPS: usize = 200_000;

fn protocol(name: &'static str) -> Protocol {
    Protocol::try_from(name).expect("a protocol name")
}

/// Two nodes, 1 and 2, and a connection from 1 to 2 that 1 holds a use of.
struct Pair {
    net: DatagramNet,
    a: NodeId,
    b: NodeId,
    /// Node 1's connection to node 2 (node 1 keeps a use of it).
    conn: ConnId,
}

fn pair() -> Pair {
    pair_with(config(), NetConfig::default())
}

/// Two nodes with node 2 (the one streams are opened to) configured so.
fn pair_with(b_config: keynode_core::Config, b_net: NetConfig) -> Pair {
    let mut net = DatagramNet::new();
    let a = net.add(1);
    let b = net.add_with(2, b_config, b_net);
    net.know(1, b, 2);
    let op = net.call(
        1,
        UserCall::AcquireConnection {
            node_id: b,
            timeout: None,
        },
    );
    // Node 1 keeps the use (its lease) for the whole test.
    let Ok(OpValue::Connection { conn, peer, .. }) = net.wait(1, op) else {
        panic!("node 1 gets no connection to node 2");
    };
    assert_eq!(peer, b);
    Pair { net, a, b, conn }
}

/// The application events of host `n` from `*seen` on; moves `*seen` past them.
fn events(net: &DatagramNet, n: u8, seen: &mut usize) -> Vec<AppEvent> {
    let app = &net.hosts[&address(n)].app;
    let new = app.get(*seen..).unwrap_or_default().to_vec();
    *seen = app.len();
    new
}

/// Steps until host `n` has an application event after `*seen` that `pick`
/// takes; moves `*seen` past it.
fn next_event<T>(
    net: &mut DatagramNet,
    n: u8,
    seen: &mut usize,
    mut pick: impl FnMut(&AppEvent) -> Option<T>,
) -> T {
    for _ in 0..STEPS {
        let app = &net.hosts[&address(n)].app;
        while *seen < app.len() {
            let event = &app[*seen];
            *seen += 1;
            if let Some(found) = pick(event) {
                return found;
            }
        }
        assert!(net.step(), "the network went idle");
    }
    panic!("node {n}: the event never came");
}

/// Steps until node `n` is told of an incoming stream.
fn incoming(net: &mut DatagramNet, n: u8, seen: &mut usize) -> (StreamHandle, NodeId, Protocol) {
    next_event(net, n, seen, |e| match e {
        AppEvent::Incoming {
            stream,
            peer,
            protocol,
        } => Some((*stream, *peer, protocol.clone())),
        _ => None,
    })
}

/// Reads a stream to its end (or error), waiting on `Readable` events.
fn read_to_end(net: &mut DatagramNet, n: u8, h: StreamHandle) -> Result<Vec<u8>, StreamError> {
    let mut seen = net.hosts[&address(n)].app.len();
    let mut out = Vec::new();
    loop {
        let now = net.now;
        let read = net.node(n).read(now, h, 64 * 1024);
        net.pump(address(n));
        match read {
            Ok(Some(bytes)) => out.extend_from_slice(&bytes),
            Ok(None) => return Ok(out),
            Err(StreamError::Blocked) => next_event(net, n, &mut seen, |e| {
                (*e == AppEvent::Readable(h)).then_some(())
            }),
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data`, waiting on `Writable` events when blocked.
fn write_all(net: &mut DatagramNet, n: u8, h: StreamHandle, data: &[u8]) {
    let mut seen = net.hosts[&address(n)].app.len();
    let mut at = 0;
    while at < data.len() {
        let now = net.now;
        let written = net.node(n).write(now, h, &data[at..]);
        net.pump(address(n));
        match written {
            Ok(k) => at += k,
            Err(StreamError::Blocked) => next_event(net, n, &mut seen, |e| {
                (*e == AppEvent::Writable(h)).then_some(())
            }),
            Err(e) => panic!("node {n} writing {h:?}: {e}"),
        }
    }
}

fn finish(net: &mut DatagramNet, n: u8, h: StreamHandle) {
    let now = net.now;
    net.node(n).finish(now, h).expect("finished");
    net.pump(address(n));
}

fn open(
    net: &mut DatagramNet,
    n: u8,
    conn: ConnId,
    protocol: &Protocol,
    dir: StreamDir,
) -> StreamHandle {
    let now = net.now;
    let h = net
        .node(n)
        .open_stream(now, conn, protocol, dir)
        .expect("a stream");
    net.pump(address(n));
    h
}

fn tables(net: &DatagramNet, n: u8) -> StreamTables {
    net.hosts[&address(n)].node.stream_tables()
}

/// Steps until both nodes' stream tables are empty, for at most a second
/// of virtual time (the last frames of a stream may still be in flight when
/// its user is done with it; far less than any idle timeout, which would
/// empty the tables by closing the connection).
fn assert_tables_empty(net: &mut DatagramNet) {
    let until = net.now.mono + Duration::from_secs(1);
    let empty = |net: &DatagramNet| {
        net.now.mono >= until
            || [1, 2].iter().all(|&n| {
                let t = tables(net, n);
                t.streams == 0 && t.app_streams == 0
            })
    };
    net.run_until(STEPS, empty);
    assert_eq!(
        (tables(net, 1), tables(net, 2)),
        (StreamTables::default(), StreamTables::default()),
        "every stream has left both nodes' tables"
    );
}

/// FNV-1a: a checksum of what went through a stream.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` bytes of a seeded xorshift sequence.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn an_echo_protocol_returns_the_bytes_and_the_end_of_stream() {
    let Pair {
        mut net, a, conn, ..
    } = pair();
    let echo = protocol("test/echo/1");
    net.node(2)
        .register_protocol(echo.clone(), ProtocolOptions::default())
        .expect("registered");
    let mut seen = 0;

    let h = open(&mut net, 1, conn, &echo, StreamDir::Bi);
    write_all(&mut net, 1, h, b"hello over keynode");
    finish(&mut net, 1, h);

    let (hb, peer, got) = incoming(&mut net, 2, &mut seen);
    assert_eq!((peer, got, hb.dir()), (a, echo.clone(), StreamDir::Bi));
    let request = read_to_end(&mut net, 2, hb).expect("the request");
    assert_eq!(request, b"hello over keynode");
    write_all(&mut net, 2, hb, &request);
    finish(&mut net, 2, hb);

    assert_eq!(
        read_to_end(&mut net, 1, h),
        Ok(b"hello over keynode".to_vec())
    );
    // Both sides are done: reading again finds the stream closed.
    let now = net.now;
    assert_eq!(net.node(1).read(now, h, 10), Err(StreamError::Closed(h)));
    assert_tables_empty(&mut net);
    assert_eq!(net.hosts[&address(2)].node.inbound_streams(&echo), 0);
}

/// 8 MiB through one stream: the writer is held back by flow control
/// (`Blocked`) and resumes on `Writable` only, the reader reads on
/// `Readable` only, and what arrives is what was sent.
#[test]
fn a_large_transfer_goes_through_flow_control_intact() {
    const TOTAL: usize = 8 << 20;
    let Pair { mut net, conn, .. } = pair();
    let bulk = protocol("test/bulk/1");
    net.node(2)
        .register_protocol(bulk.clone(), ProtocolOptions::default())
        .expect("registered");
    let data = pattern(TOTAL, 7);
    let h = open(&mut net, 1, conn, &bulk, StreamDir::Uni);
    let (mut seen_a, mut seen_b) = (0, 0);
    let (mut sent, mut blocked, mut finished) = (0, 0u32, false);
    let mut writable = true;
    let mut reader: Option<StreamHandle> = None;
    let mut readable = false;
    let mut received = Vec::with_capacity(TOTAL);
    let mut ended = false;
    for _ in 0..STEPS {
        let now = net.now;
        if writable && !finished {
            while sent < TOTAL {
                match net.node(1).write(now, h, &data[sent..]) {
                    Ok(k) => sent += k,
                    Err(StreamError::Blocked) => {
                        blocked += 1;
                        writable = false;
                        break;
                    }
                    Err(e) => panic!("writing: {e}"),
                }
            }
            if sent == TOTAL {
                net.node(1).finish(now, h).expect("finished");
                finished = true;
            }
            net.pump(address(1));
        }
        if let (Some(r), true) = (reader, readable) {
            loop {
                match net.node(2).read(now, r, 1 << 16) {
                    Ok(Some(bytes)) => received.extend_from_slice(&bytes),
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(StreamError::Blocked) => break,
                    Err(e) => panic!("reading: {e}"),
                }
            }
            readable = false;
            net.pump(address(2));
        }
        if ended {
            break;
        }
        assert!(net.step(), "the network went idle");
        for e in events(&net, 1, &mut seen_a) {
            writable |= e == AppEvent::Writable(h);
        }
        for e in events(&net, 2, &mut seen_b) {
            match e {
                AppEvent::Incoming { stream, .. } => {
                    reader = Some(stream);
                    readable = true;
                }
                AppEvent::Readable(s) if Some(s) == reader => readable = true,
                _ => {}
            }
        }
    }
    assert!(ended, "the transfer did not end");
    assert!(blocked > 0, "8 MiB is more than the flow-control windows");
    assert_eq!(received.len(), TOTAL);
    assert_eq!(checksum(&received), checksum(&data));
    assert_tables_empty(&mut net);
}

#[test]
fn a_unidirectional_stream_carries_data_one_way() {
    let Pair { mut net, conn, .. } = pair();
    let log = protocol("test/log/1");
    net.node(2)
        .register_protocol(log.clone(), ProtocolOptions::default())
        .expect("registered");
    let h = open(&mut net, 1, conn, &log, StreamDir::Uni);
    // The opener of a unidirectional stream has nothing to read.
    let now = net.now;
    assert_eq!(net.node(1).read(now, h, 10), Err(StreamError::Closed(h)));
    write_all(&mut net, 1, h, b"one way");
    finish(&mut net, 1, h);
    let mut seen = 0;
    let (hb, _, got) = incoming(&mut net, 2, &mut seen);
    assert_eq!((got, hb.dir()), (log, StreamDir::Uni));
    assert_eq!(read_to_end(&mut net, 2, hb), Ok(b"one way".to_vec()));
    // And its receiver has nothing to write.
    let now = net.now;
    assert_eq!(
        net.node(2).write(now, hb, b"back"),
        Err(StreamError::Closed(hb))
    );
    assert_tables_empty(&mut net);
}

#[test]
fn datagrams_arrive_without_their_header_and_unregistered_ones_are_dropped() {
    let Pair { mut net, conn, .. } = pair();
    let game = protocol("test/game/1");
    let other = protocol("test/other/1");
    net.node(2)
        .register_protocol(game.clone(), ProtocolOptions::default())
        .expect("registered");
    let max = net
        .node(1)
        .max_datagram_size(conn, &game)
        .expect("the peer takes datagrams");
    assert!(max > 1000, "room for a payload: {max}");
    let now = net.now;
    net.node(1)
        .send_datagram(now, conn, &other, b"nobody listens")
        .expect("sent");
    net.node(1)
        .send_datagram(now, conn, &game, b"move 1")
        .expect("sent");
    net.pump(address(1));
    let mut seen = 0;
    let (protocol, payload) = next_event(&mut net, 2, &mut seen, |e| match e {
        AppEvent::Datagram {
            protocol, payload, ..
        } => Some((protocol.clone(), payload.clone())),
        _ => None,
    });
    assert_eq!((protocol, &payload[..]), (game.clone(), &b"move 1"[..]));
    net.run_for(Duration::from_millis(100));
    let datagrams = net.hosts[&address(2)]
        .app
        .iter()
        .filter(|e| matches!(e, AppEvent::Datagram { .. }))
        .count();
    assert_eq!(
        datagrams, 1,
        "the unregistered protocol's datagram is dropped"
    );
    assert_eq!(net.hosts[&address(2)].node.app_stats().datagrams_dropped, 1);
    // Too large a payload is refused before it is sent. The size is asked
    // again: path MTU discovery may have raised it since.
    let max = net
        .node(1)
        .max_datagram_size(conn, &game)
        .expect("the peer takes datagrams");
    let now = net.now;
    assert!(
        net.node(1)
            .send_datagram(now, conn, &game, &vec![0; max + 1])
            .is_err()
    );
}

/// A datagram whose header is not one (an empty or overlong name, cut
/// short) is counted as malformed and dropped; one of a reserved or
/// unregistered name is dropped; the node still takes the next good one.
#[test]
fn datagrams_with_malformed_headers_are_counted_and_dropped() {
    let Pair { mut net, conn, .. } = pair();
    let game = protocol("test/game/1");
    net.node(2)
        .register_protocol(game.clone(), ProtocolOptions::default())
        .expect("registered");
    let mut reserved = vec![9];
    reserved.extend_from_slice(b"keynode/x");
    let mut good = vec![11];
    good.extend_from_slice(b"test/game/1");
    good.extend_from_slice(b"move");
    let now = net.now;
    for bytes in [&[0, b'a'][..], &[65; 70], b"\x0btest/ga", &reserved, &good] {
        net.node(1)
            .send_raw_datagram(now, conn, bytes)
            .expect("sent");
    }
    net.pump(address(1));
    let mut seen = 0;
    let payload = next_event(&mut net, 2, &mut seen, |e| match e {
        AppEvent::Datagram {
            protocol, payload, ..
        } => Some((protocol.clone(), payload.clone())),
        _ => None,
    });
    assert_eq!(payload, (game, bytes::Bytes::from_static(b"move")));
    net.run_for(Duration::from_millis(100));
    let stats = net.hosts[&address(2)].node.app_stats();
    assert_eq!((stats.malformed_headers, stats.datagrams_dropped), (3, 1));
}

#[test]
fn a_stream_of_an_unregistered_protocol_is_refused() {
    let Pair { mut net, conn, .. } = pair();
    let unknown = protocol("test/unknown/1");
    let h = open(&mut net, 1, conn, &unknown, StreamDir::Bi);
    write_all(&mut net, 1, h, b"anyone?");
    assert_eq!(
        read_to_end(&mut net, 1, h),
        Err(StreamError::Refused(Refusal::UnknownProtocol))
    );
    let b = &net.hosts[&address(2)];
    assert_eq!(b.node.app_stats().refused_unknown_protocol, 1);
    assert!(
        !b.app.iter().any(|e| matches!(e, AppEvent::Incoming { .. })),
        "node 2's user hears nothing of it"
    );
}

#[test]
fn the_inbound_cap_refuses_one_protocol_while_another_still_works() {
    let Pair { mut net, conn, .. } = pair();
    let capped = protocol("test/capped/1");
    let free = protocol("test/free/1");
    net.node(2)
        .register_protocol(capped.clone(), ProtocolOptions::with_max_inbound_streams(1))
        .expect("registered");
    net.node(2)
        .register_protocol(free.clone(), ProtocolOptions::default())
        .expect("registered");
    let mut seen = 0;
    let first = open(&mut net, 1, conn, &capped, StreamDir::Bi);
    write_all(&mut net, 1, first, b"first");
    let (first_b, _, _) = incoming(&mut net, 2, &mut seen);
    assert_eq!(net.hosts[&address(2)].node.inbound_streams(&capped), 1);

    let second = open(&mut net, 1, conn, &capped, StreamDir::Bi);
    write_all(&mut net, 1, second, b"second");
    assert_eq!(
        read_to_end(&mut net, 1, second),
        Err(StreamError::Refused(Refusal::InboundLimit))
    );
    assert_eq!(
        net.hosts[&address(2)]
            .node
            .app_stats()
            .refused_inbound_limit,
        1
    );

    // The other protocol, on the same connection, is served.
    let other = open(&mut net, 1, conn, &free, StreamDir::Bi);
    write_all(&mut net, 1, other, b"ping");
    finish(&mut net, 1, other);
    let (other_b, _, got) = incoming(&mut net, 2, &mut seen);
    assert_eq!(got, free);
    assert_eq!(read_to_end(&mut net, 2, other_b), Ok(b"ping".to_vec()));
    write_all(&mut net, 2, other_b, b"pong");
    finish(&mut net, 2, other_b);
    assert_eq!(read_to_end(&mut net, 1, other), Ok(b"pong".to_vec()));

    // Once the first stream ends, the capped protocol takes another.
    finish(&mut net, 1, first);
    assert_eq!(read_to_end(&mut net, 2, first_b), Ok(b"first".to_vec()));
    finish(&mut net, 2, first_b);
    assert_eq!(read_to_end(&mut net, 1, first), Ok(Vec::new()));
    assert_eq!(net.hosts[&address(2)].node.inbound_streams(&capped), 0);
    let third = open(&mut net, 1, conn, &capped, StreamDir::Uni);
    write_all(&mut net, 1, third, b"third");
    finish(&mut net, 1, third);
    let (third_b, _, got) = incoming(&mut net, 2, &mut seen);
    assert_eq!(got, capped);
    assert_eq!(read_to_end(&mut net, 2, third_b), Ok(b"third".to_vec()));
}

/// Streams of every kind and ending (finished both ways, reset, stopped,
/// refused) leave both nodes' tables, and the counts of inbound streams
/// come back to zero.
#[test]
fn every_stream_leaves_the_tables_once_done() {
    let Pair { mut net, conn, .. } = pair();
    let p = protocol("test/p/1");
    net.node(2)
        .register_protocol(p.clone(), ProtocolOptions::default())
        .expect("registered");
    let mut seen = 0;

    // Finished both ways.
    let h = open(&mut net, 1, conn, &p, StreamDir::Bi);
    write_all(&mut net, 1, h, b"x");
    finish(&mut net, 1, h);
    let (hb, _, _) = incoming(&mut net, 2, &mut seen);
    assert_eq!(read_to_end(&mut net, 2, hb), Ok(b"x".to_vec()));
    finish(&mut net, 2, hb);
    assert_eq!(read_to_end(&mut net, 1, h), Ok(Vec::new()));
    assert_tables_empty(&mut net);

    // Reset by its opener: the receiver reads the code, then finishes its side.
    let h = open(&mut net, 1, conn, &p, StreamDir::Bi);
    write_all(&mut net, 1, h, b"y");
    let (hb, _, _) = incoming(&mut net, 2, &mut seen);
    let now = net.now;
    net.node(1).reset(now, h, 7).expect("reset");
    net.pump(address(1));
    assert_eq!(read_to_end(&mut net, 2, hb), Err(StreamError::Reset(7)));
    finish(&mut net, 2, hb);
    assert_eq!(read_to_end(&mut net, 1, h), Ok(Vec::new()));
    assert_tables_empty(&mut net);

    // Stopped by its receiver: the opener's writes get the code; the
    // receiver resets its own side and the opener reads that.
    let h = open(&mut net, 1, conn, &p, StreamDir::Bi);
    write_all(&mut net, 1, h, b"z");
    let (hb, _, _) = incoming(&mut net, 2, &mut seen);
    let now = net.now;
    net.node(2).stop(now, hb, 8).expect("stopped");
    net.node(2).reset(now, hb, 9).expect("reset");
    net.pump(address(2));
    assert_eq!(write_until_error(&mut net, 1, h), StreamError::Stopped(8));
    assert_eq!(read_to_end(&mut net, 1, h), Err(StreamError::Reset(9)));
    assert_tables_empty(&mut net);

    // A unidirectional stream stopped by its receiver.
    let h = open(&mut net, 1, conn, &p, StreamDir::Uni);
    write_all(&mut net, 1, h, b"w");
    let (hb, _, _) = incoming(&mut net, 2, &mut seen);
    let now = net.now;
    net.node(2).stop(now, hb, 10).expect("stopped");
    net.pump(address(2));
    assert_eq!(write_until_error(&mut net, 1, h), StreamError::Stopped(10));
    assert_tables_empty(&mut net);
    assert_eq!(net.hosts[&address(2)].node.inbound_streams(&p), 0);
}

/// Writes until the stream fails, waiting on `Writable` when blocked.
fn write_until_error(net: &mut DatagramNet, n: u8, h: StreamHandle) -> StreamError {
    let mut seen = net.hosts[&address(n)].app.len();
    for _ in 0..STEPS {
        let now = net.now;
        let written = net.node(n).write(now, h, b"more");
        net.pump(address(n));
        match written {
            Ok(_) => assert!(net.step(), "the network went idle"),
            Err(StreamError::Blocked) => next_event(net, n, &mut seen, |e| {
                (*e == AppEvent::Writable(h)).then_some(())
            }),
            Err(e) => return e,
        }
    }
    panic!("node {n}: writes to {h:?} never failed");
}

/// A refused stream is done once its opener reads the refusal: the peer
/// stopped and reset it, so nothing more can go either way. Refused streams
/// the opener never finished must not use up the connection's stream
/// limit either: node 2 takes 4 streams at once, and 12 are refused in turn.
#[test]
fn refused_streams_leave_the_tables_and_free_their_stream_credit() {
    let mut b_net = NetConfig::default();
    b_net.max_concurrent_streams = 4;
    let Pair { mut net, conn, .. } = pair_with(config(), b_net);
    let unknown = protocol("test/unknown/1");
    for round in 0..12 {
        let mut seen = net.hosts[&address(1)].app.len();
        let now = net.now;
        let h = match net.node(1).open_stream(now, conn, &unknown, StreamDir::Bi) {
            Ok(h) => h,
            Err(e) => {
                // Wait for the peer to grant more streams, then retry once.
                next_event(&mut net, 1, &mut seen, |e| {
                    matches!(e, AppEvent::StreamsAvailable { .. }).then_some(())
                });
                let now = net.now;
                net.node(1)
                    .open_stream(now, conn, &unknown, StreamDir::Bi)
                    .unwrap_or_else(|_| panic!("round {round}: {e}"))
            }
        };
        net.pump(address(1));
        write_all(&mut net, 1, h, b"anyone?");
        assert_eq!(
            read_to_end(&mut net, 1, h),
            Err(StreamError::Refused(Refusal::UnknownProtocol)),
            "round {round}"
        );
        assert_tables_empty(&mut net);
    }
    assert_eq!(
        net.hosts[&address(2)]
            .node
            .app_stats()
            .refused_unknown_protocol,
        12
    );
}

/// A stream its opener resets before its header went out reaches the
/// peer as a reset and nothing else: the peer forgets it.
#[test]
fn streams_reset_before_their_header_leave_the_peers_table() {
    let Pair { mut net, conn, .. } = pair();
    let p = protocol("test/p/1");
    net.node(2)
        .register_protocol(p.clone(), ProtocolOptions::default())
        .expect("registered");
    for _ in 0..20 {
        let now = net.now;
        let h = net
            .node(1)
            .open_stream(now, conn, &p, StreamDir::Uni)
            .expect("a stream");
        net.node(1).reset(now, h, 1).expect("reset");
        net.pump(address(1));
    }
    net.run_for(Duration::from_millis(100));
    assert_tables_empty(&mut net);
    assert_eq!(net.hosts[&address(2)].node.inbound_streams(&p), 0);
}

/// Streams a (misbehaving) peer ends before their header is complete, or
/// before the first frame of keynode's RPC, are forgotten too: each one
/// left would cost memory until the connection closes, while quinn gives
/// the peer the stream back to open another.
#[test]
fn streams_ended_before_their_header_or_first_frame_leave_the_peers_table() {
    let Pair { mut net, conn, .. } = pair();
    let mut rpc_header = vec![13];
    rpc_header.extend_from_slice(b"keynode/rpc/1");
    let cut_short: &[u8] = b"\x10test/";
    for (prefix, dir) in [
        (cut_short, StreamDir::Uni),
        (cut_short, StreamDir::Bi),
        (&[][..], StreamDir::Bi),
        (&rpc_header[..], StreamDir::Bi),
        (&rpc_header[..3], StreamDir::Bi),
    ] {
        let now = net.now;
        let h = net
            .node(1)
            .open_raw_stream(now, conn, dir, prefix)
            .expect("a stream");
        net.node(1).finish(now, h).expect("finished");
        net.pump(address(1));
        net.run_for(Duration::from_millis(50));
        assert_eq!(
            tables(&net, 2).streams,
            0,
            "{dir:?} stream of {prefix:?} left behind"
        );
        // The opener of a bi stream waits for an answer that never comes:
        // it gives up its side.
        if dir == StreamDir::Bi {
            let now = net.now;
            net.node(1).stop(now, h, 0).expect("stopped");
            net.pump(address(1));
        }
    }
    assert_tables_empty(&mut net);
}

/// A unidirectional stream of keynode's RPC could never carry an answer
/// back: the peer stops it (the opener's writes fail with a protocol
/// violation), forgets it, and goes on serving. Found by the `app_streams`
/// fuzz target: resetting the sending side the peer does not have panicked.
#[test]
fn a_unidirectional_rpc_stream_is_stopped_and_the_node_goes_on() {
    let Pair {
        mut net, b, conn, ..
    } = pair();
    let mut rpc_header = vec![13];
    rpc_header.extend_from_slice(b"keynode/rpc/1");
    let now = net.now;
    let h = net
        .node(1)
        .open_raw_stream(now, conn, StreamDir::Uni, &rpc_header)
        .expect("a stream");
    net.pump(address(1));
    let violation = u64::from(ConnectionErrorCode::ProtocolViolation.code());
    assert_eq!(
        write_until_error(&mut net, 1, h),
        StreamError::Stopped(violation)
    );
    assert_tables_empty(&mut net);
    let op = net.call(
        1,
        UserCall::Request {
            conn,
            body: keynode_core::wire::Request::ClosestNodes { target: b },
        },
    );
    assert!(
        matches!(net.wait(1, op), Ok(OpValue::Response(_))),
        "node 2 still answers requests"
    );
}

/// `refuse` on a stream of the node's own (not an inbound one) ends it
/// with the refusal all the same: the peer reads the refusal, and both
/// tables empty. Found by the `app_streams` fuzz target: on a
/// unidirectional stream, stopping the receiving side it does not have
/// panicked.
#[test]
fn a_stream_refused_by_its_opener_reaches_the_peer_as_a_refusal() {
    let Pair { mut net, conn, .. } = pair();
    let p = protocol("test/p/1");
    net.node(2)
        .register_protocol(p.clone(), ProtocolOptions::default())
        .expect("registered");
    let mut seen = 0;
    for dir in [StreamDir::Uni, StreamDir::Bi] {
        let h = open(&mut net, 1, conn, &p, dir);
        write_all(&mut net, 1, h, b"x");
        let (hb, _, _) = incoming(&mut net, 2, &mut seen);
        let now = net.now;
        net.node(1).refuse(now, h);
        net.pump(address(1));
        assert_eq!(
            read_to_end(&mut net, 2, hb),
            Err(StreamError::Refused(Refusal::UnknownProtocol)),
            "{dir:?}"
        );
        assert_tables_empty(&mut net);
        assert_eq!(net.hosts[&address(2)].node.inbound_streams(&p), 0);
    }
}

/// Each request a node answers leaves its stream table: 2,000 requests
/// one after another on one connection leave none behind.
#[test]
fn answered_requests_leave_the_serving_nodes_stream_table() {
    let Pair {
        mut net, b, conn, ..
    } = pair();
    let mut most = 0;
    for n in 0..2_000 {
        let op = net.call(
            1,
            UserCall::Request {
                conn,
                body: keynode_core::wire::Request::ClosestNodes { target: b },
            },
        );
        assert!(
            matches!(net.wait(1, op), Ok(OpValue::Response(_))),
            "request {n} answered"
        );
        most = most.max(tables(&net, 2).streams);
    }
    assert!(most <= 2, "node 2 tracked up to {most} streams");
    assert_tables_empty(&mut net);
}

/// An open application stream is a use of its connection: the manager's
/// idle time to live does not close it, on either side. Once the stream is
/// done, the connection idles out as any other.
#[test]
fn an_open_stream_keeps_its_connection_past_the_idle_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let mut short = config();
    short.connection_idle_ttl = TTL;
    short.connection_primary_ttl_bonus = Duration::ZERO;
    let mut net = DatagramNet::new();
    net.add_with(1, short.clone(), NetConfig::default());
    let b = net.add_with(2, short, NetConfig::default());
    net.know(1, b, 2);
    let op = net.call(
        1,
        UserCall::AcquireConnection {
            node_id: b,
            timeout: None,
        },
    );
    let Ok(OpValue::Connection { lease, conn, .. }) = net.wait(1, op) else {
        panic!("node 1 gets no connection to node 2");
    };
    let p = protocol("test/long/1");
    net.node(2)
        .register_protocol(p.clone(), ProtocolOptions::default())
        .expect("registered");
    let h = open(&mut net, 1, conn, &p, StreamDir::Bi);
    write_all(&mut net, 1, h, b"hold");
    let mut seen = 0;
    let (hb, _, _) = incoming(&mut net, 2, &mut seen);
    // The user gives its own use back: only the stream holds the connection.
    let now = net.now;
    net.node(1).handle(
        now,
        keynode_core::net::DriverEvent::ConnectionReleased { lease },
    );
    net.pump(address(1));

    net.run_for(TTL * 5);
    for n in [1, 2] {
        assert_eq!(
            net.hosts[&address(n)].node.connection_count(),
            1,
            "node {n} keeps the connection while the stream is open"
        );
        assert_eq!(net.manager(n).connections().len(), 1);
    }
    // The stream still works, then ends.
    write_all(&mut net, 1, h, b" on");
    finish(&mut net, 1, h);
    assert_eq!(read_to_end(&mut net, 2, hb), Ok(b"hold on".to_vec()));
    finish(&mut net, 2, hb);
    assert_eq!(read_to_end(&mut net, 1, h), Ok(Vec::new()));

    net.run_for(TTL * 3);
    for n in [1, 2] {
        assert_eq!(
            net.hosts[&address(n)].node.connection_count(),
            0,
            "node {n} closed the idle connection"
        );
        assert!(net.manager(n).connections().is_empty());
    }
}

/// A stream reset while flow control still holds back its header leaves
/// its opener's table too (and gives back its use of the connection): the
/// header goes with the reset. Node 2 takes 2,000 bytes per connection
/// until it reads, so the first stream's writes use the credit up and the
/// second stream's header cannot go out.
#[test]
fn a_stream_reset_before_its_header_went_out_leaves_the_openers_table() {
    let mut b_net = NetConfig::default();
    b_net.receive_window = 2_000;
    let Pair { mut net, conn, .. } = pair_with(config(), b_net);
    let p = protocol("test/p/1");
    net.node(2)
        .register_protocol(p.clone(), ProtocolOptions::default())
        .expect("registered");
    let first = open(&mut net, 1, conn, &p, StreamDir::Uni);
    let now = net.now;
    while net.node(1).write(now, first, &[7; 1000]).is_ok() {}
    net.pump(address(1));
    net.run_for(Duration::from_millis(50));
    let now = net.now;
    let second = net
        .node(1)
        .open_stream(now, conn, &p, StreamDir::Uni)
        .expect("a stream");
    net.node(1).reset(now, second, 1).expect("reset");
    net.node(1).reset(now, first, 1).expect("reset");
    net.pump(address(1));
    let mut seen = 0;
    let (first_b, _, _) = incoming(&mut net, 2, &mut seen);
    assert_eq!(
        read_to_end(&mut net, 2, first_b),
        Err(StreamError::Reset(1))
    );
    assert_tables_empty(&mut net);
    assert_eq!(
        net.manager(1).connection_leases(conn),
        Some(1),
        "only node 1's own use of the connection is left"
    );
}

/// keynode's RPC header, to open raw streams of it.
fn rpc_header() -> Vec<u8> {
    let mut header = vec![13];
    header.extend_from_slice(b"keynode/rpc/1");
    header
}

/// One keynode frame: its 4-byte length, then the encoded frame.
fn frame_bytes(frame: &keynode_core::wire::Frame) -> Vec<u8> {
    let payload = keynode_core::wire::encode(frame, 64 * 1024).expect("encoded");
    let mut bytes = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

/// A claim exchange's first message from node 1 (key `[1; 32]`) to `to`.
fn claim_request(net: &DatagramNet, to: NodeId) -> keynode_core::wire::Frame {
    use keynode_core::claims::{Claim, ClaimBody, ClaimId, KeyPair, SignedClaim};
    let key = KeyPair::from_seed(&[1; 32]).unwrap();
    let claim = Claim {
        version: keynode_core::claims::CLAIM_VERSION,
        id: ClaimId([9; 16]),
        seq: 0,
        prev_claim_id: None,
        prev_digest: None,
        iat: net.now.unix_secs(),
        nbf: net.now.unix_secs(),
        body: ClaimBody::LinkNode {
            iss: key.node_id(),
            sub: to,
        },
    };
    let signed = SignedClaim::sign(&claim, &key).unwrap();
    keynode_core::wire::Frame::Claim(keynode_core::wire::ClaimMessage::Request(signed))
}

/// Opens a raw stream, waiting (a second of virtual time at most) for the
/// peer to give stream credit back if none is left; `finish`: finished in
/// the same call, so that its end goes with its first bytes.
fn open_raw_waiting(
    net: &mut DatagramNet,
    n: u8,
    conn: ConnId,
    dir: StreamDir,
    prefix: &[u8],
) -> StreamHandle {
    open_raw_with(net, n, conn, dir, prefix, false)
}

fn open_raw_with(
    net: &mut DatagramNet,
    n: u8,
    conn: ConnId,
    dir: StreamDir,
    prefix: &[u8],
    finish: bool,
) -> StreamHandle {
    let until = net.now.mono + Duration::from_secs(1);
    loop {
        let now = net.now;
        match net.node(n).open_raw_stream(now, conn, dir, prefix) {
            Ok(h) => {
                if finish {
                    net.node(n).finish(now, h).expect("finished");
                }
                net.pump(address(n));
                return h;
            }
            Err(e) => {
                assert!(
                    net.now.mono < until,
                    "the peer never gave stream credit back: {e}"
                );
                assert!(net.step(), "the network went idle");
            }
        }
    }
}

/// A request node 1 sends node 2 on `conn` is answered.
fn assert_answers(net: &mut DatagramNet, conn: ConnId, b: NodeId) {
    let op = net.call(
        1,
        UserCall::Request {
            conn,
            body: keynode_core::wire::Request::ClosestNodes { target: b },
        },
    );
    assert!(
        matches!(net.wait(1, op), Ok(OpValue::Response(_))),
        "node 2 still answers requests"
    );
}

/// Defect 6 of issue 15 (memory per request on long connections): 10,000
/// requests one after another on one connection keep both nodes' stream
/// tables, and quinn-proto's, at a small constant, and leave nothing
/// behind.
#[test]
fn ten_thousand_requests_keep_every_stream_table_bounded() {
    let Pair {
        mut net, b, conn, ..
    } = pair();
    let mut most = (0, 0);
    for n in 0..10_000 {
        assert_answers(&mut net, conn, b);
        if n % 100 == 0 {
            for host in [1, 2] {
                most.0 = most.0.max(tables(&net, host).streams);
                most.1 = most.1.max(net.node(host).quic_streams());
            }
        }
    }
    assert!(
        most.0 <= 2 && most.1 <= 4,
        "up to {} streams tracked, {} held by quinn",
        most.0,
        most.1
    );
    assert_tables_empty(&mut net);
    net.run_for(Duration::from_secs(1));
    for host in [1, 2] {
        assert_eq!(net.node(host).quic_streams(), 0, "node {host}");
    }
}

/// Defect 6 of issue 15, on claim exchanges: each leaves both nodes'
/// tables (and quinn's) once it is over. Before, the target never ended
/// its side: each exchange kept a stream on both nodes and one of the
/// requester's stream credits until the connection closed, and once the
/// credits were spent (8 here) nothing more could be sent on it.
#[test]
fn claim_exchanges_leave_every_stream_table() {
    let mut b_net = NetConfig::default();
    b_net.max_concurrent_streams = 8;
    let Pair {
        mut net,
        a,
        b,
        conn,
    } = pair_with(config(), b_net);
    let op = net.call(
        2,
        UserCall::AllowClaimsFrom {
            node_id: a,
            allowed: true,
        },
    );
    assert_eq!(net.wait(2, op), Ok(OpValue::Unit));
    for round in 0..20 {
        let op = net.call(
            1,
            UserCall::ClaimNode {
                node_id: b,
                timeout: None,
            },
        );
        assert_eq!(net.wait(1, op), Ok(OpValue::Unit), "claim {round}");
        // The last frames may still be in flight (stepping, not a duration:
        // the next timer may be a keep-alive 10 s away, and node 2 holds no
        // use of the connection).
        let done = |net: &mut DatagramNet| {
            [1, 2].iter().all(|&n| {
                tables(net, n) == StreamTables::default() && net.node(n).quic_streams() == 0
            })
        };
        for _ in 0..1_000 {
            if done(&mut net) || !net.step() {
                break;
            }
        }
        for host in [1, 2] {
            assert_eq!(
                tables(&net, host),
                StreamTables::default(),
                "node {host}, claim {round}"
            );
            assert_eq!(
                net.node(host).quic_streams(),
                0,
                "node {host}, claim {round}"
            );
        }
    }
    assert_answers(&mut net, conn, b);
}

/// Defect 7 of issue 15 (half-sent frames): 64 streams that each send half
/// of a 60 KB frame and no more hold no more than the connection's bound
/// (the streams past it are reset at once), and those left are reset once
/// the frame timeout passes: nothing is held, the streams are gone, and
/// the connection still serves requests.
#[test]
fn half_sent_frames_are_bounded_per_connection_and_time_out() {
    const BOUND: usize = 256 * 1024;
    let mut b_net = NetConfig::default();
    b_net.max_partial_frame_bytes_per_conn = BOUND;
    let timeout = b_net.frame_timeout;
    let Pair {
        mut net, b, conn, ..
    } = pair_with(config(), b_net);
    let mut prefix = rpc_header();
    prefix.extend_from_slice(&60_000u32.to_be_bytes());
    let mut handles = Vec::new();
    for _ in 0..64 {
        let h = open_raw_waiting(&mut net, 1, conn, StreamDir::Bi, &prefix);
        write_all(&mut net, 1, h, &[7; 30_000]);
        handles.push(h);
    }
    let mut most = 0;
    let until = net.now.mono + Duration::from_secs(1);
    while net.now.mono < until && net.step() {
        most = most.max(tables(&net, 2).partial_frame_bytes);
    }
    assert!(most <= BOUND, "node 2 held {most} bytes of half frames");
    let stats = net.hosts[&address(2)].node.app_stats();
    assert!(
        stats.partial_frames_over_limit > 0,
        "the streams past the bound were reset"
    );
    net.run_for(timeout);
    let stats = net.hosts[&address(2)].node.app_stats();
    assert_eq!(
        stats.partial_frames_over_limit + stats.frames_timed_out,
        64,
        "{stats:?}"
    );
    let violation = u64::from(ConnectionErrorCode::ProtocolViolation.code());
    for h in handles {
        assert_eq!(
            read_to_end(&mut net, 1, h),
            Err(StreamError::Reset(violation))
        );
        let now = net.now;
        let _ = net.node(1).reset(now, h, 0);
        net.pump(address(1));
    }
    assert_tables_empty(&mut net);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.node(2).quic_streams(), 0);
    assert_answers(&mut net, conn, b);
}

/// The frame timeout is for keynode's frames and every stream's header:
/// an application stream idle for longer than it, once its header is in,
/// goes on working; one whose header never completes is reset.
#[test]
fn the_frame_timeout_spares_application_streams_but_not_their_headers() {
    let Pair { mut net, conn, .. } = pair();
    let timeout = NetConfig::default().frame_timeout;
    let p = protocol("test/p/1");
    net.node(2)
        .register_protocol(p.clone(), ProtocolOptions::default())
        .expect("registered");
    let h = open(&mut net, 1, conn, &p, StreamDir::Bi);
    write_all(&mut net, 1, h, b"a");
    let mut seen = 0;
    let (hb, _, _) = incoming(&mut net, 2, &mut seen);
    let cut = open_raw_waiting(&mut net, 1, conn, StreamDir::Bi, b"\x10test/");
    net.run_for(timeout * 2);
    write_all(&mut net, 1, h, b"b");
    finish(&mut net, 1, h);
    assert_eq!(read_to_end(&mut net, 2, hb), Ok(b"ab".to_vec()));
    finish(&mut net, 2, hb);
    assert_eq!(read_to_end(&mut net, 1, h), Ok(Vec::new()));
    let violation = u64::from(ConnectionErrorCode::ProtocolViolation.code());
    assert_eq!(
        read_to_end(&mut net, 1, cut),
        Err(StreamError::Reset(violation))
    );
    assert_eq!(net.hosts[&address(2)].node.app_stats().frames_timed_out, 1);
    let now = net.now;
    net.node(1).reset(now, cut, 0).expect("reset");
    net.pump(address(1));
    assert_tables_empty(&mut net);
}

/// Defect 8 of issue 15 (streams closed mid-frame): streams the peer
/// finishes in the middle of a frame, some after a whole first frame (a
/// claim exchange's), are reset and give their stream credit back: 24 of
/// them on a connection that takes 8 at once, then a request is answered.
#[test]
fn streams_finished_mid_frame_are_reset_and_free_their_slot() {
    let mut b_net = NetConfig::default();
    b_net.max_concurrent_streams = 8;
    let Pair {
        mut net, b, conn, ..
    } = pair_with(config(), b_net);
    let claim = frame_bytes(&claim_request(&net, b));
    let violation = u64::from(ConnectionErrorCode::ProtocolViolation.code());
    for round in 0..24 {
        let mut prefix = rpc_header();
        if round % 2 == 0 {
            prefix.extend_from_slice(&claim);
        }
        // Half a frame.
        prefix.extend_from_slice(&100u32.to_be_bytes());
        prefix.extend_from_slice(&[1; 50]);
        let h = open_raw_with(&mut net, 1, conn, StreamDir::Bi, &prefix, true);
        let read = read_to_end(&mut net, 1, h);
        // A claim exchange may have been refused (its answer, then its
        // end) before the end of the stream came in; else it is reset.
        let refused = |bytes: &[u8]| {
            matches!(
                keynode_core::wire::decode_frame(bytes.get(4..).unwrap_or_default(), 1024),
                Ok(keynode_core::wire::Frame::Claim(
                    keynode_core::wire::ClaimMessage::Abort(_)
                ))
            )
        };
        assert!(
            matches!(&read, Err(StreamError::Reset(code)) if *code == violation)
                || matches!(&read, Ok(bytes) if round % 2 == 0 && refused(bytes)),
            "round {round}: {read:?}"
        );
    }
    assert_tables_empty(&mut net);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.node(2).quic_streams(), 0);
    assert_eq!(net.hosts[&address(2)].node.app_stats().frames_cut_short, 24);
    assert_answers(&mut net, conn, b);
}

/// Path MTU discovery (RFC 8899) raises a connection's datagram size above
/// QUIC's 1,200 bytes on a path that carries more, as quinn does; with it
/// off the size stays. A bulk transfer at 1,200 bytes a packet costs a fifth
/// more packets.
#[test]
fn path_mtu_discovery_raises_the_datagram_size_unless_off() {
    for discovery in [true, false] {
        let mut net = DatagramNet::new();
        let mut opener = NetConfig::default();
        opener.mtu_discovery = discovery;
        net.add_with(1, config(), opener);
        let b = net.add(2);
        net.know(1, b, 2);
        let op = net.call(
            1,
            UserCall::AcquireConnection {
                node_id: b,
                timeout: None,
            },
        );
        let Ok(OpValue::Connection { conn, .. }) = net.wait(1, op) else {
            panic!("node 1 gets no connection to node 2");
        };
        let game = protocol("test/game/1");
        net.node(2)
            .register_protocol(game.clone(), ProtocolOptions::default())
            .expect("registered");
        let before = net.node(1).max_datagram_size(conn, &game).expect("size");
        net.run_for(Duration::from_secs(2));
        let after = net.node(1).max_datagram_size(conn, &game).expect("size");
        if discovery {
            assert!(after > before + 200, "discovered: {before} -> {after}");
        } else {
            assert_eq!(after, before, "no discovery");
        }
    }
}
