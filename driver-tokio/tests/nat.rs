//! Hole punching through real NAT: `keynode` agents in Linux network
//! namespaces, two of them behind routers that masquerade with nftables
//! (the kernel's connection tracking: a reply gets in, an unsolicited
//! datagram does not), reaching each other through a public seed that
//! relays their signals.
//!
//! ```text
//!                      wan (a router)
//!          ┌──────────────────┼──────────────────┐
//!   seed 10.0.1.2     nat-a 10.0.2.2      nat-b 10.0.3.2
//!                          │ masquerade         │ masquerade
//!                     a 192.168.1.2        b 192.168.2.2
//! ```
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables). Without them the test
//! says so and passes, unless `KEYNODE_NETNS_TESTS=require` (set by
//! `.ci/run`, which installs both), when it fails.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{AgentProc, WAIT, json, keynode, ok, promtool_check, sample, start_agent_in};
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

/// The namespaces of one test, deleted (with their links) when dropped.
struct Topology {
    prefix: String,
}

impl Topology {
    const NAMESPACES: [&'static str; 6] = ["wan", "seed", "nata", "a", "natb", "b"];

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        let ns = self.ns(ns);
        let mut all = vec!["netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A veth pair from `left` (named `left_name` there) to `right`
    /// (named `right_name`), both up.
    fn link(&self, left: &str, left_name: &str, right: &str, right_name: &str) {
        // Interface names are made unique in the root namespace first,
        // then renamed inside their own (15 characters at most).
        let (l, r) = (
            format!("{}{left_name}{right}", self.prefix),
            format!("{}{right_name}{left}", self.prefix),
        );
        let (l, r) = (&l[..l.len().min(15)], &r[..r.len().min(15)]);
        run("ip", &["link", "add", l, "type", "veth", "peer", "name", r]);
        for (end, ns, name) in [(l, left, left_name), (r, right, right_name)] {
            run("ip", &["link", "set", end, "netns", &self.ns(ns)]);
            self.exec(ns, &["ip", "link", "set", end, "name", name]);
            self.exec(ns, &["ip", "link", "set", name, "up"]);
        }
    }

    /// The namespaces of test number `tag` (tests run in parallel).
    fn build(tag: u8) -> Topology {
        let topology = Topology {
            prefix: format!("kn{}{tag}", std::process::id() % 100_000),
        };
        for ns in Self::NAMESPACES {
            run("ip", &["netns", "add", &topology.ns(ns)]);
            topology.exec(ns, &["ip", "link", "set", "lo", "up"]);
        }
        // The wan is a router (the internet has hops: a punch's first,
        // low-TTL packet dies there, past its own NAT and short of the
        // other's), one subnet per side.
        topology.exec("wan", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (host, net) in [("seed", "10.0.1"), ("nata", "10.0.2"), ("natb", "10.0.3")] {
            let port = format!("p{host}");
            topology.link("wan", &port, host, "wan0");
            topology.exec(
                "wan",
                &["ip", "addr", "add", &format!("{net}.1/24"), "dev", &port],
            );
            topology.exec(
                host,
                &["ip", "addr", "add", &format!("{net}.2/24"), "dev", "wan0"],
            );
            topology.exec(
                host,
                &["ip", "route", "add", "default", "via", &format!("{net}.1")],
            );
        }
        for (router, host, net) in [("nata", "a", "192.168.1"), ("natb", "b", "192.168.2")] {
            topology.link(router, "lan0", host, "eth0");
            topology.exec(
                router,
                &["ip", "addr", "add", &format!("{net}.1/24"), "dev", "lan0"],
            );
            topology.exec(
                host,
                &["ip", "addr", "add", &format!("{net}.2/24"), "dev", "eth0"],
            );
            topology.exec(
                host,
                &["ip", "route", "add", "default", "via", &format!("{net}.1")],
            );
            topology.exec(router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            // Source NAT of everything leaving for the wan; what comes back
            // in is only what connection tracking matches to a flow that
            // went out (no other rule lets anything through to the LAN,
            // since nothing else is routed to its private addresses).
            topology.exec(
                router,
                &[
                    "nft",
                    "add table ip nat; \
                     add chain ip nat post { type nat hook postrouting priority srcnat; }; \
                     add rule ip nat post oifname \"wan0\" masquerade",
                ],
            );
        }
        topology
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in Self::NAMESPACES {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(ns)])
                .output();
        }
    }
}

/// Polls `keynode args... --json` until `done` holds of its answer, at most
/// [`WAIT`]; the last answer.
fn until(args: &[&str], what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = json(args);
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}: still {answer}");
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

/// A seed on the wan and an agent behind each NAT, synced through the seed.
struct Network {
    // Dropped first: the agents, then their directories, then the namespaces.
    seed: AgentProc,
    a: AgentProc,
    b: AgentProc,
    _tmp: tempfile::TempDir,
    topology: Topology,
}

impl Network {
    /// `None` (and a line on stderr) where namespaces cannot be made and
    /// the environment does not require them.
    fn start(tag: u8) -> Option<Network> {
        if let Err(why) = netns_available(tag) {
            let required = std::env::var("KEYNODE_NETNS_TESTS").is_ok_and(|v| v == "require");
            assert!(!required, "network namespaces with nftables NAT: {why}");
            eprintln!("skipped: network namespaces with nftables NAT: {why}");
            return None;
        }
        let topology = Topology::build(tag);
        let tmp = tempfile::tempdir().unwrap();
        let seed = start_agent_in(
            Some(&topology.ns("seed")),
            &tmp.path().join("seed"),
            "10.0.1.2:0",
            None,
        );
        let seeds = format!("{}@{}", seed.node_id, seed.addr);
        let a = start_agent_in(
            Some(&topology.ns("a")),
            &tmp.path().join("a"),
            "192.168.1.2:0",
            Some(&seeds),
        );
        let b = start_agent_in(
            Some(&topology.ns("b")),
            &tmp.path().join("b"),
            "192.168.2.2:0",
            Some(&seeds),
        );
        for agent in [&a, &b] {
            until(
                &["nodes", "connections", "--data-dir", seed.dir()],
                "the seed is connected to both",
                |answer| {
                    answer["connections"].as_array().is_some_and(|all| {
                        all.iter().any(|c| c["node_id"] == agent.node_id.as_str())
                    })
                },
            );
        }
        Some(Network {
            seed,
            a,
            b,
            _tmp: tmp,
            topology,
        })
    }

    /// `agent`'s address as its NAT maps it (Linux's masquerade keeps the
    /// port when it can).
    fn mapped(agent: &AgentProc, router: &str) -> String {
        let port = agent.addr.rsplit_once(':').map(|(_, p)| p).expect("a port");
        format!("{router}:{port}")
    }
}

#[test]
fn agents_behind_nat_are_seen_at_their_routers_and_unsolicited_connections_are_dropped() {
    let Some(net) = Network::start(1) else {
        return;
    };
    // The seed sees each of them at its router's address: the NATs are real.
    for (agent, router) in [(&net.a, "10.0.2.2"), (&net.b, "10.0.3.2")] {
        assert_eq!(
            connection_to(&net.seed, agent),
            Some(Network::mapped(agent, router)),
            "the seed sees {} behind its NAT",
            agent.node_id
        );
    }
    // Nothing gets in unasked: a public node that knows b's mapped address
    // but has no node in common with b to signal through cannot reach it.
    let dir = net._tmp.path().join("outsider");
    let outsider = start_agent_in(Some(&net.topology.ns("seed")), &dir, "10.0.1.2:0", None);
    let b_mapped = Network::mapped(&net.b, "10.0.3.2");
    json(&[
        "nodes",
        "add",
        "--data-dir",
        outsider.dir(),
        &net.b.node_id,
        &b_mapped,
    ]);
    let direct = keynode(&[
        "nodes",
        "ping",
        "--data-dir",
        outsider.dir(),
        &net.b.node_id,
    ]);
    assert!(
        !direct.status.success(),
        "b's NAT let an unsolicited connection in: {direct:?}"
    );
    // While the seed, which b dialled, is answered through it.
    let seed_pings_b = keynode(&[
        "nodes",
        "ping",
        "--data-dir",
        net.seed.dir(),
        &net.b.node_id,
    ]);
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
    let Some(net) = Network::start(2) else {
        return;
    };
    let (a, b) = (&net.a, &net.b);
    let b_mapped = Network::mapped(b, "10.0.3.2");
    // a finds b: the seed relays a's signal, both punch, and the
    // connection goes straight between the two NATs.
    let found = json(&["nodes", "find", "--data-dir", a.dir(), &b.node_id]);
    assert_eq!(found["address"]["address"], b_mapped.as_str(), "{found}");
    assert_eq!(found["address"]["mode"], "Signal", "{found}");
    assert_eq!(connection_to(a, b), Some(b_mapped));
    assert_eq!(connection_to(b, a), Some(Network::mapped(a, "10.0.2.2")));
    // Each now has two observers at different IPs (the seed, and the other
    // through its NAT) that see it at one mapped address, not its own: a
    // cone NAT (masquerade's mapping does not depend on the destination).
    for (agent, router) in [(a, "10.0.2.2"), (b, "10.0.3.2")] {
        let status = until(
            &["agent", "status", "--data-dir", agent.dir()],
            "the agent classifies its NAT",
            |status| status["nat_class"] == "cone",
        );
        assert_eq!(
            status["observed_addresses"],
            serde_json::json!([{ "address": Network::mapped(agent, router), "observers": 2 }]),
            "{status}"
        );
    }
    // The seed, bound to its wan address, is seen there by both: public.
    let status = until(
        &["agent", "status", "--data-dir", net.seed.dir()],
        "the seed classifies itself",
        |status| status["nat_class"] == "public",
    );
    assert_eq!(
        status["observed_addresses"][0]["address"],
        net.seed.addr.as_str(),
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
