//! Full nodes (manager + QUIC) on a virtual network of datagrams with a
//! virtual clock, shared by the tests of the net layer.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{ModelStore, seed, t0};
use keynode_core::net::{AppEvent, DriverEvent, NetCommand, NetConfig, Node};
use keynode_core::{
    Config, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId, Now,
    OpError, OpId, OpValue, Output, UserCall,
};

pub struct Host {
    pub node: Node,
    pub store: ModelStore,
    pub outputs: Vec<Output>,
    /// Every application event, in order.
    pub app: Vec<AppEvent>,
}

/// Nodes on a virtual network of datagrams, 5 ms one way.
pub struct DatagramNet {
    pub hosts: BTreeMap<SocketAddr, Host>,
    pub queue: BTreeMap<(std::time::Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    pub seq: u64,
    pub now: Now,
    pub latency: Duration,
    /// Every datagram sent: when, from, to, its length and TTL.
    pub sent: Vec<Sent>,
}

#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub at: std::time::Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub len: usize,
    pub ttl: Option<u32>,
}

pub fn secret(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Host `n`'s address, in a /24 of its own (the benchmarking range
/// 198.18/15): the routing table limits contacts per /24.
pub fn address(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, n, 1], 4000))
}

pub fn config() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

impl DatagramNet {
    pub fn new() -> Self {
        Self {
            hosts: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            now: t0(),
            latency: Duration::from_millis(5),
            sent: Vec::new(),
        }
    }

    pub fn add(&mut self, n: u8) -> NodeId {
        self.add_with(n, config(), NetConfig::default())
    }

    /// A node with its own manager and QUIC settings.
    pub fn add_with(&mut self, n: u8, config: Config, net: NetConfig) -> NodeId {
        let mut node = Node::new(config, net, &secret(n), self.now, seed(n.into())).unwrap();
        let id = node.node_id();
        node.call(self.now, UserCall::Start).unwrap();
        self.hosts.insert(
            address(n),
            Host {
                node,
                store: ModelStore::default(),
                outputs: Vec::new(),
                app: Vec::new(),
            },
        );
        self.pump(address(n));
        id
    }

    pub fn pump(&mut self, at: SocketAddr) {
        loop {
            let now = self.now;
            let Some(host) = self.hosts.get_mut(&at) else {
                return;
            };
            let Some(command) = host.node.poll() else {
                return;
            };
            match command {
                NetCommand::Transmit(t) => {
                    self.sent.push(Sent {
                        at: now.mono,
                        from: at,
                        to: t.destination,
                        len: t.contents.len(),
                        ttl: t.ttl,
                    });
                    self.seq += 1;
                    self.queue.insert(
                        (now.mono + self.latency, self.seq),
                        (at, t.destination, t.contents),
                    );
                }
                NetCommand::Store(batch) => {
                    host.store.apply(&batch.ops);
                    host.node.handle(now, DriverEvent::StoreCommitted(batch.id));
                }
                NetCommand::Done { op, result } => host.outputs.push(Output::Done { op, result }),
                NetCommand::Event(event) => host.outputs.push(Output::Event(event)),
                NetCommand::App(event) => host.app.push(event),
                // No LAN and no hostnames here.
                NetCommand::Resolve { .. } | NetCommand::MdnsTransmit(_) => {}
            }
        }
    }

    /// Delivers the next datagram or fires the next timer; false when idle.
    pub fn step(&mut self) -> bool {
        let next_datagram = self.queue.first_key_value().map(|(k, _)| k.0);
        let next_timer = self
            .hosts
            .iter_mut()
            .filter_map(|(a, h)| h.node.poll_timeout().map(|(t, _)| (t, *a)))
            .min();
        let datagram_first = match (next_datagram, next_timer) {
            (Some(d), Some((t, _))) => d <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        if datagram_first {
            let Some(((at, _), (from, to, bytes))) = self.queue.pop_first() else {
                return false;
            };
            if at > self.now.mono {
                self.now = self.now.advanced(at - self.now.mono);
            }
            let now = self.now;
            if let Some(host) = self.hosts.get_mut(&to) {
                host.node.handle(
                    now,
                    DriverEvent::Datagram {
                        from,
                        bytes: &bytes,
                    },
                );
                self.pump(to);
            }
        } else if let Some((t, a)) = next_timer {
            if t > self.now.mono {
                self.now = self.now.advanced(t - self.now.mono);
            }
            let now = self.now;
            if let Some(host) = self.hosts.get_mut(&a) {
                host.node.handle_timeout(now);
            }
            self.pump(a);
        }
        true
    }

    pub fn call(&mut self, at: u8, call: UserCall) -> OpId {
        let now = self.now;
        let host = self.hosts.get_mut(&address(at)).unwrap();
        let op = host.node.call(now, call).unwrap().unwrap();
        self.pump(address(at));
        op
    }

    /// The node of a host, to call; pump it afterwards.
    pub fn node(&mut self, at: u8) -> &mut Node {
        &mut self.hosts.get_mut(&address(at)).unwrap().node
    }

    /// Steps until `done` holds, at most `limit` steps; false if it never did.
    pub fn run_until(&mut self, limit: usize, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..limit {
            if done(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        done(self)
    }

    /// Steps until `elapsed` of virtual time has passed.
    pub fn run_for(&mut self, elapsed: Duration) {
        let until = self.now.mono + elapsed;
        while self.now.mono < until {
            if !self.step() {
                break;
            }
        }
    }

    /// The manager of a host, to read.
    pub fn manager(&self, at: u8) -> &keynode_core::NodeManager {
        self.hosts[&address(at)].node.manager_ref()
    }

    pub fn wait(&mut self, at: u8, op: OpId) -> Result<OpValue, OpError> {
        for _ in 0..200_000 {
            let done = self.hosts[&address(at)]
                .outputs
                .iter()
                .find_map(|o| match o {
                    Output::Done { op: x, result } if *x == op => Some(result.clone()),
                    _ => None,
                });
            if let Some(result) = done {
                return result;
            }
            if !self.step() {
                break;
            }
        }
        panic!("{op} of node {at} not done");
    }

    pub fn know(&mut self, from: u8, to_id: NodeId, to: u8) {
        let data = NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: 1,
            scopes: NodeAddressScopes::GLOBAL,
        };
        let op = self.call(
            from,
            UserCall::SetNode {
                node_id: to_id,
                address: NodeAddress::from(address(to)),
                data,
                block: false,
                force: true,
                connect_timeout: None,
            },
        );
        assert_eq!(self.wait(from, op), Ok(OpValue::Unit));
    }
}
