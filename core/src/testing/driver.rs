//! The one loop that plays a manager's driver: [`drain`] polls a
//! [`NodeManager`]'s [`Command`]s until it runs dry and hands each to the
//! matching hook of a [`Driver`]. Every simulated driver (the core's test
//! network, the simulator's manager level, the fuzz target) is a `Driver`;
//! what they do with a dial, a request or a store batch differs, the loop
//! and its contract do not.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::wire::{ClaimMessage, Request, Response};
use crate::{
    AttemptId, Command, ConnId, ConnectionErrorCode, ContactMode, Event, Hostname, NodeId,
    NodeManager, Now, Observation, Output, PeerRequestId, QueryId, RequestId, ResolveId,
    StoreBatch, StreamId,
};

/// A [`Command::Connect`]: open a connection to `address`, expecting `node_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The attempt, to answer with `ConnectionUp` or `ConnectFailed`.
    pub attempt: AttemptId,
    /// The node expected at the address.
    pub node_id: NodeId,
    /// Where to dial.
    pub address: SocketAddr,
    /// How the address was learned (direct, or after a signal).
    pub mode: ContactMode,
    /// When the manager gives up.
    pub timeout: Duration,
}

/// A [`Command::SendRequest`]: a request on a connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The connection.
    pub conn: ConnId,
    /// The sender's id for it, to answer with `ResponseReceived`.
    pub request: RequestId,
    /// The request.
    pub body: Request,
    /// When the sender gives up.
    pub timeout: Duration,
}

/// One of the mDNS commands (no simulated driver has a LAN yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mdns {
    /// [`Command::MdnsAnnounce`].
    Announce {
        /// This node.
        node_id: NodeId,
        /// Multicast groups.
        groups: Vec<IpAddr>,
        /// mDNS port.
        port: u16,
    },
    /// [`Command::MdnsStop`].
    Stop,
    /// [`Command::MdnsQuery`].
    Query {
        /// The query.
        query: QueryId,
        /// The node looked for.
        node_id: NodeId,
    },
    /// [`Command::MdnsQueryEnd`].
    QueryEnd {
        /// The query.
        query: QueryId,
    },
}

/// What a simulated driver does with each kind of command. The required
/// hooks are the ones every driver must decide (where a dial or request
/// goes, what a response answers, what the caller learns); the rest default
/// to what a driver without that facility does: store batches commit at
/// once, mDNS, streams and hole punches are not carried, names do not resolve.
///
/// A hook may feed events back to the manager of `host` (through
/// [`Driver::manager`]); [`drain`] polls what they cause before it returns.
/// A hook must not call [`drain`] itself (re-entrance would reorder commands).
pub trait Driver {
    /// How this driver names a manager: an index, a `NodeId`, `()` for one.
    type Host: Copy;

    /// Commands one [`drain`] carries out before it calls the manager's
    /// `poll` a livelock (a command that causes itself without end).
    const MAX_COMMANDS: usize = 1 << 24;

    /// The manager of `host`; `None` once it is gone (the drain ends).
    fn manager(&mut self, host: Self::Host) -> Option<&mut NodeManager>;

    /// The current (virtual) time, for events fed back to the manager.
    fn now(&self) -> Now;

    /// Sees every command before it is carried out (traces, logs).
    fn observe(&mut self, _host: Self::Host, _command: &Command) {}

    /// Takes one of the manager's [`Observation`]s (what an agent turns
    /// into events); by default it is dropped. [`drain`] takes them all,
    /// as the agent's loop does, so that a simulated node does not hold
    /// `Config::max_queued_events` of them that no one reads. Observations
    /// cause nothing, so this hook must not feed the manager events.
    fn observation(&mut self, _host: Self::Host, _observation: Observation) {}

    /// A result or event for the caller.
    fn output(&mut self, host: Self::Host, output: Output);

    /// A store batch; by default committed at once.
    fn store(&mut self, host: Self::Host, batch: StoreBatch) {
        commit(self, host, &batch);
    }

    /// A connection attempt.
    fn connect(&mut self, host: Self::Host, connect: Connect);

    /// A request on a connection.
    fn send_request(&mut self, host: Self::Host, request: Outgoing);

    /// The answer to a peer's request.
    fn send_response(
        &mut self,
        host: Self::Host,
        conn: ConnId,
        request: PeerRequestId,
        body: Response,
    );

    /// The manager closes a connection.
    fn close(&mut self, host: Self::Host, conn: ConnId, code: ConnectionErrorCode);

    /// A claim stream opened with its first message; by default not carried.
    fn open_stream(
        &mut self,
        _host: Self::Host,
        _conn: ConnId,
        _stream: StreamId,
        _message: ClaimMessage,
    ) {
    }

    /// A message on a claim stream; by default not carried.
    fn stream_send(
        &mut self,
        _host: Self::Host,
        _stream: StreamId,
        _message: ClaimMessage,
        _finish: bool,
    ) {
    }

    /// A connection through the relay on `via`; by default there are no
    /// relays (a manager alone answers every relay request with a refusal,
    /// so this is not asked for), and the attempt is left unanswered.
    fn connect_relayed(&mut self, _host: Self::Host, _attempt: AttemptId, _via: ConnId) {}

    /// Hole-punching packets towards `address`; by default none are sent.
    fn hole_punch(&mut self, _host: Self::Host, _address: SocketAddr, _timeout: Duration) {}

    /// An mDNS command; by default there is no LAN.
    fn mdns(&mut self, _host: Self::Host, _command: Mdns) {}

    /// A hostname to resolve; by default it is left unanswered (the
    /// manager's own deadline ends the wait).
    fn resolve(&mut self, _host: Self::Host, _resolve: ResolveId, _hostname: Hostname) {}
}

/// Answers a store batch of `host` as committed (what a store that never
/// fails does).
pub fn commit<D: Driver + ?Sized>(driver: &mut D, host: D::Host, batch: &StoreBatch) {
    feed(driver, host, Event::StoreCommitted(batch.id));
}

/// Hands `event` to the manager of `host` at the driver's time (without
/// draining: the caller's [`drain`] picks up what it causes).
pub fn feed<D: Driver + ?Sized>(driver: &mut D, host: D::Host, event: Event) {
    let now = driver.now();
    if let Some(node) = driver.manager(host) {
        node.handle(now, event);
    }
}

/// Carries out every command the manager of `host` has, until its `poll`
/// runs dry (or the manager is gone).
///
/// The drain contract: commands are carried out in the order `poll` gives
/// them, each exactly once, each by its hook; what a hook feeds back is
/// polled in the same drain; nothing is left queued when it returns, so the
/// caller may read `poll_timeout` next. More than [`Driver::MAX_COMMANDS`]
/// commands in one drain panics: a livelock is a failed test, not a hang.
pub fn drain<D: Driver + ?Sized>(driver: &mut D, host: D::Host) {
    for _ in 0..D::MAX_COMMANDS {
        let Some(node) = driver.manager(host) else {
            return;
        };
        let Some(command) = node.poll() else {
            take_observations(driver, host);
            return;
        };
        driver.observe(host, &command);
        carry_out(driver, host, command);
    }
    panic!(
        "livelock: the manager's poll did not run dry after {} commands",
        D::MAX_COMMANDS
    );
}

/// Hands each queued observation to [`Driver::observation`].
fn take_observations<D: Driver + ?Sized>(driver: &mut D, host: D::Host) {
    loop {
        let Some(node) = driver.manager(host) else {
            return;
        };
        let Some(observation) = node.poll_observation() else {
            return;
        };
        driver.observation(host, observation);
    }
}

/// Hands one command to its hook.
fn carry_out<D: Driver + ?Sized>(driver: &mut D, host: D::Host, command: Command) {
    match command {
        Command::Store(batch) => driver.store(host, batch),
        Command::Output(output) => driver.output(host, output),
        Command::Connect {
            attempt,
            node_id,
            address,
            mode,
            timeout,
        } => driver.connect(
            host,
            Connect {
                attempt,
                node_id,
                address,
                mode,
                timeout,
            },
        ),
        Command::SendRequest {
            conn,
            request,
            body,
            timeout,
        } => driver.send_request(
            host,
            Outgoing {
                conn,
                request,
                body,
                timeout,
            },
        ),
        Command::SendResponse {
            conn,
            request,
            body,
        } => driver.send_response(host, conn, request, body),
        Command::CloseConnection { conn, code } => driver.close(host, conn, code),
        Command::OpenStream {
            conn,
            stream,
            message,
        } => driver.open_stream(host, conn, stream, message),
        Command::StreamSend {
            stream,
            message,
            finish,
        } => driver.stream_send(host, stream, message, finish),
        Command::HolePunch { address, timeout } => driver.hole_punch(host, address, timeout),
        Command::ConnectRelayed { attempt, via, .. } => driver.connect_relayed(host, attempt, via),
        Command::MdnsAnnounce {
            node_id,
            groups,
            port,
        } => driver.mdns(
            host,
            Mdns::Announce {
                node_id,
                groups,
                port,
            },
        ),
        Command::MdnsStop => driver.mdns(host, Mdns::Stop),
        Command::MdnsQuery { query, node_id } => driver.mdns(host, Mdns::Query { query, node_id }),
        Command::MdnsQueryEnd { query } => driver.mdns(host, Mdns::QueryEnd { query }),
        Command::Resolve { resolve, hostname } => driver.resolve(host, resolve, hostname),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use std::net::{IpAddr, SocketAddr};
    use std::time::Instant;

    use crate::testing::{Net, Script};
    use crate::{Config, NodeAddress, NodeId, Now, OpValue, SeedNodes};

    fn now() -> Now {
        Now::new(Instant::now(), 1_700_000_000_000)
    }

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::from([10, 0, 0, n]), 1314)
    }

    #[test]
    fn drain_leaves_nothing_queued() {
        let mut s = Script::started(now(), Config::default(), id(1));
        assert_eq!(s.node.poll(), None);
        assert_eq!(s.store.batches, 1, "the start batch was committed");
        s.hold_store = true;
        let seeds = SeedNodes::new([(id(2), NodeAddress::from(addr(2)))]);
        let op = s.node.sync_node_graph(s.now, &seeds, None, false);
        let rest = s.drain();
        assert!(op.is_ok());
        assert_eq!(s.node.poll(), None);
        assert!(
            rest.iter().all(|c| s.log.contains(c)),
            "what is handed back was logged"
        );
    }

    #[test]
    fn net_carries_a_sync_between_two_managers() {
        let mut net = Net::new(now());
        net.add(id(1), addr(1), Config::default());
        net.add(id(2), addr(2), Config::default());
        let seeds = SeedNodes::new([(id(2), NodeAddress::from(addr(2)))]);
        let op = net.call(id(1), |n, now| n.sync_node_graph(now, &seeds, None, true));
        let op = op.expect("sync starts");
        assert_eq!(net.run_until_done(id(1), op, 10_000), Ok(OpValue::Unit));
        assert!(net.peers[&id(1)].node.graph().contains(&id(2)));
        assert!(net.peers[&id(2)].node.graph().contains(&id(1)));
    }

    #[test]
    #[should_panic(expected = "still busy")]
    fn drive_bounded_turns_a_busy_network_into_a_failure() {
        let mut net = Net::new(now());
        net.add(id(1), addr(1), Config::default());
        net.add(id(2), addr(2), Config::default());
        let seeds = SeedNodes::new([(id(2), NodeAddress::from(addr(2)))]);
        let _ = net.call(id(1), |n, now| n.sync_node_graph(now, &seeds, None, true));
        net.drive_bounded(3);
    }
}
