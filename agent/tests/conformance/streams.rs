//! Application streams and datagrams (issue 14): echo, large and many
//! streams, unidirectional streams and datagrams, refusals, inbound caps,
//! flow control, idle TTL with open streams, tables left flat, withConnF/G
//! timeouts, keynode's own requests beside application streams.

use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use keynode_agent::{
    AgentError, Connection, DatagramError, FindOptions, IncomingStream, PingOptions, Protocol,
    ProtocolOptions, RecvStream, Refusal, SendStream, StreamError, WithConnOptions,
};
use keynode_core::NodeAddress;
use keynode_core::net::NetConfig;
use keynode_core::wire::{Request, Response};
use ring::digest::{Context, SHA256};

use super::*;

// The tests: each a function generic over the runtime, run to its end
// under its own limit.

/// An echo: what is written comes back, byte for byte, through the
/// futures-io traits on the server and the stream API on the client; the
/// server learns who opened the stream.
pub fn an_echo_protocol_returns_what_was_sent<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let echo_p = protocol("suite/echo/1");
        let mut listener = b
            .accept(echo_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;
        assert_eq!(conn.peer(), b.node_id());

        let message = b"hello over keynode".to_vec();
        let client = echo_of(&conn, &echo_p, &message);
        let server = async {
            let incoming = listener.accept().await;
            assert_eq!(incoming.peer, a.node_id(), "the server knows the opener");
            assert_eq!(incoming.protocol, echo_p);
            assert!(incoming.send.is_some(), "a bidirectional stream");
            echo(incoming).await;
        };
        let (echoed, ()) = futures::join!(client, server);
        assert_eq!(echoed, message);

        // And through futures-io on the client too.
        let (mut send, mut recv) = conn.open_bi(&echo_p).await.expect("the stream opens");
        let echoed = while_serving(serve(listener, echo), async {
            use futures::io::{AsyncReadExt, AsyncWriteExt};
            AsyncWriteExt::write_all(&mut send, &message)
                .await
                .expect("written");
            AsyncWriteExt::close(&mut send).await.expect("closed");
            let mut echoed = Vec::new();
            AsyncReadExt::read_to_end(&mut recv, &mut echoed)
                .await
                .expect("read");
            echoed
        })
        .await;
        assert_eq!(echoed, message);
        drop((send, recv, conn));
        stop_all(&[&a, &b]).await;
    });
}

/// The sink of the 256 MiB test: reads to the end, answers the byte count
/// and the SHA-256 of what it read.
async fn digest_sink(mut incoming: IncomingStream) {
    let mut send = incoming.send.take().expect("a bidirectional stream");
    let mut hash = Context::new(&SHA256);
    let mut count = 0u64;
    while let Some(chunk) = incoming
        .recv
        .read_chunk(1 << 20)
        .await
        .expect("the sink reads")
    {
        count += chunk.len() as u64;
        hash.update(&chunk);
    }
    let mut answer = count.to_le_bytes().to_vec();
    answer.extend_from_slice(hash.finish().as_ref());
    send.write_all(&answer).await.expect("the sink answers");
    send.finish().expect("the sink finishes");
}

/// 256 MiB through one stream: the receiver's SHA-256 and byte count are
/// the sender's. Each MiB is a block of random bytes stamped with its
/// index, so that a lost, repeated or reordered block changes the digest.
pub fn two_hundred_fifty_six_mib_go_through_one_stream_with_the_checksum_matching<R: Runtime>() {
    const BLOCKS: u64 = 256;
    const BLOCK: usize = 1 << 20;
    run::<R>(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let sink_p = protocol("suite/sink/1");
        let listener = b
            .accept(sink_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;
        let started = Instant::now();
        let (sent, answer) = while_serving(serve(listener, digest_sink), async {
            let (mut send, mut recv) = conn.open_bi(&sink_p).await.expect("the stream opens");
            let mut block = payload(7, BLOCK);
            let mut hash = Context::new(&SHA256);
            for i in 0..BLOCKS {
                block[..8].copy_from_slice(&i.to_le_bytes());
                hash.update(&block);
                send.write_all(&block).await.expect("a block is written");
            }
            send.finish().expect("the stream finishes");
            let answer = recv.read_to_end(40).await.expect("the sink's answer");
            (hash.finish(), answer)
        })
        .await;
        eprintln!("256 MiB through one stream in {:?}", started.elapsed());
        assert_eq!(answer.len(), 40, "a count and a digest");
        assert_eq!(
            answer[..8],
            (BLOCKS * BLOCK as u64).to_le_bytes(),
            "every byte arrived"
        );
        assert_eq!(&answer[8..], sent.as_ref(), "the digests match");
        drop(conn);
        stop_all(&[&a, &b]).await;
    });
}

/// 100 bidirectional streams at once on one connection, each with a
/// payload of its own (different bytes, different lengths): each gets its
/// own back.
pub fn a_hundred_concurrent_streams_each_echo_their_own_payload<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let echo_p = protocol("suite/echo/1");
        let listener = b
            .accept(echo_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;
        let payloads: Vec<Vec<u8>> = (0..100)
            .map(|i| payload(i, 10_000 + 997 * i as usize))
            .collect();
        let echoes = while_serving(
            serve(listener, echo),
            join_all(payloads.iter().map(|p| echo_of(&conn, &echo_p, p))),
        )
        .await;
        for (i, (echoed, sent)) in echoes.iter().zip(&payloads).enumerate() {
            assert!(
                echoed == sent,
                "stream {i}: {} bytes sent, {} echoed",
                sent.len(),
                echoed.len()
            );
        }
        drop(conn);
        stop_all(&[&a, &b]).await;
    });
}

/// A unidirectional stream arrives whole (with no sending side for the
/// server); datagrams arrive with their content, and one larger than the
/// connection takes is refused with a type.
pub fn a_unidirectional_stream_and_datagrams_are_delivered<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let uni_p = protocol("suite/uni/1");
        let dgram_p = protocol("suite/datagram/1");
        let mut uni = b
            .accept(uni_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        // Datagrams are kept only for a protocol listened on.
        let _datagrams = b
            .accept(dgram_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;

        let sent = payload(3, 300_000);
        let mut send = conn.open_uni(&uni_p).await.expect("the stream opens");
        let write = async {
            send.write_all(&sent).await.expect("written");
            send.finish().expect("finished");
        };
        let read = async {
            let mut incoming = uni.accept().await;
            assert_eq!(incoming.peer, a.node_id());
            assert!(incoming.send.is_none(), "a unidirectional stream");
            incoming.recv.read_to_end(1 << 20).await.expect("read")
        };
        let ((), received) = futures::join!(write, read);
        assert!(
            received == sent,
            "{} bytes sent, {} received",
            sent.len(),
            received.len()
        );

        let max = conn
            .max_datagram_size(&dgram_p)
            .expect("the peer takes datagrams");
        assert!(max > 1000, "a datagram of {max} bytes at most on loopback");
        // Larger than any UDP datagram, whatever the path's MTU becomes.
        match conn.send_datagram(&dgram_p, &vec![0; 70_000]) {
            Err(AgentError::Datagram(DatagramError::TooLarge { len, max: m })) => {
                assert_eq!(len, 70_000);
                assert!(m < len, "the largest datagram is {m} bytes");
            }
            other => panic!("a datagram too large: {other:?}"),
        }
        let sent: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("datagram {i} ").into_bytes().repeat(i + 1))
            .collect();
        for d in &sent {
            conn.send_datagram(&dgram_p, d)
                .expect("the datagram is sent");
        }
        // The stream above went through, so b knows the connection.
        let back = b
            .acquire_connection(a.node_id())
            .await
            .expect("b's use of the connection");
        assert_eq!(back.peer(), a.node_id());
        let mut received = Vec::new();
        // Datagrams may be lost: read until all came or none comes for a while.
        while received.len() < sent.len() {
            match within::<R, _>(Duration::from_secs(2), back.read_datagram(&dgram_p)).await {
                Some(d) => received.push(d.expect("a datagram").to_vec()),
                None => break,
            }
        }
        assert!(
            received.len() * 2 >= sent.len(),
            "most datagrams arrive on loopback: {} of {}",
            received.len(),
            sent.len()
        );
        for d in &received {
            assert!(sent.contains(d), "a datagram that was sent: {d:?}");
        }
        let mut distinct = received.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), received.len(), "no datagram twice");
        drop((conn, back));
        stop_all(&[&a, &b]).await;
    });
}

/// A stream of a protocol the peer does not serve is refused: the opener's
/// read (bidirectional) or write (unidirectional) fails with
/// `Refused(UnknownProtocol)`, within a bounded time, and the stream
/// leaves the opener's tables.
pub fn an_unregistered_protocol_gives_the_opener_a_typed_refusal<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let unknown = protocol("suite/nobody-serves-this/1");
        let conn = connect(&a, &b).await;
        let bound = Duration::from_secs(15);

        let (mut send, mut recv) = conn.open_bi(&unknown).await.expect("the stream opens");
        let refused = within::<R, _>(bound, first_error(&mut send, &mut recv, b"hello")).await;
        assert_eq!(
            refused.expect("a refusal within the bound"),
            StreamError::Refused(Refusal::UnknownProtocol)
        );

        let mut uni = conn.open_uni(&unknown).await.expect("the stream opens");
        let written = async {
            // Writes go through until the peer's refusal arrives.
            loop {
                if let Err(e) = uni.write_all(b"x").await {
                    return e;
                }
                R::sleep(Duration::from_millis(10)).await;
            }
        };
        assert_eq!(
            within::<R, _>(bound, written)
                .await
                .expect("a refusal within the bound"),
            StreamError::Refused(Refusal::UnknownProtocol)
        );
        drop((send, recv, uni));
        let stats = b.app_stats();
        assert_eq!(stats.refused_unknown_protocol, 2);
        eventually::<R, _>(|| async { a.stream_tables() == empty(0) }).await;
        assert!(
            connected_to(&a, b.node_id()).await,
            "refusals leave the connection up"
        );
        drop(conn);
        stop_all(&[&a, &b]).await;
    });
}

/// The inbound caps of a protocol: one peer past its share is refused
/// with `Refused(InboundLimit)` while another peer is still served on that
/// protocol, and another protocol on the same connection too; past the
/// protocol's cap over all peers everyone is refused; once a stream ends
/// there is room again.
pub fn the_inbound_cap_refuses_with_a_type_while_other_protocols_and_peers_go_on<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let c = start::<R>(dir.path(), "c", |_| {}).await;
        let capped = protocol("suite/capped/1");
        let other = protocol("suite/other/1");
        let capped_l = b
            .accept(
                capped.clone(),
                ProtocolOptions::with_max_inbound_streams(3).per_peer(2),
            )
            .expect("b listens");
        let other_l = b
            .accept(other.clone(), ProtocolOptions::default())
            .expect("b listens");
        let from_a = connect(&a, &b).await;
        let from_c = connect(&c, &b).await;
        let server = futures::future::join(serve(capped_l, echo), serve(other_l, echo)).map(drop);

        while_serving(server, async {
            // A stream held open (not finished) that echoed a byte: the
            // server has taken it.
            async fn hold(
                conn: &Connection,
                protocol: &Protocol,
                i: u8,
            ) -> (SendStream, RecvStream) {
                let (mut send, mut recv) = conn.open_bi(protocol).await.expect("opens");
                send.write_all(&[i]).await.expect("written");
                let mut byte = [0u8; 1];
                assert_eq!(recv.read(&mut byte).await.expect("echoed"), 1);
                assert_eq!(byte, [i]);
                (send, recv)
            }
            let mut held = vec![
                hold(&from_a, &capped, 0).await,
                hold(&from_a, &capped, 1).await,
            ];

            // a is at its share: refused, with the reason.
            let (mut send, mut recv) = from_a.open_bi(&capped).await.expect("opens");
            assert_eq!(
                first_error(&mut send, &mut recv, b"third").await,
                StreamError::Refused(Refusal::InboundLimit)
            );
            drop((send, recv));

            let message = b"another protocol".to_vec();
            assert_eq!(
                echo_of(&from_a, &other, &message).await,
                message,
                "same connection, another protocol"
            );
            // Another peer is served on the protocol a has filled its share of.
            let from_c_held = hold(&from_c, &capped, 2).await;

            // Three open: the protocol's cap over all peers refuses c too.
            let (mut send, mut recv) = from_c.open_bi(&capped).await.expect("opens");
            assert_eq!(
                first_error(&mut send, &mut recv, b"fourth").await,
                StreamError::Refused(Refusal::InboundLimit)
            );
            drop((send, recv));

            // One held stream ends: the cap has room again.
            let (mut send, mut recv) = held.pop().expect("a held stream");
            send.finish().expect("finished");
            assert_eq!(
                recv.read_to_end(16).await.expect("the rest"),
                Vec::<u8>::new()
            );
            drop((send, recv));
            let message = b"room again".to_vec();
            assert_eq!(
                echo_of(&from_c, &capped, &message).await,
                message,
                "another peer, the capped protocol"
            );
            drop((held, from_c_held));
        })
        .await;
        let stats = b.app_stats();
        assert_eq!(stats.refused_inbound_limit, 2, "two refusals, counted");
        drop((from_a, from_c));
        stop_all(&[&a, &b, &c]).await;
    });
}

/// Backpressure: with the reader not reading, the writer's writes become
/// pending once the stream's flow-control window is full, having taken no
/// more than that window, and stay pending however long it waits; when the
/// reader reads again, the pending write goes on and every byte arrives.
pub fn a_reader_that_stops_reading_leaves_the_writer_pending_within_the_window<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let slow = protocol("suite/slow/1");
        let mut listener = b
            .accept(slow.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;
        let window = NetConfig::default().stream_receive_window as usize;
        let chunk = payload(11, 64 * 1024);
        let total = 8 * window;

        let mut send = conn.open_uni(&slow).await.expect("the stream opens");
        send.write_all(&chunk).await.expect("the first chunk");
        let mut incoming = listener.accept().await;
        let mut accepted = chunk.len();
        // Write until a write is pending: the window is full.
        while let Some(n) = send.write(&chunk).now_or_never() {
            accepted += n.expect("the stream takes data");
            assert!(
                accepted <= window,
                "{accepted} bytes taken, more than the window of {window}"
            );
        }
        // However long it waits (the loops send, the peer acknowledges),
        // nothing more fits while nothing is read.
        R::sleep(Duration::from_millis(500)).await;
        // The write owns the stream, so that it can be awaited later and
        // the stream used after it.
        let chunk_ref = &chunk;
        let mut pending = Box::pin(async move {
            let n = send.write(chunk_ref).await;
            (send, n)
        });
        assert!(
            futures::poll!(pending.as_mut()).is_pending(),
            "the writer is blocked"
        );
        R::sleep(Duration::from_millis(200)).await;
        assert!(
            futures::poll!(pending.as_mut()).is_pending(),
            "the writer is still blocked"
        );
        let (tables, ready) = a.stream_tables();
        assert_eq!(
            (tables.app_streams, ready.writers),
            (1, 1),
            "one stream, its writer waiting"
        );

        // The reader reads: the pending write ends, and everything arrives.
        let write = async {
            let (mut send, n) = pending.await;
            accepted += n.expect("the blocked write goes on");
            let mut rest = total - accepted;
            while rest > 0 {
                let n = rest.min(chunk.len());
                send.write_all(&chunk[..n]).await.expect("written");
                rest -= n;
            }
            send.finish().expect("finished");
        };
        let read = async {
            let mut received = 0usize;
            while let Some(bytes) = incoming.recv.read_chunk(1 << 16).await.expect("read") {
                received += bytes.len();
            }
            received
        };
        let ((), received) = futures::join!(write, read);
        assert_eq!(received, total);
        drop((conn, incoming));
        stop_all(&[&a, &b]).await;
    });
}

/// A stream is a use of its connection: with a short idle TTL and no
/// other use, a connection carrying an open stream stays up well past the
/// TTL (and the stream still works); after its last stream ends, it is
/// released and closed once the TTL passes, on both sides.
pub fn a_connection_with_an_open_stream_outlives_its_idle_ttl_and_goes_after_it<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let ttl = Duration::from_millis(500);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |c| {
            c.config.connection_idle_ttl = ttl;
            c.config.connection_primary_ttl_bonus = Duration::ZERO;
        })
        .await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let echo_p = protocol("suite/echo/1");
        let listener = b
            .accept(echo_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;
        let id = conn.id();

        while_serving(serve(listener, echo), async {
            let (mut send, mut recv) = conn.open_bi(&echo_p).await.expect("the stream opens");
            send.write_all(b"ping").await.expect("written");
            let mut four = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                got += recv.read(&mut four[got..]).await.expect("echoed");
            }
            // Only the stream holds the connection now.
            drop(conn);
            R::sleep(ttl * 6).await;
            let conns = a.connections().await.expect("a runs");
            assert!(
                conns
                    .iter()
                    .any(|(c, peer, _)| *c == id && *peer == b.node_id()),
                "the connection outlives its TTL while a stream is open: {conns:?}"
            );
            send.write_all(b" again")
                .await
                .expect("the stream still works");
            send.finish().expect("finished");
            let rest = recv.read_to_end(64).await.expect("the rest of the echo");
            assert_eq!(rest, b" again");
            drop((send, recv));
            // Released now, and closed once the TTL has passed.
            eventually::<R, _>(|| async { !connected_to(&a, b.node_id()).await }).await;
            eventually::<R, _>(|| async { !connected_to(&b, a.node_id()).await }).await;
        })
        .await;
        assert_eq!(a.stream_tables(), empty(0));
        stop_all(&[&a, &b]).await;
    });
}

/// The request/response server of the 100,000 streams: reads a request to
/// its end and answers it with its bytes reversed.
async fn reverse(mut incoming: IncomingStream) {
    let mut send = incoming.send.take().expect("a bidirectional stream");
    let mut request = incoming.recv.read_to_end(64).await.expect("a request");
    request.reverse();
    send.write_all(&request).await.expect("the answer");
    send.finish().expect("finished");
}

/// 100,000 request/response streams, one after the other, on one
/// connection: sampled along the way, neither agent's tables grow, and at
/// the end they are as they were before the first.
pub fn a_hundred_thousand_sequential_streams_leave_the_tables_flat<R: Runtime>() {
    const STREAMS: u32 = 100_000;
    run::<R>(Duration::from_secs(600), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let rr = protocol("suite/request-response/1");
        let listener = b
            .accept(rr.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;
        let before = (a.stream_tables(), b.stream_tables());
        assert_eq!(before, (empty(0), empty(1)), "nothing open before");
        let started = Instant::now();
        while_serving(serve(listener, reverse), async {
            for i in 0..STREAMS {
                let (mut send, mut recv) = conn.open_bi(&rr).await.expect("the stream opens");
                send.write_all(&i.to_le_bytes()).await.expect("the request");
                send.finish().expect("finished");
                let answer = recv.read_to_end(64).await.expect("the answer");
                let mut expected = i.to_le_bytes();
                expected.reverse();
                assert_eq!(answer, expected, "stream {i}");
                if i % 1_000 == 0 {
                    // Between two streams: at most the one just answered
                    // is still on its way out of b's tables.
                    for (who, (t, r)) in [("a", a.stream_tables()), ("b", b.stream_tables())] {
                        assert!(
                            t.streams <= 2 && t.app_streams <= 1 && t.peer_requests == 0,
                            "after {i} streams, {who}'s tables: {t:?}"
                        );
                        assert!(
                            r.readers <= 1
                                && r.writers == 0
                                && r.openers == 0
                                && r.pending_streams <= 1,
                            "after {i} streams, {who}'s wakers: {r:?}"
                        );
                    }
                }
            }
            eprintln!("{STREAMS} sequential streams in {:?}", started.elapsed());
            // b's listener is still there.
            eventually::<R, _>(|| async { (a.stream_tables(), b.stream_tables()) == before }).await;
        })
        .await;
        drop(conn);
        stop_all(&[&a, &b]).await;
    });
}

/// `with_conn_f` and `with_conn_g` with a timeout whose function never
/// ends (it holds a stream the peer never answers): a typed `Timeout` with
/// the limit, within bounds; afterwards the connection's uses are all back
/// and the stream has left the tables.
pub fn with_conn_f_and_g_time_out_with_a_typed_error_and_release_the_connection<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let hold = protocol("suite/hold/1");
        let listener = b
            .accept(hold.clone(), ProtocolOptions::default())
            .expect("b listens");
        // b takes every stream and never answers.
        let server = serve(listener, |incoming| async move {
            let _held = incoming;
            std::future::pending::<()>().await;
        });
        drop(connect(&a, &b).await);
        let limit = Duration::from_millis(300);
        let bound = Duration::from_secs(15);
        let target = b.node_id();

        while_serving(server, async {
            let f = a.with_conn_f(target, WithConnOptions::timeout(limit), |conn| {
                let hold = hold.clone();
                async move {
                    let (_send, mut recv) = conn.open_bi(&hold).await?;
                    // Waits for an answer that never comes.
                    if let Ok(answer) = recv.read_to_end(16).await {
                        panic!("an answer: {answer:?}");
                    }
                    // A failed read ends the closure early: a test failure too.
                    Ok::<(), AgentError>(())
                }
            });
            match within::<R, _>(bound, f).await {
                Some(Err(AgentError::Timeout(d))) => assert_eq!(d, limit),
                Some(other) => panic!("with_conn_f: {other:?}"),
                None => panic!("with_conn_f did not end within {bound:?}"),
            }
            eventually::<R, _>(|| async { leases(&a).await == 0 }).await;
            eventually::<R, _>(|| async { a.stream_tables() == empty(0) }).await;

            let g = a
                .with_conn_g(target, WithConnOptions::timeout(limit), |conn| {
                    let hold = hold.clone();
                    futures::stream::once(async move {
                        let (_send, mut recv) = conn.open_bi(&hold).await.expect("opens");
                        recv.read_to_end(16).await.map(|_| ())
                    })
                })
                .await
                .expect("with_conn_g starts");
            let items = within::<R, _>(bound, g.collect::<Vec<_>>())
                .await
                .unwrap_or_else(|| panic!("with_conn_g did not end within {bound:?}"));
            match items.as_slice() {
                [Err(AgentError::Timeout(d))] => assert_eq!(*d, limit),
                other => panic!("with_conn_g: {other:?}"),
            }
            eventually::<R, _>(|| async { leases(&a).await == 0 }).await;
            eventually::<R, _>(|| async { a.stream_tables() == empty(0) }).await;
        })
        .await;
        stop_all(&[&a, &b]).await;
    });
}

/// keynode's own requests go on while application streams run on the same
/// connection: one stream stuck (its reader not reading, its writer
/// blocked) and a transfer under way.
pub fn keynode_requests_work_while_application_streams_run<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let echo_p = protocol("suite/echo/1");
        let stuck_p = protocol("suite/stuck/1");
        let echo_l = b
            .accept(echo_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let mut stuck_l = b
            .accept(stuck_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let conn = connect(&a, &b).await;

        // A stream whose reader never reads, its writer blocked.
        let mut stuck = conn.open_uni(&stuck_p).await.expect("the stream opens");
        let chunk = payload(5, 64 * 1024);
        stuck.write_all(&chunk).await.expect("written");
        let _stuck_incoming = stuck_l.accept().await;
        while let Some(n) = stuck.write(&chunk).now_or_never() {
            n.expect("the stream takes data");
        }

        let big = payload(9, 16 << 20);
        while_serving(serve(echo_l, echo), async {
            let transfer = echo_of(&conn, &echo_p, &big);
            let requests = async {
                let target = b.node_id();
                for round in 0..5 {
                    let pinged = a
                        .ping_node(target, PingOptions::default())
                        .await
                        .expect("ping");
                    assert!(pinged.is_some(), "round {round}: b answers pings");
                    let found = a
                        .find_node(target, FindOptions::default())
                        .await
                        .expect("find");
                    assert_eq!(
                        found.map(|(address, _)| address),
                        Some(NodeAddress::from(b.local_addr())),
                        "round {round}: b is found"
                    );
                    let answer = conn
                        .request(Request::ClosestNodes { target })
                        .await
                        .expect("a request on the connection");
                    assert!(
                        matches!(answer, Response::ClosestNodes { .. }),
                        "{answer:?}"
                    );
                }
            };
            let (echoed, ()) = futures::join!(transfer, requests);
            assert!(echoed == big, "the transfer came back whole");
        })
        .await;
        assert!(
            stuck.write(&chunk).now_or_never().is_none(),
            "the stuck stream is still blocked"
        );
        drop((stuck, conn));
        stop_all(&[&a, &b]).await;
    });
}
