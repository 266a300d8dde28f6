//! The node manager through the agent: joining through a seed (named by
//! address or by host name), finding, pinging, claiming and fetching
//! chains; a peer's key checked; renewing the key; restarting from the
//! data directory and on the same port; mDNS on loopback and its
//! configuration checked; stopping while an operation runs, and when the
//! last handle goes.

use std::net::SocketAddr;
use std::time::Duration;

use keynode_agent::{
    Agent, AgentConfig, AgentError, ChainOptions, ClaimOptions, FindOptions, PingOptions,
    SetupError, SyncOptions,
};
use keynode_core::claims::KeyPair;
use keynode_core::{NodeAddress, SeedNodes};

use super::*;

fn seeds(agent: &Agent) -> SeedNodes {
    SeedNodes::new([(agent.node_id(), NodeAddress::from(agent.local_addr()))])
}

/// `n` agents started in `dir`, every one but the first joined through it
/// (a blocking sync).
async fn joined<R: Runtime>(dir: &std::path::Path, n: usize) -> Vec<Agent> {
    let mut agents = Vec::new();
    for i in 0..n {
        agents.push(start::<R>(dir, &format!("a{i}"), |_| {}).await);
    }
    let seed = seeds(&agents[0]);
    for agent in agents.iter().skip(1) {
        agent
            .sync_node_graph(seed.clone(), SyncOptions::default().blocking(true))
            .await
            .expect("synced through the seed");
    }
    agents
}

/// Whether [`each_finds_every_other`] pings what it found as well.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ping {
    Too,
    No,
}

/// Every agent finds every other at its address (and pings it).
async fn each_finds_every_other(agents: &[Agent], ping: Ping) {
    for (i, from) in agents.iter().enumerate() {
        for (j, to) in agents.iter().enumerate() {
            if i == j {
                continue;
            }
            let found = from
                .find_node(to.node_id(), FindOptions::default())
                .await
                .expect("find_node");
            let (address, _) = found.unwrap_or_else(|| panic!("agent {i} finds agent {j}"));
            assert_eq!(address, NodeAddress::from(to.local_addr()));
            if ping == Ping::Too {
                let pinged = from
                    .ping_node(to.node_id(), PingOptions::default())
                    .await
                    .expect("ping_node");
                assert!(pinged.is_some(), "agent {i} pings agent {j}");
            }
        }
    }
}

/// Five agents join through the first one; then each finds and pings every
/// other, each claims every later one, and each chain, fetched by another
/// agent and verified there, is the chain its owner holds.
pub fn agents_sync_through_one_seed_then_find_ping_claim_and_fetch_each_others_chains<
    R: Runtime,
>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let agents = joined::<R>(dir.path(), 5).await;
        each_finds_every_other(&agents, Ping::Too).await;
        for (i, from) in agents.iter().enumerate() {
            for (j, to) in agents.iter().enumerate().skip(i + 1) {
                to.allow_claims_from(from.node_id(), true)
                    .await
                    .expect("allowed");
                from.claim_node(to.node_id(), ClaimOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("agent {i} claims agent {j}: {e}"));
            }
        }
        for (i, agent) in agents.iter().enumerate() {
            let chain = agent.sigchain().await.expect("sigchain");
            assert_eq!(chain.len(), agents.len() - 1, "agent {i}'s sigchain");
            let other = &agents[(i + 1) % agents.len()];
            let fetched = other
                .request_chain_data(agent.node_id(), ChainOptions::default())
                .await
                .expect("chain data");
            assert_eq!(
                fetched, chain,
                "agent {i}'s chain as another agent verified it"
            );
        }
        stop_all(&agents.iter().collect::<Vec<_>>()).await;
    });
}

/// Twenty agents join through the first one; then each finds every other
/// at its address.
pub fn twenty_agents_sync_through_one_seed_and_find_each_other<R: Runtime>() {
    run::<R>(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let agents = joined::<R>(dir.path(), 20).await;
        each_finds_every_other(&agents, Ping::No).await;
        stop_all(&agents.iter().collect::<Vec<_>>()).await;
    });
}

/// A seed given as `NodeId@localhost:port` is resolved, joined, found,
/// and connected to at the address the name resolved to.
pub fn a_seed_named_by_hostname_is_resolved_and_joined<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let seed = start::<R>(dir.path(), "seed", |_| {}).await;
        let newcomer = start::<R>(dir.path(), "newcomer", |_| {}).await;
        let by_name: SeedNodes =
            format!("{}@localhost:{}", seed.node_id(), seed.local_addr().port())
                .parse()
                .expect("a seed named by host name");
        newcomer
            .sync_node_graph(by_name, SyncOptions::default().blocking(true))
            .await
            .expect("synced through the seed");
        let found = newcomer
            .find_node(seed.node_id(), FindOptions::default())
            .await
            .expect("find_node");
        assert!(
            found.is_some(),
            "the seed, resolved from localhost, is found"
        );
        assert!(
            newcomer
                .connections()
                .await
                .expect("the agent runs")
                .iter()
                .any(|(_, peer, at)| *peer == seed.node_id() && *at == seed.local_addr()),
            "connected to the seed at the address localhost resolved to"
        );
        stop_all(&[&newcomer, &seed]).await;
    });
}

/// A ping of an address expecting another node's key there fails, and
/// leaves no connection to that node; the right key at the same address
/// answers.
pub fn a_wrong_certificate_key_is_refused<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let impostor = KeyPair::from_seed(&[42; 32]).expect("a key").node_id();
        let at_b = NodeAddress::from(b.local_addr());
        assert!(
            !a.ping_node_address(impostor, at_b.clone(), PingOptions::default())
                .await
                .expect("ping_node_address"),
            "b's address does not answer for another key"
        );
        assert!(
            a.ping_node_address(b.node_id(), at_b, PingOptions::default())
                .await
                .expect("ping_node_address"),
            "b's address answers for b's key"
        );
        assert!(
            !connected_to(&a, impostor).await,
            "no connection to the impostor"
        );
        stop_all(&[&a, &b]).await;
    });
}

/// After `renew_key`, every contact is in its bucket under the new id and
/// none is lost; the key file holds the new key; and the other agents
/// find the agent under its new id, at its address.
pub fn renew_key_moves_every_contact_and_the_agent_is_found_under_its_new_id<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut agents = Vec::new();
        for i in 0..6 {
            agents.push(start::<R>(dir.path(), &format!("r{i}"), |_| {}).await);
        }
        let seed = seeds(&agents[0]);
        for agent in agents.iter().skip(1) {
            agent
                .sync_node_graph(seed.clone(), SyncOptions::default().blocking(true))
                .await
                .expect("synced through the seed");
        }
        let x = &agents[3];
        let old = x.node_id();
        let before: usize = x
            .get_all()
            .await
            .expect("get_all")
            .iter()
            .map(|(_, b)| b.len())
            .sum();
        let new = x.renew_key().await.expect("renew_key");
        assert_ne!(old, new);
        assert_eq!(x.node_id(), new);
        let after = x.get_all().await.expect("get_all");
        for (bucket, in_bucket) in &after {
            for (id, _) in in_bucket {
                assert_eq!(
                    new.bucket_index(id),
                    Some(*bucket),
                    "{id} is in its bucket under the new id"
                );
            }
        }
        assert_eq!(after.iter().map(|(_, b)| b.len()).sum::<usize>(), before);
        // The key file holds the new key: a restart keeps the new NodeId.
        let secret =
            keynode_agent::load_or_create_key(&dir.path().join("r3")).expect("the key file");
        assert_eq!(KeyPair::from_seed(&secret).expect("a key").node_id(), new);
        // The others learn the new NodeId (as x's connections tell them)
        // and find the agent under it.
        for (i, other) in agents.iter().enumerate() {
            if i == 3 {
                continue;
            }
            // Until a lookup finds it (the test's limit bounds the tries).
            let (address, _) = loop {
                let found = other
                    .find_node(new, FindOptions::default())
                    .await
                    .expect("find_node");
                match found {
                    Some(found) => break found,
                    None => R::sleep(Duration::from_millis(20)).await,
                }
            };
            assert_eq!(
                address,
                NodeAddress::from(x.local_addr()),
                "agent {i} finds the renewed agent at its address"
            );
        }
        stop_all(&agents.iter().collect::<Vec<_>>()).await;
    });
}

/// A data directory serves one agent at a time; a stopped agent's handle
/// says so; the next agent on the directory has the same id, node graph,
/// sigchain and scheduled tasks.
pub fn a_stopped_agent_frees_its_directory_and_restarts_with_its_id_graph_chain_and_tasks<
    R: Runtime,
>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let second = R::start(AgentConfig::new(
            dir.path().join("b"),
            ([127, 0, 0, 1], 0).into(),
        ))
        .await;
        match second {
            Err(AgentError::Setup(SetupError::DataDir { source, .. })) => {
                assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock);
            }
            Err(other) => panic!("a second agent on b's directory: {other}"),
            Ok(_) => panic!("a second agent started on b's directory"),
        }
        b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
            .await
            .expect("synced");
        a.allow_claims_from(b.node_id(), true)
            .await
            .expect("allowed");
        b.claim_node(a.node_id(), ClaimOptions::default())
            .await
            .expect("claimed");
        let id = b.node_id();
        let graph = b.get_all().await.expect("get_all");
        let chain = b.sigchain().await.expect("sigchain");
        let tasks = b.scheduled_tasks();
        assert!(!graph.is_empty());
        assert_eq!(chain.len(), 1);
        assert_eq!(
            tasks.len(),
            257,
            "256 refresh tasks and the connection check"
        );
        b.stop().await.expect("stopped");
        assert!(
            matches!(b.get_all().await, Err(AgentError::Stopped)),
            "a stopped agent's handle says so"
        );

        let again = start::<R>(dir.path(), "b", |_| {}).await;
        assert_eq!(again.node_id(), id);
        assert_eq!(again.get_all().await.expect("get_all"), graph);
        assert_eq!(again.sigchain().await.expect("sigchain"), chain);
        assert_eq!(again.scheduled_tasks(), tasks);
        stop_all(&[&again, &a]).await;
    });
}

/// `stop` returns once the agent's sockets are closed, so an agent on a
/// fixed port restarts on it at once, again and again, with its id.
pub fn a_stopped_agent_restarts_at_once_on_its_port<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = start::<R>(dir.path(), "a", |_| {}).await;
        let (at, id) = (first.local_addr(), first.node_id());
        first.stop().await.expect("stopped");
        for round in 0..30 {
            let again = R::start(AgentConfig::new(dir.path().join("a"), at))
                .await
                .unwrap_or_else(|e| panic!("restart {round} on {at}: {e}"));
            assert_eq!((again.local_addr(), again.node_id()), (at, id));
            again.stop().await.expect("stopped");
        }
    });
}

/// With every handle gone the agent stops by itself: its store is closed
/// and its directory freed for the next agent, which has its id.
pub fn dropping_every_handle_stops_the_agent_and_frees_its_directory<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let id = a.node_id();
        let copy = a.clone();
        drop(a);
        assert_eq!(
            copy.get_all().await.expect("a clone keeps it running"),
            Vec::new(),
        );
        drop(copy);
        // The loop notices on its own time: retry while the directory is
        // busy (the test's limit bounds the retries).
        let again = loop {
            match R::start(AgentConfig::new(
                dir.path().join("a"),
                ([127, 0, 0, 1], 0).into(),
            ))
            .await
            {
                Ok(again) => break again,
                Err(AgentError::Setup(SetupError::DataDir { source, .. }))
                    if source.kind() == std::io::ErrorKind::WouldBlock =>
                {
                    R::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("the directory after the last handle went: {e}"),
            }
        };
        assert_eq!(again.node_id(), id);
        again.stop().await.expect("stopped");
    });
}

/// Two agents with mDNS on loopback and no seeds: one finds the other on
/// the local network, with a local address.
pub fn two_agents_without_seeds_find_each_other_by_mdns<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // A port of this test binary's own, apart from other mDNS tests,
        // so that parallel runs do not hear each other.
        let port = 10_000 + (std::process::id() % 10_000) as u16;
        let mdns = keynode_core::MdnsConfig {
            groups: vec![std::net::IpAddr::from([224, 0, 0, 250])],
            port,
        };
        let mut agents = Vec::new();
        for name in ["m1", "m2"] {
            agents.push(
                start::<R>(dir.path(), name, |config| {
                    config.config.mdns = Some(mdns.clone());
                    config.mdns_interface = std::net::Ipv4Addr::LOCALHOST;
                })
                .await,
            );
        }
        let (a, b) = (&agents[0], &agents[1]);
        let found = a
            .find_node_by_mdns(b.node_id(), FindOptions::default())
            .await
            .expect("mDNS find");
        let (address, data) = found.expect("found on the local network");
        assert_eq!(address, NodeAddress::from(b.local_addr()));
        assert!(data.scopes.local, "mDNS addresses are local");
        assert_eq!(
            a.query_mdns(b.node_id()).await.expect("mDNS query"),
            vec![b.local_addr()]
        );
        stop_all(&[a, b]).await;
    });
}

/// An IPv6 mDNS group, which the agent's IPv4 mDNS socket cannot join, is
/// refused at start with an error naming it, not ignored.
pub fn an_ipv6_mdns_group_is_refused_at_start_not_ignored<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = AgentConfig::new(dir.path().join("v6"), ([127, 0, 0, 1], 0).into());
        config.config.mdns = Some(keynode_core::MdnsConfig {
            groups: vec![
                std::net::IpAddr::from([224, 0, 0, 250]),
                "ff02::fa17".parse().expect("an IPv6 group"),
            ],
            port: 40_000 + (std::process::id() % 20_000) as u16,
        });
        match R::start(config).await {
            Err(AgentError::Setup(SetupError::Socket { source, .. })) => {
                assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
                let message = source.to_string();
                assert!(
                    message.contains("ff02::fa17") && message.contains("IPv4 only"),
                    "{message}"
                );
            }
            Err(other) => panic!("expected the IPv6 group to be refused, got {other}"),
            Ok(_) => panic!("an agent started with an IPv6 mDNS group its socket cannot join"),
        }
    });
}

/// A call under way when the agent stops ends (it does not hang), and
/// calls after the stop say `Stopped`.
pub fn a_call_waiting_when_the_agent_stops_ends_and_later_calls_say_stopped<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        // Nobody listens there: the attempt would wait for its timeout.
        let nowhere = NodeAddress::from(SocketAddr::from(([127, 0, 0, 1], 9)));
        let stranger = KeyPair::from_seed(&[7; 32]).expect("a key").node_id();
        let waiting = a.ping_node_address(stranger, nowhere.clone(), PingOptions::default());
        let stopper = async {
            // Until the ping is under way.
            while a.in_flight().operations == 0 {
                R::sleep(Duration::from_millis(1)).await;
            }
            a.stop().await.expect("stopped");
        };
        let (ended, ()) = futures::join!(within::<R, _>(Duration::from_secs(30), waiting), stopper);
        let ended = ended.expect("the waiting call ends when the agent stops");
        assert!(
            !matches!(ended, Ok(true)),
            "nothing answered at {nowhere:?}, got {ended:?}"
        );
        assert!(matches!(
            a.ping_node_address(stranger, nowhere, PingOptions::default())
                .await,
            Err(AgentError::Stopped)
        ));
    });
}

/// An agent that joined through two peers at other IPs (on loopback:
/// 127.0.0.2 and 127.0.0.3) lists the address they see it at, its own
/// (127.0.0.1 and its port), and so reports itself public; its metrics say
/// so too.
pub fn an_agent_joined_through_two_peers_reports_its_observed_address_and_public<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let p1 = start::<R>(dir.path(), "p1", |c| c.bind = ([127, 0, 0, 2], 0).into()).await;
        let p2 = start::<R>(dir.path(), "p2", |c| c.bind = ([127, 0, 0, 3], 0).into()).await;
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let before = a.status().await.expect("status");
        assert_eq!(before.nat_class, keynode_core::nat::NatClass::Unknown);
        assert!(before.observed_addresses.is_empty(), "{before:?}");
        let both = SeedNodes::new([
            (p1.node_id(), NodeAddress::from(p1.local_addr())),
            (p2.node_id(), NodeAddress::from(p2.local_addr())),
        ]);
        a.sync_node_graph(both, SyncOptions::default().blocking(true))
            .await
            .expect("synced through the two peers");
        for peer in [&p1, &p2] {
            let pinged = a
                .ping_node(peer.node_id(), PingOptions::default())
                .await
                .expect("ping_node");
            assert!(pinged.is_some(), "the agent reaches {}", peer.local_addr());
        }
        eventually::<R, _>(|| async {
            a.status().await.expect("status").nat_class == keynode_core::nat::NatClass::Public
        })
        .await;
        let status = a.status().await.expect("status");
        assert_eq!(
            status.observed_addresses,
            vec![keynode_core::nat::ObservedAddress {
                address: a.local_addr(),
                observers: 2,
            }],
            "{status:?}"
        );
        assert_eq!(a.local_addr().ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        let metrics = a.metrics();
        assert_eq!(metrics.core.nat_class, keynode_core::nat::NatClass::Public);
        assert_eq!(
            metrics
                .core
                .nat_class_changes
                .get(keynode_core::nat::NatClass::Public),
            1
        );
        stop_all(&[&a, &p1, &p2]).await;
    });
}
