//! Hole punching through real NAT: `keynode` agents in Linux network
//! namespaces, behind routers that NAT with nftables (the kernel's
//! connection tracking: a reply gets in, an unsolicited datagram does
//! not), reaching each other through public agents that relay their
//! signals.
//!
//! Each test lays out its own network ([`Layout`]): a router, "wan";
//! public hosts on it, the first of them the seed every agent syncs from;
//! and private agents, each behind a router of its own whose NAT is a cone
//! (`masquerade`) or symmetric (`masquerade fully-random`). Host `k`
//! (counting from 1, the public hosts first) has the wan subnet
//! 10.0.k.0/24 (the wan router is .1, the host or its router .2); a private
//! agent's LAN is 192.168.k.0/24. E.g. seed, pub, a (cone), s (symmetric):
//!
//! ```text
//!                               wan (a router)
//!         ┌──────────────┬────────────┴─────┬────────────────────┐
//!    seed 10.0.1.2   pub 10.0.2.2     nata 10.0.3.2         nats 10.0.4.2
//!                                         │ masquerade           │ masquerade fully-random
//!                                    a 192.168.3.2          s 192.168.4.2
//! ```
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). Without them the tests
//! say so and pass, unless `KEYNODE_NETNS_TESTS=require` (set by
//! `.ci/run`, which installs both), when they fail.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    AgentProc, Guard, KEYNODE, WAIT, json, keynode, ok, promtool_check, sample, start_agent_in,
    start_agent_with,
};
use serde_json::Value;

/// Runs `program args...`, which must succeed.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether namespaces with nftables NAT can be made here (`tag`: the
/// test's, since tests run in parallel).
fn netns_available(tag: u8) -> Result<(), String> {
    let probe = format!("knprobe{}-{tag}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !made.status.success() {
        return Err(format!(
            "ip netns add: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let nft = Command::new("ip")
        .args(["netns", "exec", &probe, "nft", "list", "tables"])
        .output();
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    match nft {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("nft: {e}")),
    }
}

/// How a router maps the flows of its LAN to its wan address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nat {
    /// `masquerade`: one mapping per source address and port, whatever the
    /// destination (endpoint-independent; Linux keeps the source port when
    /// it is free), so every peer sees the same address: a cone.
    Cone,
    /// `masquerade fully-random`: every flow, so every destination, gets a
    /// port of its own, drawn at random: each peer sees another port.
    /// (`masquerade random`, a port hashed from the flow, does the same:
    /// on Linux 6.18 both give the seed and pub two ports, and the agent
    /// behind either is classified symmetric; a plain `masquerade` keeps
    /// the port for every destination.)
    Symmetric,
}

impl Nat {
    /// The statement of the router's postrouting rule.
    fn statement(self) -> &'static str {
        match self {
            Nat::Cone => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        }
    }
}

/// The hosts of a test's network, besides the wan router. Names are at
/// most [`Layout::MAX_NAME`] characters (they name interfaces too) and
/// unique.
struct Layout {
    /// Hosts on the wan itself; the first is the seed.
    public: &'static [&'static str],
    /// Agents each behind a router of its own ("nat" and the agent's
    /// name), with that router's NAT.
    private: &'static [(&'static str, Nat)],
}

impl Layout {
    /// "pnat" and a name is the wan router's interface to that name's
    /// router: 15 characters at most.
    const MAX_NAME: usize = 11;
}

/// A host of a [`Topology`], where an agent runs.
struct Host {
    name: &'static str,
    /// `None`: on the wan.
    nat: Option<Nat>,
    /// Its own address (the one its agent binds).
    ip: String,
    /// Where the wan sees its datagrams come from: its own address, or
    /// its router's.
    wan_ip: String,
}

/// The namespaces of one test, deleted (with their links) when dropped.
struct Topology {
    prefix: String,
    /// The namespaces made so far (full names): a build that fails half
    /// way leaves nothing behind either.
    made: Vec<String>,
    hosts: Vec<Host>,
}

impl Topology {
    /// The full name of namespace `name` of this test.
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        let ns = self.ns(ns);
        let mut all = vec!["netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    fn add_namespace(&mut self, name: &str) {
        let full = self.ns(name);
        run("ip", &["netns", "add", &full]);
        self.made.push(full);
        self.exec(name, &["ip", "link", "set", "lo", "up"]);
    }

    /// A veth pair from `left` (named `left_name` there) to `right`
    /// (named `right_name`), both up. Made in the two namespaces at once,
    /// so a name need only be unique in its own namespace.
    fn link(&self, left: &str, left_name: &str, right: &str, right_name: &str) {
        let (left_ns, right_ns) = (self.ns(left), self.ns(right));
        run(
            "ip",
            &[
                "link", "add", "name", left_name, "netns", &left_ns, "type", "veth", "peer",
                "name", right_name, "netns", &right_ns,
            ],
        );
        self.exec(left, &["ip", "link", "set", left_name, "up"]);
        self.exec(right, &["ip", "link", "set", right_name, "up"]);
    }

    /// The subnet `net`.0/24 between a gateway (`.1` on `gateway_dev`) and
    /// a host (`.2` on `host_dev`, routing everything through the gateway).
    fn subnet(&self, net: &str, gateway: &str, gateway_dev: &str, host: &str, host_dev: &str) {
        let (gateway_ip, host_ip) = (format!("{net}.1"), format!("{net}.2"));
        let with_mask = |ip: &str| format!("{ip}/24");
        self.exec(
            gateway,
            &[
                "ip",
                "addr",
                "add",
                &with_mask(&gateway_ip),
                "dev",
                gateway_dev,
            ],
        );
        self.exec(
            host,
            &["ip", "addr", "add", &with_mask(&host_ip), "dev", host_dev],
        );
        self.exec(host, &["ip", "route", "add", "default", "via", &gateway_ip]);
    }

    /// The network of `layout` for test number `tag` (tests run in
    /// parallel, so each has its own prefix).
    fn build(tag: u8, layout: &Layout) -> Topology {
        let mut topology = Topology {
            prefix: format!("kn{}t{tag}-", std::process::id()),
            made: Vec::new(),
            hosts: Vec::new(),
        };
        // The wan is a router (the internet has hops: a punch's first,
        // low-TTL packet dies there, past its own NAT and short of the
        // other's), one subnet per host or router on it.
        topology.add_namespace("wan");
        topology.exec("wan", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let public = layout.public.iter().map(|&name| (name, None));
        let private = layout.private.iter().map(|&(name, nat)| (name, Some(nat)));
        for (k, (name, nat)) in (1..).zip(public.chain(private)) {
            assert!(
                name.len() <= Layout::MAX_NAME,
                "host name {name:?} too long"
            );
            assert!(
                topology.hosts.iter().all(|h| h.name != name),
                "host name {name:?} twice"
            );
            let wan_net = format!("10.0.{k}");
            // What is on the wan: the host itself, or its router.
            let edge = match nat {
                None => name.to_owned(),
                Some(_) => format!("nat{name}"),
            };
            topology.add_namespace(&edge);
            let port = format!("p{edge}");
            topology.link("wan", &port, &edge, "wan0");
            topology.subnet(&wan_net, "wan", &port, &edge, "wan0");
            let ip = match nat {
                None => format!("{wan_net}.2"),
                Some(nat) => {
                    let lan_net = format!("192.168.{k}");
                    topology.add_namespace(name);
                    topology.link(&edge, "lan0", name, "eth0");
                    topology.subnet(&lan_net, &edge, "lan0", name, "eth0");
                    topology.exec(&edge, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
                    // Source NAT of everything leaving for the wan; what
                    // comes back in is only what connection tracking
                    // matches to a flow that went out (no other rule lets
                    // anything through to the LAN, since nothing else is
                    // routed to its private addresses).
                    let rules = format!(
                        "add table ip nat; \
                         add chain ip nat post {{ type nat hook postrouting priority srcnat; }}; \
                         add rule ip nat post oifname \"wan0\" {}",
                        nat.statement()
                    );
                    topology.exec(&edge, &["nft", &rules]);
                    format!("{lan_net}.2")
                }
            };
            topology.hosts.push(Host {
                name,
                nat,
                ip,
                wan_ip: format!("{wan_net}.2"),
            });
        }
        topology
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} in the layout"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Polls `keynode args... --json` until `done` holds of its answer, at most
/// [`WAIT`]; the last answer.
fn until(args: &[&str], what: &str, done: impl Fn(&Value) -> bool) -> Value {
    match poll(args, WAIT, done) {
        Ok(answer) => answer,
        Err(answer) => panic!("{what}: still {answer}"),
    }
}

/// Polls `keynode args... --json` until `done` holds of its answer, at most
/// `limit`: that answer, or the last one.
fn poll(args: &[&str], limit: Duration, done: impl Fn(&Value) -> bool) -> Result<Value, Value> {
    let deadline = Instant::now() + limit;
    loop {
        let answer = json(args);
        if done(&answer) {
            return Ok(answer);
        }
        if Instant::now() >= deadline {
            return Err(answer);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The remote address of `agent`'s connection to `peer`, if any.
fn connection_to(agent: &AgentProc, peer: &AgentProc) -> Option<String> {
    let answer = json(&["nodes", "connections", "--data-dir", agent.dir()]);
    answer["connections"]
        .as_array()?
        .iter()
        .find(|c| c["node_id"] == peer.node_id.as_str())
        .and_then(|c| c["remote"].as_str().map(str::to_owned))
}

/// `agent`'s `agent status` once its NAT class is `class` (at most
/// [`WAIT`]).
fn status_once_classed(agent: &AgentProc, class: &str) -> Value {
    until(
        &["agent", "status", "--data-dir", agent.dir()],
        &format!("{} is classified {class}", agent.node_id),
        |status| status["nat_class"] == class,
    )
}

/// An agent on every host of a [`Layout`], joined: each public agent is
/// connected to every other agent.
struct Network {
    // Dropped first: the agents, then their directories, then the namespaces.
    /// One per host, in the order of `topology.hosts`.
    agents: Vec<AgentProc>,
    tmp: tempfile::TempDir,
    topology: Topology,
}

impl Network {
    /// `None` (and a line on stderr) where namespaces cannot be made and
    /// the environment does not require them.
    fn start(tag: u8, layout: &Layout) -> Option<Network> {
        Self::start_with(tag, layout, &[], |_| {})
    }

    /// [`Network::start`], with `extra` options for every agent and
    /// `prepare` run on the topology before any agent starts.
    fn start_with(
        tag: u8,
        layout: &Layout,
        extra: &[&str],
        prepare: impl FnOnce(&Topology),
    ) -> Option<Network> {
        if let Err(why) = netns_available(tag) {
            let required = std::env::var("KEYNODE_NETNS_TESTS").is_ok_and(|v| v == "require");
            assert!(!required, "network namespaces with nftables NAT: {why}");
            eprintln!("skipped: network namespaces with nftables NAT: {why}");
            return None;
        }
        let topology = Topology::build(tag, layout);
        prepare(&topology);
        let tmp = tempfile::tempdir().unwrap();
        // Each agent syncs from every public agent started before it: the
        // seed from none, a private agent from all of them (so it is seen
        // by observers at two public IPs, if there are two).
        let mut agents = Vec::new();
        let mut seeds: Vec<String> = Vec::new();
        for host in &topology.hosts {
            let agent = start_agent_with(
                Some(&topology.ns(host.name)),
                &tmp.path().join(host.name),
                &format!("{}:0", host.ip),
                (!seeds.is_empty()).then(|| seeds.join(";")).as_deref(),
                extra,
            );
            if host.nat.is_none() {
                seeds.push(format!("{}@{}", agent.node_id, agent.addr));
            }
            agents.push(agent);
        }
        let net = Network {
            agents,
            tmp,
            topology,
        };
        for (host, public) in net.hosts().filter(|(h, _)| h.nat.is_none()) {
            for (other, agent) in net.hosts().filter(|(h, _)| h.name != host.name) {
                until(
                    &["nodes", "connections", "--data-dir", public.dir()],
                    &format!("{} is connected to {}", host.name, other.name),
                    |answer| {
                        answer["connections"].as_array().is_some_and(|all| {
                            all.iter().any(|c| c["node_id"] == agent.node_id.as_str())
                        })
                    },
                );
            }
        }
        Some(net)
    }

    /// Every host with its agent.
    fn hosts(&self) -> impl Iterator<Item = (&Host, &AgentProc)> {
        self.topology.hosts.iter().zip(&self.agents)
    }

    /// The agent of host `name`.
    fn agent(&self, name: &str) -> &AgentProc {
        self.hosts()
            .find(|(h, _)| h.name == name)
            .map(|(_, agent)| agent)
            .unwrap_or_else(|| panic!("no host {name:?} in the layout"))
    }

    /// The agent of `name`'s address as its peers on the wan see it, if
    /// its NAT keeps the port (a cone: Linux's masquerade keeps it when it
    /// can), or it has no NAT.
    fn mapped(&self, name: &str) -> String {
        let host = self.topology.host(name);
        assert_ne!(host.nat, Some(Nat::Symmetric), "{name}'s port is not kept");
        let agent = self.agent(name);
        let port = agent.addr.rsplit_once(':').map(|(_, p)| p).expect("a port");
        format!("{}:{port}", host.wan_ip)
    }
}

/// The layout of the two hole-punching tests: a seed, and two agents
/// behind cone NATs.
const TWO_CONES: Layout = Layout {
    public: &["seed"],
    private: &[("a", Nat::Cone), ("b", Nat::Cone)],
};

#[test]
fn agents_behind_nat_are_seen_at_their_routers_and_unsolicited_connections_are_dropped() {
    let Some(net) = Network::start(1, &TWO_CONES) else {
        return;
    };
    let (seed, b) = (net.agent("seed"), net.agent("b"));
    // The seed sees each of them at its router's address: the NATs are real.
    for name in ["a", "b"] {
        assert_eq!(
            connection_to(seed, net.agent(name)),
            Some(net.mapped(name)),
            "the seed sees {name} behind its NAT",
        );
    }
    // Nothing gets in unasked: a public node that knows b's mapped address
    // but has no node in common with b to signal through cannot reach it.
    let dir = net.tmp.path().join("outsider");
    let bind = format!("{}:0", net.topology.host("seed").ip);
    let outsider = start_agent_in(Some(&net.topology.ns("seed")), &dir, &bind, None);
    let b_mapped = net.mapped("b");
    json(&[
        "nodes",
        "add",
        "--data-dir",
        outsider.dir(),
        &b.node_id,
        &b_mapped,
    ]);
    let direct = keynode(&["nodes", "ping", "--data-dir", outsider.dir(), &b.node_id]);
    assert!(
        !direct.status.success(),
        "b's NAT let an unsolicited connection in: {direct:?}"
    );
    // While the seed, which b dialled, is answered through it.
    let seed_pings_b = keynode(&["nodes", "ping", "--data-dir", seed.dir(), &b.node_id]);
    assert!(seed_pings_b.status.success(), "{seed_pings_b:?}");
}

/// Linux's connection tracking keeps the first datagram that reaches a NAT
/// from outside, before its host has sent anything to that peer, as a flow
/// of its own (UNREPLIED, 30 s, renewed by every retransmission); the
/// host's own datagrams to that peer then leave from another port and the
/// punch fails. So a lookup asks a signaller before it sends anything to
/// a NAT'd candidate, and each side's punch opens its own NAT with a
/// low-TTL packet before anything reaches the other's.
#[test]
fn agents_behind_two_nats_reach_each_other_by_signal_and_hole_punching() {
    let Some(net) = Network::start(2, &TWO_CONES) else {
        return;
    };
    let (seed, a, b) = (net.agent("seed"), net.agent("a"), net.agent("b"));
    let b_mapped = net.mapped("b");
    // a finds b: the seed relays a's signal, both punch, and the
    // connection goes straight between the two NATs.
    let found = json(&["nodes", "find", "--data-dir", a.dir(), &b.node_id]);
    assert_eq!(found["address"]["address"], b_mapped.as_str(), "{found}");
    assert_eq!(found["address"]["mode"], "Signal", "{found}");
    assert_eq!(connection_to(a, b), Some(b_mapped));
    assert_eq!(connection_to(b, a), Some(net.mapped("a")));
    // Each now has two observers at different IPs (the seed, and the other
    // through its NAT) that see it at one mapped address, not its own: a
    // cone NAT (masquerade's mapping does not depend on the destination).
    for name in ["a", "b"] {
        let status = status_once_classed(net.agent(name), "cone");
        assert_eq!(
            status["observed_addresses"],
            serde_json::json!([{ "address": net.mapped(name), "observers": 2 }]),
            "{status}"
        );
    }
    // The seed, bound to its wan address, is seen there by both: public.
    let status = status_once_classed(seed, "public");
    assert_eq!(
        status["observed_addresses"][0]["address"],
        seed.addr.as_str(),
        "{status}"
    );
    // `agent metrics` counts it: a's punch came up as its one outbound
    // signal connection, and b punched back (its side of the same hole).
    let a_metrics = ok(&["agent", "metrics", "--data-dir", a.dir()]);
    promtool_check(&a_metrics);
    assert!(
        sample(&a_metrics, "keynode_punches_tried_total") >= 1,
        "{a_metrics}"
    );
    assert_eq!(
        sample(&a_metrics, "keynode_punches_succeeded_total"),
        1,
        "{a_metrics}"
    );
    assert_eq!(
        sample(
            &a_metrics,
            "keynode_connections_opened_total{mode=\"signal\",direction=\"outbound\"}"
        ),
        1,
        "{a_metrics}"
    );
    let b_metrics = ok(&["agent", "metrics", "--data-dir", b.dir()]);
    assert!(
        sample(&b_metrics, "keynode_punches_tried_total") >= 1,
        "{b_metrics}"
    );
}

/// Two public hosts, and an agent behind each kind of NAT.
const ONE_OF_EACH: Layout = Layout {
    public: &["seed", "pub"],
    private: &[("c1", Nat::Cone), ("s1", Nat::Symmetric)],
};

/// What each kind of NAT looks like from the wan, and what the agents make
/// of it: the seed and pub, at two public IPs, both see c1 at one address
/// (its router's, with c1's own port) and s1 at its router's IP with a
/// different port each.
#[test]
fn agents_classify_no_nat_as_public_masquerade_as_cone_and_fully_random_masquerade_as_symmetric() {
    let Some(net) = Network::start(3, &ONE_OF_EACH) else {
        return;
    };
    let (seed, public, c1, s1) = (
        net.agent("seed"),
        net.agent("pub"),
        net.agent("c1"),
        net.agent("s1"),
    );
    for observer in [seed, public] {
        assert_eq!(connection_to(observer, c1), Some(net.mapped("c1")));
    }
    let seen_s1: Vec<SocketAddr> = [seed, public]
        .iter()
        .map(|observer| {
            let remote = connection_to(observer, s1).expect("connected to s1");
            remote.parse().expect("a socket address")
        })
        .collect();
    let s1_router: IpAddr = net.topology.host("s1").wan_ip.parse().expect("an IP");
    assert!(
        seen_s1.iter().all(|a| a.ip() == s1_router),
        "s1 is seen at its router: {seen_s1:?}"
    );
    assert_ne!(
        seen_s1[0].port(),
        seen_s1[1].port(),
        "the seed and pub see s1 at one port: the mapping is not per destination"
    );

    let status = status_once_classed(c1, "cone");
    assert_eq!(
        status["observed_addresses"][0]["address"],
        net.mapped("c1").as_str(),
        "{status}"
    );
    let status = status_once_classed(s1, "symmetric");
    let observed: Vec<&str> = status["observed_addresses"]
        .as_array()
        .expect("observed_addresses")
        .iter()
        .filter_map(|o| o["address"].as_str())
        .collect();
    for seen in &seen_s1 {
        assert!(
            observed.contains(&seen.to_string().as_str()),
            "s1 is told what the seed and pub see: {status}"
        );
    }
    for agent in [seed, public] {
        let status = status_once_classed(agent, "public");
        assert_eq!(
            status["observed_addresses"][0]["address"],
            agent.addr.as_str(),
            "{status}"
        );
    }
    relays_and_reservations_show(seed, public, &[c1, s1]);
}

/// The public agents relay (`--relay` is `when-public` by default) and
/// each agent behind a NAT holds a reservation with both
/// (`Config::relay_reservations`, 2): `agent status` (JSON and text) and
/// `agent metrics` say so on both sides.
fn relays_and_reservations_show(seed: &AgentProc, public: &AgentProc, private: &[&AgentProc]) {
    let mut relays = vec![seed.node_id.clone(), public.node_id.clone()];
    relays.sort();
    for agent in private {
        let status = until(
            &["agent", "status", "--data-dir", agent.dir()],
            &format!("{} holds two reservations", agent.node_id),
            |status| status["relay"]["reservations"].as_array().map(Vec::len) == Some(2),
        );
        let mut held: Vec<String> = status["relay"]["reservations"]
            .as_array()
            .expect("reservations")
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        held.sort();
        assert_eq!(held, relays, "{status}");
        assert_eq!(status["relay"]["relaying"], false, "{status}");
        let text = ok(&["agent", "status", "--data-dir", agent.dir()]);
        assert!(
            text.contains("relay: not relaying (--relay when-public)"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with("relay reservations: ")
                && relays.iter().all(|r| l.contains(r.as_str()))),
            "{text}"
        );
        let metrics = ok(&["agent", "metrics", "--data-dir", agent.dir()]);
        promtool_check(&metrics);
        assert_eq!(
            sample(&metrics, "keynode_relay_reservations_held"),
            2,
            "{metrics}"
        );
        assert_eq!(sample(&metrics, "keynode_relay_serving"), 0, "{metrics}");
    }
    let served = private.len() as u64;
    for agent in [seed, public] {
        let status = until(
            &["agent", "status", "--data-dir", agent.dir()],
            &format!(
                "{} holds a reservation for each private agent",
                agent.node_id
            ),
            |status| status["relay"]["reservations_served"] == served,
        );
        assert_eq!(status["relay"]["relaying"], true, "{status}");
        assert_eq!(status["relay"]["serve"], "when_public", "{status}");
        assert_eq!(
            status["relay"]["reservations"],
            serde_json::json!([]),
            "{status}"
        );
        let text = ok(&["agent", "status", "--data-dir", agent.dir()]);
        assert!(
            text.contains("relay: relaying for others (--relay when-public)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("{served} reservations held for others")),
            "{text}"
        );
        let metrics = ok(&["agent", "metrics", "--data-dir", agent.dir()]);
        promtool_check(&metrics);
        assert_eq!(sample(&metrics, "keynode_relay_serving"), 1, "{metrics}");
        assert_eq!(
            sample(&metrics, "keynode_relay_reservations_served"),
            served,
            "{metrics}"
        );
        assert!(
            sample(&metrics, "keynode_relay_reservations_granted_total") >= served,
            "{metrics}"
        );
    }
}

/// Two public hosts (one to relay), two agents behind cone NATs and two
/// behind symmetric ones.
const MATRIX: Layout = Layout {
    public: &["seed", "pub"],
    private: &[
        ("c1", Nat::Cone),
        ("c2", Nat::Cone),
        ("s1", Nat::Symmetric),
        ("s2", Nat::Symmetric),
    ],
};

/// How long an agent of the matrix is given to settle on its NAT class
/// (once the public agents are connected to it, it has its observations).
const CLASS_SETTLES: Duration = Duration::from_secs(20);

/// Seconds one `nodes find` of the matrix may take (each of the ten pairs
/// with a symmetric side takes this long while there is no relay).
const FIND_TIMEOUT: &str = "10";

/// What `nodes find --data-dir <from> <to>` did.
struct Reach {
    from: &'static str,
    to: &'static str,
    /// The mode it reported, or why it failed.
    mode: Result<String, String>,
    took: Duration,
    /// Whether `from` was connected to `to` before (the other way round
    /// came first): then nothing had to be set up.
    connected_before: bool,
}

/// `from` finds `to`, timed.
fn reach(net: &Network, from: &'static str, to: &'static str) -> Reach {
    let (x, y) = (net.agent(from), net.agent(to));
    let connected_before = connection_to(x, y).is_some();
    let started = Instant::now();
    let out = keynode(&[
        "nodes",
        "find",
        "--data-dir",
        x.dir(),
        &y.node_id,
        "--json",
        "--timeout",
        FIND_TIMEOUT,
    ]);
    let took = started.elapsed();
    let mode = if out.status.success() {
        serde_json::from_str::<Value>(&out.stdout)
            .map_err(|e| format!("{e}: {:?}", out.stdout))
            .and_then(|found| match found["address"]["mode"].as_str() {
                Some(mode) => Ok(mode.to_owned()),
                None => Err(format!("no address.mode in {found}")),
            })
    } else {
        Err(format!("{}: {}", out.status, out.stderr.trim()))
    };
    Reach {
        from,
        to,
        mode,
        took,
        connected_before,
    }
}

/// Pipes bytes both ways over a stream of `protocol` from `from` to `to`
/// (`keynode pipe connect` and `pipe listen`); files go in `dir`.
fn pipe_both_ways(from: &AgentProc, to: &AgentProc, dir: &Path) {
    const PROTOCOL: &str = "test/nat-pipe/1";
    let forward: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let back: Vec<u8> = (0..70_001u32).map(|i| (i % 241) as u8).collect();
    let path = |name: &str| dir.join(name);
    std::fs::write(path("forward"), &forward).expect("write");
    std::fs::write(path("back"), &back).expect("write");
    let spawn = |args: &[&str], input: &str, output: &str| {
        let child = Command::new(KEYNODE)
            .args(args)
            .stdin(File::open(path(input)).expect("input"))
            .stdout(File::create(path(output)).expect("output"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("keynode starts");
        Guard {
            child,
            what: format!("keynode {}", args.join(" ")),
        }
    };
    // It may be connected to once it says it listens.
    let mut listen = listen_pipe(
        to,
        PROTOCOL,
        File::open(path("back")).expect("input"),
        File::create(path("forward.out")).expect("output"),
    );
    let connect_args = [
        "pipe",
        "connect",
        "--data-dir",
        from.dir(),
        &to.node_id,
        "--protocol",
        PROTOCOL,
    ];
    let mut connect = spawn(&connect_args, "forward", "back.out");
    assert!(connect.wait().success(), "pipe connect failed");
    assert!(listen.wait().success(), "pipe listen failed");
    assert!(
        std::fs::read(path("forward.out")).expect("read") == forward,
        "connect's stdin on listen's stdout"
    );
    assert!(
        std::fs::read(path("back.out")).expect("read") == back,
        "listen's stdin on connect's stdout"
    );
}

/// Every private agent finds every other: by hole punching between two
/// cones, through a relay when either is behind a symmetric NAT (no
/// punch gets through a mapping that is new for every destination). Per
/// pair it prints, on stderr, the mode and the time `nodes find` took
/// (`matrix <from> -> <to>: ...`), and each agent's NAT class
/// (`nat_class <name>: ...`).
#[test]
fn private_agents_find_each_other_by_signal_between_cones_and_by_relay_past_a_symmetric_nat() {
    let Some(net) = Network::start(4, &MATRIX) else {
        return;
    };
    // The classes decide how each is reached: each is collected (given
    // time to settle on the one its NAT should give) and printed, and a
    // wrong one fails the test with the modes below.
    let mut wrong = Vec::new();
    for (host, agent) in net.hosts() {
        let class = match host.nat {
            None => "public",
            Some(Nat::Cone) => "cone",
            Some(Nat::Symmetric) => "symmetric",
        };
        let status = poll(
            &["agent", "status", "--data-dir", agent.dir()],
            CLASS_SETTLES,
            |status| status["nat_class"] == class,
        );
        let got = match &status {
            Ok(status) | Err(status) => status["nat_class"].clone(),
        };
        eprintln!("nat_class {}: {got}", host.name);
        if status.is_err() {
            wrong.push(format!("{} is classified {got}, not {class}", host.name));
        }
    }
    let mut reaches = Vec::new();
    for &(from, from_nat) in MATRIX.private {
        for &(to, to_nat) in MATRIX.private {
            if from == to {
                continue;
            }
            let reached = reach(&net, from, to);
            let mode = match &reached.mode {
                Ok(mode) => mode.clone(),
                Err(why) => format!("failed ({why})"),
            };
            eprintln!(
                "matrix {from} -> {to}: {mode} in {} ms{}",
                reached.took.as_millis(),
                if reached.connected_before {
                    " (already connected)"
                } else {
                    ""
                }
            );
            let expected = if from_nat == Nat::Cone && to_nat == Nat::Cone {
                "Signal"
            } else {
                "Relay"
            };
            reaches.push((reached, expected));
        }
    }
    wrong.extend(
        reaches
            .iter()
            .filter(|(r, expected)| r.mode.as_deref() != Ok(*expected))
            .map(|(r, expected)| format!("{} -> {}: {:?}, not {expected}", r.from, r.to, r.mode)),
    );
    assert!(wrong.is_empty(), "wrong classes or modes: {wrong:#?}");

    // The relayed connection carries what an application sends, and a claim.
    let (s1, s2) = (net.agent("s1"), net.agent("s2"));
    pipe_both_ways(s1, s2, net.tmp.path());
    ok(&["nodes", "allow-claim", "--data-dir", s2.dir(), &s1.node_id]);
    let claimed = ok(&["nodes", "claim", "--data-dir", s1.dir(), &s2.node_id]);
    assert!(claimed.contains(&s2.node_id), "{claimed}");
    let their_chain = json(&["nodes", "chain", "--data-dir", s1.dir(), &s2.node_id]);
    let links: Vec<(&str, &str)> = their_chain["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .filter_map(|c| {
            Some((
                c["body"]["issuer"].as_str()?,
                c["body"]["subject"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        links,
        [(s2.node_id.as_str(), s1.node_id.as_str())],
        "{their_chain}"
    );
}

/// Two agents behind cone NATs whose routers cannot reach each other
/// directly (a rule on the wan drops what goes between them) until the
/// rule is lifted.
const BLOCKED_CONES: Layout = Layout {
    public: &["seed", "pub"],
    private: &[("c1", Nat::Cone), ("c2", Nat::Cone)],
};

/// The remote address of every connection of `agent` to `peer`.
fn connections_to(agent: &AgentProc, peer: &AgentProc) -> Vec<String> {
    modes_to(agent, peer)
        .into_iter()
        .map(|(remote, _)| remote)
        .collect()
}

/// The remote address and mode of every connection of `agent` to `peer`.
fn modes_to(agent: &AgentProc, peer: &AgentProc) -> Vec<(String, String)> {
    let answer = json(&["nodes", "connections", "--data-dir", agent.dir()]);
    answer["connections"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["node_id"] == peer.node_id.as_str())
                .filter_map(|c| {
                    Some((
                        c["remote"].as_str()?.to_owned(),
                        c["mode"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A relayed connection's remote is a mapped address (`100::/64`).
fn is_mapped(remote: &str) -> bool {
    remote.starts_with("[100::")
}

/// A pair that cannot punch (the wan drops what goes straight between
/// their routers) is connected through the relay; once the rule is
/// lifted, the relayed connection's upgrade punches, and the punched
/// connection takes over: a stream open on the relayed connection across
/// the switch runs to its end, and the next `find` reports the punched
/// connection.
#[test]
fn a_relayed_pair_moves_to_a_punched_connection_once_punching_is_let_through() {
    let Some(net) = Network::start_with(
        5,
        &BLOCKED_CONES,
        &[
            "--connect-timeout-ms",
            "2000",
            "--relay-upgrade-interval-ms",
            "1000",
        ],
        |topology| {
            let c1_wan = &topology.host("c1").wan_ip;
            let c2_wan = &topology.host("c2").wan_ip;
            let rules = format!(
                "add table inet block; \
                 add chain inet block between {{ type filter hook forward priority 0; }}; \
                 add rule inet block between ip saddr {c1_wan} ip daddr {c2_wan} drop; \
                 add rule inet block between ip saddr {c2_wan} ip daddr {c1_wan} drop"
            );
            topology.exec("wan", &["nft", &rules]);
        },
    ) else {
        return;
    };
    let (c1, c2) = (net.agent("c1"), net.agent("c2"));
    // No punch gets through: c1 reaches c2 through a relay.
    let found = json(&[
        "nodes",
        "find",
        "--data-dir",
        c1.dir(),
        &c2.node_id,
        "--timeout",
        "20",
    ]);
    assert_eq!(found["address"]["mode"], "Relay", "{found}");
    let before = connections_to(c1, c2);
    assert!(
        !before.is_empty() && before.iter().all(|r| is_mapped(r)),
        "only relayed connections while blocked: {before:?}"
    );

    // A stream opened on the relayed connection, half written.
    const PROTOCOL: &str = "test/nat-upgrade/1";
    let dir = net.tmp.path();
    let first: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let second: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    std::fs::write(dir.join("empty"), b"").expect("write");
    let mut listen = listen_pipe(
        c2,
        PROTOCOL,
        File::open(dir.join("empty")).expect("empty"),
        File::create(dir.join("upgrade.out")).expect("output"),
    );
    let mut connect = Guard {
        child: Command::new(KEYNODE)
            .args([
                "pipe",
                "connect",
                "--data-dir",
                c1.dir(),
                &c2.node_id,
                "--protocol",
                PROTOCOL,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("connect.err")).expect("stderr"))
            .spawn()
            .expect("keynode starts"),
        what: "pipe connect".into(),
    };
    let mut stdin = connect.child.stdin.take().expect("stdin");
    stdin.write_all(&first).expect("first half");
    stdin.flush().expect("flush");
    let deadline = Instant::now() + WAIT;
    // (Less the tail `pipe listen`'s stdout may hold back.)
    let most = first.len() as u64 - 4096;
    while std::fs::metadata(dir.join("upgrade.out")).map_or(0, |m| m.len()) < most {
        assert!(
            Instant::now() < deadline,
            "the first half did not arrive: {:?} bytes; connect said {:?}; c1 {:?}",
            std::fs::metadata(dir.join("upgrade.out")).map(|m| m.len()),
            std::fs::read_to_string(dir.join("connect.err")),
            connections_to(c1, c2),
        );
        thread::sleep(Duration::from_millis(20));
    }

    // The rule goes: the next upgrade round punches, and a punched
    // connection joins the relayed one.
    let lifted = Instant::now();
    net.topology
        .exec("wan", &["nft", "delete table inet block"]);
    let deadline = Instant::now() + WAIT;
    let punched = loop {
        let now = connections_to(c1, c2);
        if let Some(direct) = now.iter().find(|r| !is_mapped(r)) {
            break direct.clone();
        }
        assert!(Instant::now() < deadline, "no punched connection: {now:?}");
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "upgrade: punched connection at {punched} {} ms after the rule was lifted",
        lifted.elapsed().as_millis()
    );
    assert_eq!(punched, net.mapped("c2"));
    // `nodes connections` says how each was made.
    for (remote, mode) in modes_to(c1, c2) {
        let want = if is_mapped(&remote) {
            "Relay"
        } else {
            "Signal"
        };
        assert_eq!(mode, want, "{remote}");
    }

    // The stream on the relayed connection runs to its end.
    stdin.write_all(&second).expect("second half");
    drop(stdin);
    assert!(connect.wait().success(), "pipe connect failed");
    assert!(listen.wait().success(), "pipe listen failed");
    let got = std::fs::read(dir.join("upgrade.out")).expect("read");
    assert!(
        got.len() == first.len() + second.len()
            && got[..first.len()] == first[..]
            && got[first.len()..] == second[..],
        "the stream across the switch delivered {} of {} bytes",
        got.len(),
        first.len() + second.len()
    );
    // New uses take the punched connection.
    let found = json(&["nodes", "find", "--data-dir", c1.dir(), &c2.node_id]);
    assert_eq!(found["address"]["mode"], "Signal", "{found}");
    assert_eq!(
        found["address"]["address"],
        net.mapped("c2").as_str(),
        "{found}"
    );
    let metrics = ok(&["agent", "metrics", "--data-dir", c1.dir()]);
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("relay"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Sends `len` bytes on one stream of a new protocol from `from` to `to`
/// (`pipe connect` to `pipe listen`) and returns how long it took, from
/// the connect's start to both ends' exit; the bytes are checked.
fn pipe_one_way(from: &AgentProc, to: &AgentProc, dir: &Path, len: usize) -> Duration {
    const PROTOCOL: &str = "test/nat-throughput/1";
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("bulk"), &data).expect("write");
    std::fs::write(dir.join("none"), b"").expect("write");
    let mut listen = listen_pipe(
        to,
        PROTOCOL,
        File::open(dir.join("none")).expect("input"),
        File::create(dir.join("bulk.out")).expect("output"),
    );
    let started = Instant::now();
    let mut connect = Guard {
        child: Command::new(KEYNODE)
            .args([
                "pipe",
                "connect",
                "--data-dir",
                from.dir(),
                &to.node_id,
                "--protocol",
                PROTOCOL,
            ])
            .stdin(File::open(dir.join("bulk")).expect("input"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("keynode starts"),
        what: "pipe connect".into(),
    };
    assert!(connect.wait().success(), "pipe connect failed");
    assert!(listen.wait().success(), "pipe listen failed");
    let took = started.elapsed();
    assert!(
        std::fs::read(dir.join("bulk.out")).expect("read") == data,
        "the bytes arrived whole"
    );
    took
}

/// Not a check: the figure of BENCHMARKS.md ("relay throughput"). One
/// stream of 64 MiB over a punched connection (c1 -> c2) and over a
/// relayed one (s1 -> s2), in the same run, on veth links (no latency,
/// no loss): MB/s of each and their ratio, printed.
///
/// `cargo test --release -p keynode-tokio --test nat relay_throughput -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark: run it by name"]
fn relay_throughput_against_a_punched_connection() {
    // KEYNODE_RELAY_RATE: the relays' pair rate for this run (bytes per
    // second), to measure the relay itself rather than its default limit.
    let rate = std::env::var("KEYNODE_RELAY_RATE").ok();
    let extra: Vec<&str> = match &rate {
        Some(rate) => vec!["--relay-pair-bytes-per-second", rate],
        None => Vec::new(),
    };
    let Some(net) = Network::start_with(6, &MATRIX, &extra, |_| {}) else {
        return;
    };
    const LEN: usize = 64 << 20;
    for (from, to) in [("c1", "c2"), ("s1", "s2")] {
        let found = json(&[
            "nodes",
            "find",
            "--data-dir",
            net.agent(from).dir(),
            &net.agent(to).node_id,
        ]);
        eprintln!("{from} -> {to}: {}", found["address"]["mode"]);
    }
    let mut rates = Vec::new();
    for round in 0..3 {
        for (from, to) in [("c1", "c2"), ("s1", "s2")] {
            let took = pipe_one_way(net.agent(from), net.agent(to), net.tmp.path(), LEN);
            let rate = LEN as f64 / took.as_secs_f64() / 1e6;
            eprintln!(
                "throughput round {round} {from} -> {to}: {rate:.1} MB/s ({} ms)",
                took.as_millis()
            );
            rates.push(((from, to), rate));
        }
    }
    let median = |pair: (&str, &str)| {
        let mut r: Vec<f64> = rates
            .iter()
            .filter(|(p, _)| *p == pair)
            .map(|(_, r)| *r)
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let (direct, relayed) = (median(("c1", "c2")), median(("s1", "s2")));
    eprintln!(
        "throughput median: punched {direct:.1} MB/s, relayed {relayed:.1} MB/s, relayed/punched {:.3}",
        relayed / direct
    );
}

/// `pipe listen` on `to` for `protocol`, stdin from `input` and stdout to
/// `output`, once it says it listens.
fn listen_pipe(to: &AgentProc, protocol: &str, input: File, output: File) -> Guard {
    let mut listen = Guard {
        child: Command::new(KEYNODE)
            .args([
                "pipe",
                "listen",
                "--data-dir",
                to.dir(),
                "--protocol",
                protocol,
            ])
            .stdin(input)
            .stdout(output)
            .stderr(Stdio::piped())
            .spawn()
            .expect("keynode starts"),
        what: "pipe listen".into(),
    };
    let mut said = BufReader::new(listen.child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("listening for") {
        line.clear();
        let read = said.read_line(&mut line).expect("listen's stderr");
        assert!(read > 0, "pipe listen ended without listening");
    }
    // The rest of what it says is drained: a closed stderr would end it.
    thread::spawn(move || std::io::copy(&mut said, &mut std::io::sink()));
    listen
}
