//! The `keynode` command in child processes: agents started with `keynode
//! agent start`, driven through their control sockets (by `keynode nodes
//! ...` and by hand), stopped by signals, and killed with SIGKILL.
//!
//! Every child is killed when its guard is dropped, so a failing test leaves
//! no process behind, and every wait is bounded by [`WAIT`], so a hung child
//! fails the test instead of hanging it.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use keynode_core::claims::ClaimBody;
use keynode_core::{BucketIndex, NodeAddress, NodeId};
use keynode_store::{Store, StoreOptions};
use keynode_tokio::control::{MAX_REQUEST_SIZE, Reply, Request, Response};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

mod common;

use common::{
    AgentProc, WAIT, json, keynode, ok, promtool_check, sample, sample_if_any, start_agent,
    start_agent_with,
};

/// The (node id, address) pairs of a `nodes getall --json` answer.
fn contacts(all: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for bucket in all["buckets"].as_array().expect("buckets") {
        for contact in bucket["contacts"].as_array().expect("contacts") {
            for address in contact["addresses"].as_array().expect("addresses") {
                out.insert((
                    contact["node_id"].as_str().expect("node_id").to_owned(),
                    address["address"].as_str().expect("address").to_owned(),
                ));
            }
        }
    }
    out
}

/// The (issuer, subject) links of a `nodes chain --json` answer.
fn links(chain: &Value) -> Vec<(String, String)> {
    chain["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|claim| {
            assert_eq!(claim["body"]["type"], "link_node");
            (
                claim["body"]["issuer"].as_str().expect("issuer").to_owned(),
                claim["body"]["subject"]
                    .as_str()
                    .expect("subject")
                    .to_owned(),
            )
        })
        .collect()
}

/// A connection to an agent's control socket, speaking the protocol by hand.
struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    fn connect(agent: &AgentProc) -> Control {
        let stream = UnixStream::connect(agent.socket()).expect("control.sock accepts");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_write_timeout(Some(WAIT)).expect("timeout");
        Control {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    fn read(&mut self) -> io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn call(&mut self, request: &Request) -> io::Result<Response> {
        let mut bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.send_raw(&bytes)?;
        self.read()
    }
}

#[test]
fn two_agents_are_driven_through_their_control_sockets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = start_agent(&tmp.path().join("a"));
    let b = start_agent(&tmp.path().join("b"));

    for agent in [&a, &b] {
        let meta = std::fs::metadata(agent.socket()).expect("control.sock exists");
        assert!(meta.file_type().is_socket(), "control.sock is a socket");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "control.sock is for its owner only"
        );
    }

    // nodes add, then getall shows it.
    let added = ok(&["nodes", "add", "--data-dir", a.dir(), &b.node_id, &b.addr]);
    assert!(added.contains(&b.node_id), "{added}");
    let all = json(&["nodes", "getall", "--data-dir", a.dir()]);
    assert!(
        contacts(&all).contains(&(b.node_id.clone(), b.addr.clone())),
        "{all}"
    );
    let table = ok(&["nodes", "getall", "--data-dir", a.dir()]);
    assert!(
        table.contains(&b.node_id) && table.contains(&b.addr),
        "{table}"
    );

    // Its own NodeId is not added, and says so.
    let own = keynode(&["nodes", "add", "--data-dir", a.dir(), &a.node_id, &b.addr]);
    assert!(!own.status.success(), "nodes add <own id>: {own:?}");
    assert!(
        own.stderr.contains("own NodeId") && own.stderr.contains("ignored"),
        "{own:?}"
    );
    assert!(!own.stdout.contains("added"), "{own:?}");
    let all = json(&["nodes", "getall", "--data-dir", a.dir()]);
    assert!(
        !contacts(&all).iter().any(|(id, _)| *id == a.node_id),
        "{all}"
    );
    // A NodeId in upper case (multibase base32hexupper) is the same node.
    let upper = b.node_id.to_uppercase();
    assert!(upper.starts_with('V'));
    ok(&["nodes", "ping", "--data-dir", a.dir(), &upper]);

    // find and ping.
    let found = json(&["nodes", "find", "--data-dir", a.dir(), &b.node_id]);
    assert_eq!(found["reply"], "found");
    assert_eq!(found["node_id"], b.node_id.as_str());
    assert_eq!(found["address"]["address"], b.addr.as_str());
    let pinged = ok(&["nodes", "ping", "--data-dir", a.dir(), &b.node_id]);
    assert!(pinged.contains(&b.addr), "{pinged}");
    let connections = json(&["nodes", "connections", "--data-dir", a.dir()]);
    assert!(
        connections["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .any(|c| c["node_id"] == b.node_id.as_str()),
        "{connections}"
    );

    // agent status: not joined (no sync ran), the contact and the connection.
    let status = json(&["agent", "status", "--data-dir", a.dir()]);
    assert_eq!(status["joined"], false, "{status}");
    assert_eq!(status["contacts"], 1, "{status}");
    assert!(status["connections"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["last_sync_error"], Value::Null, "{status}");
    // b told a where it sees it (a's own address, both on 127.0.0.1): one
    // observer is not enough for a NAT class.
    assert_eq!(
        status["observed_addresses"],
        serde_json::json!([{ "address": a.addr, "observers": 1 }]),
        "{status}"
    );
    assert_eq!(status["nat_class"], "unknown", "{status}");
    let text = ok(&["agent", "status", "--data-dir", a.dir()]);
    assert!(text.contains("not joined the network"), "{text}");
    assert!(text.contains("1 contacts"), "{text}");
    assert!(
        text.contains(&format!("observed at: {} (1 peer)", a.addr)),
        "{text}"
    );
    assert!(text.contains("NAT class: unknown"), "{text}");

    // A node nobody knows: find and ping fail with a message.
    let nobody = NodeId::from_bytes([7; 32]).to_string();
    for command in ["find", "ping"] {
        let out = keynode(&["nodes", command, "--data-dir", a.dir(), &nobody]);
        assert!(
            !out.status.success(),
            "{command} of an unknown node: {out:?}"
        );
        assert!(out.stderr.contains(&nobody), "{out:?}");
    }

    // A claim needs the other side's permission.
    let refused = keynode(&["nodes", "claim", "--data-dir", a.dir(), &b.node_id]);
    assert!(
        !refused.status.success(),
        "claim without permission: {refused:?}"
    );
    assert!(refused.stderr.contains("error: "), "{refused:?}");
    ok(&["nodes", "allow-claim", "--data-dir", b.dir(), &a.node_id]);
    let claimed = ok(&["nodes", "claim", "--data-dir", a.dir(), &b.node_id]);
    assert!(claimed.contains(&b.node_id), "{claimed}");
    let their_chain = json(&["nodes", "chain", "--data-dir", a.dir(), &b.node_id]);
    assert_eq!(their_chain["node_id"], b.node_id.as_str());
    assert_eq!(
        links(&their_chain),
        [(b.node_id.clone(), a.node_id.clone())]
    );
    let own_chain = json(&["nodes", "chain", "--data-dir", a.dir()]);
    assert_eq!(own_chain["node_id"], a.node_id.as_str());
    assert_eq!(links(&own_chain), [(a.node_id.clone(), b.node_id.clone())]);
    let own_table = ok(&["nodes", "chain", "--data-dir", a.dir()]);
    assert!(own_table.contains(&b.node_id), "{own_table}");

    // Bad requests get error responses, and the connection and the agent go on.
    let mut control = Control::connect(&a);
    control.send_raw(b"this is not json\n").expect("send");
    control.send_raw(b"{\"op\":\"find_node\"}\n").expect("send");
    let mut huge = vec![b'x'; MAX_REQUEST_SIZE + 1];
    huge.push(b'\n');
    control.send_raw(&huge).expect("send");
    let mut kinds = Vec::new();
    for _ in 0..3 {
        match control.read().expect("an answer to each line") {
            Response::Error(e) => kinds.push(serde_json::to_value(e.kind).expect("kind")),
            Response::Ok(reply) => panic!("a bad request succeeded: {reply:?}"),
        }
    }
    assert_eq!(kinds, ["bad_request", "bad_request", "too_large"]);
    match control.call(&Request::Status).expect("status") {
        Response::Ok(Reply::Status { node_id, .. }) => assert_eq!(node_id, a.id()),
        other => panic!("status after bad requests: {other:?}"),
    }
    drop(control);

    // No second agent on the same directory.
    let second = keynode(&["agent", "start", "--data-dir", a.dir()]);
    assert!(!second.status.success(), "{second:?}");
    assert!(second.stderr.contains("already running"), "{second:?}");

    // keys renew: a new NodeId, reported by status too.
    let renewed = json(&["keys", "renew", "--data-dir", b.dir()]);
    assert_eq!(renewed["old_node_id"], b.node_id.as_str());
    let new_id = renewed["node_id"].as_str().expect("node_id").to_owned();
    assert_ne!(new_id, b.node_id);
    let status = json(&["agent", "status", "--data-dir", b.dir()]);
    assert_eq!(status["node_id"], new_id.as_str());
    assert_eq!(status["address"], b.addr.as_str());

    // Clean stops on SIGTERM and SIGINT; then no agent answers.
    let (a_dir, a_id, b_addr) = (a.dir.clone(), a.node_id.clone(), b.addr.clone());
    let b_id = b.node_id.clone();
    a.stop_with("TERM");
    b.stop_with("INT");
    let a_dir_text = a_dir.to_str().expect("utf-8 path");
    let gone = keynode(&["nodes", "getall", "--data-dir", a_dir_text]);
    assert!(!gone.status.success(), "{gone:?}");
    assert!(
        gone.stderr.contains("no agent running in")
            && gone.stderr.contains("control.sock not found"),
        "{gone:?}"
    );

    // Restarted, the agent keeps its NodeId, its contact and its claim.
    let again = start_agent(&a_dir);
    assert_eq!(again.node_id, a_id);
    let all = json(&["nodes", "getall", "--data-dir", again.dir()]);
    assert!(contacts(&all).contains(&(b_id.clone(), b_addr)), "{all}");
    let chain = json(&["nodes", "chain", "--data-dir", again.dir()]);
    assert_eq!(links(&chain), [(a_id, b_id)]);
    again.stop_with("TERM");
}

/// What the streams got acknowledged before the kill.
#[derive(Default)]
struct Acked {
    contacts: BTreeSet<NodeId>,
    claims: BTreeSet<NodeId>,
    permissions: BTreeSet<NodeId>,
    /// Error answers (there should be none: the agent only dies by SIGKILL).
    errors: Vec<String>,
}

impl Acked {
    fn merge(&mut self, other: Acked) {
        self.contacts.extend(other.contacts);
        self.claims.extend(other.claims);
        self.permissions.extend(other.permissions);
        self.errors.extend(other.errors);
    }
}

/// Sends `request`; `Ok(true)` when acknowledged, `Ok(false)` on an error
/// answer (recorded), `Err` when the connection broke.
fn acknowledged(control: &mut Control, request: &Request, acked: &mut Acked) -> io::Result<bool> {
    match control.call(request)? {
        Response::Ok(_) => Ok(true),
        Response::Error(e) => {
            acked.errors.push(format!("{request:?}: {e:?}"));
            Ok(false)
        }
    }
}

fn set_node(node_id: NodeId, address: NodeAddress) -> Request {
    Request::SetNode {
        node_id,
        address,
        force: true,
        block: false,
    }
}

/// Contacts per bucket: well below k (20), so that no forced set evicts an
/// acknowledged contact and no connection's set_node fills a bucket and
/// starts a garbage collection.
const PER_BUCKET: usize = 10;

/// Streams `set_node` of contacts in `buckets` (re-setting them once all are
/// in) until the connection breaks.
fn set_node_stream(
    mut control: Control,
    own: NodeId,
    buckets: std::ops::Range<u8>,
    seed: u64,
    count: Arc<AtomicUsize>,
) -> Acked {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ids = Vec::new();
    for bucket in buckets {
        for _ in 0..PER_BUCKET {
            ids.push(own.random_in_bucket(BucketIndex::new(bucket), &mut rng));
        }
    }
    let mut acked = Acked::default();
    for (i, id) in ids.iter().cycle().enumerate() {
        let port = 20_000 + u16::try_from(i % 10_000).unwrap_or(0);
        let address = NodeAddress::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        match acknowledged(&mut control, &set_node(*id, address), &mut acked) {
            Ok(true) => {
                acked.contacts.insert(*id);
                count.fetch_add(1, Ordering::SeqCst);
            }
            Ok(false) => {}
            Err(_) => break,
        }
    }
    acked
}

/// Adds each helper and claims it, then streams `allow_claims` for random
/// nodes until the connection breaks.
fn claim_stream(
    mut control: Control,
    helpers: Vec<(NodeId, NodeAddress)>,
    claims: Arc<AtomicUsize>,
) -> Acked {
    let mut acked = Acked::default();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut allow = |control: &mut Control, acked: &mut Acked| -> io::Result<()> {
        let node_id = NodeId::random(&mut rng);
        let request = Request::AllowClaims {
            node_id,
            allowed: true,
        };
        if acknowledged(control, &request, acked)? {
            acked.permissions.insert(node_id);
        }
        Ok(())
    };
    let result = (|| -> io::Result<()> {
        for (node_id, address) in helpers {
            if acknowledged(&mut control, &set_node(node_id, address), &mut acked)? {
                acked.contacts.insert(node_id);
            }
            if acknowledged(&mut control, &Request::ClaimNode { node_id }, &mut acked)? {
                acked.claims.insert(node_id);
                claims.fetch_add(1, Ordering::SeqCst);
            }
            for _ in 0..5 {
                allow(&mut control, &mut acked)?;
            }
        }
        loop {
            allow(&mut control, &mut acked)?;
        }
    })();
    drop(result);
    acked
}

#[test]
fn an_agent_killed_with_sigkill_mid_stream_loses_nothing_it_acknowledged_and_reopens_cleanly() {
    const STREAMS: u8 = 4;
    const BUCKETS_PER_STREAM: u8 = 30;
    const SETS_BEFORE_KILL: usize = 300;

    let tmp = tempfile::tempdir().expect("tempdir");
    let victim_dir = tmp.path().join("victim");
    let mut victim = start_agent(&victim_dir);
    let own = victim.id();
    let helpers: Vec<AgentProc> = (0..3)
        .map(|i| start_agent(&tmp.path().join(format!("helper{i}"))))
        .collect();
    for helper in &helpers {
        ok(&[
            "nodes",
            "allow-claim",
            "--data-dir",
            helper.dir(),
            &victim.node_id,
        ]);
    }

    let sets = Arc::new(AtomicUsize::new(0));
    let claims = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        // Buckets 100.. (far from where the helpers land, 250 and up).
        let first = 100 + s * BUCKETS_PER_STREAM;
        let control = Control::connect(&victim);
        let count = sets.clone();
        streams.push(thread::spawn(move || {
            set_node_stream(
                control,
                own,
                first..first + BUCKETS_PER_STREAM,
                u64::from(s),
                count,
            )
        }));
    }
    let helper_contacts = helpers
        .iter()
        .map(|h| (h.id(), h.addr.parse().expect("address")))
        .collect();
    let control = Control::connect(&victim);
    let claim_count = claims.clone();
    streams.push(thread::spawn(move || {
        claim_stream(control, helper_contacts, claim_count)
    }));

    // Kill once every claim and enough contacts are acknowledged, while the
    // streams are still sending.
    let deadline = Instant::now() + WAIT;
    while claims.load(Ordering::SeqCst) < helpers.len()
        || sets.load(Ordering::SeqCst) < SETS_BEFORE_KILL
    {
        assert!(
            Instant::now() < deadline,
            "streams stalled: {} claims, {} contacts acknowledged",
            claims.load(Ordering::SeqCst),
            sets.load(Ordering::SeqCst)
        );
        assert!(
            streams.iter().all(|s| !s.is_finished()),
            "a stream ended before the kill"
        );
        thread::sleep(Duration::from_millis(5));
    }
    victim.guard.child.kill().expect("SIGKILL");
    let status = victim.guard.wait();
    assert_eq!(
        status.signal(),
        Some(9),
        "the agent died by SIGKILL: {status}"
    );

    let mut acked = Acked::default();
    for stream in streams {
        acked.merge(stream.join().expect("stream thread"));
    }
    assert_eq!(acked.errors, Vec::<String>::new(), "error answers");
    assert_eq!(acked.claims.len(), helpers.len());
    assert!(!acked.permissions.is_empty());

    // The dead agent's socket is left behind; clients say so.
    let dead = keynode(&["nodes", "getall", "--data-dir", victim.dir()]);
    assert!(!dead.status.success(), "{dead:?}");
    assert!(dead.stderr.contains("no agent running in"), "{dead:?}");

    // The store opens cleanly and holds everything acknowledged.
    {
        let store = Store::open(victim_dir.join("db"), &StoreOptions::default())
            .expect("the store reopens after SIGKILL");
        let snapshot = store.load().expect("the store loads");
        let graph = snapshot.graph.expect("a graph was written");
        assert_eq!(graph.own, own);
        let stored: BTreeSet<NodeId> = graph.contacts.iter().map(|(id, _)| *id).collect();
        let lost: Vec<_> = acked.contacts.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged contacts lost: {lost:?}",
            lost.len(),
            acked.contacts.len()
        );
        let linked: BTreeSet<NodeId> = snapshot
            .claims
            .iter()
            .map(
                |signed| match signed.decode().expect("claim decodes").body {
                    ClaimBody::LinkNode { iss, sub } => {
                        assert_eq!(iss, own);
                        sub
                    }
                },
            )
            .collect();
        assert!(
            acked.claims.is_subset(&linked),
            "acknowledged claims {:?}, stored {linked:?}",
            acked.claims
        );
        let allowed: BTreeSet<NodeId> = snapshot.claim_permissions.iter().copied().collect();
        let lost: Vec<_> = acked.permissions.difference(&allowed).collect();
        assert!(lost.is_empty(), "claim permissions lost: {lost:?}");
        store.close();
    }

    // The agent starts again on the directory (replacing the dead socket)
    // and serves what was acknowledged.
    let again = start_agent(&victim_dir);
    assert_eq!(again.id(), own);
    let all = json(&["nodes", "getall", "--data-dir", again.dir()]);
    let served: BTreeSet<NodeId> = contacts(&all)
        .into_iter()
        .map(|(id, _)| id.parse().expect("node id"))
        .collect();
    assert!(acked.contacts.is_subset(&served), "contacts after restart");
    let chain = json(&["nodes", "chain", "--data-dir", again.dir()]);
    let subjects: BTreeSet<NodeId> = links(&chain)
        .into_iter()
        .map(|(_, sub)| sub.parse().expect("node id"))
        .collect();
    assert!(acked.claims.is_subset(&subjects), "claims after restart");
    again.stop_with("TERM");
    for helper in helpers {
        helper.stop_with("TERM");
    }
}

/// `keynode agent status --json` of `agent` once `done` holds (polled, at
/// most [`WAIT`]).
fn status_until(agent: &AgentProc, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = json(&["agent", "status", "--data-dir", agent.dir()]);
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "still {status} after {WAIT:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_agent_whose_seed_is_down_says_so_and_joins_by_itself_once_the_seed_is_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The seed: started once for its key and port, then stopped.
    let seed_dir = tmp.path().join("seed");
    let seed = start_agent(&seed_dir);
    let (seed_id, seed_addr) = (seed.node_id.clone(), seed.addr.clone());
    seed.stop_with("TERM");

    let a_dir = tmp.path().join("a");
    let seeds = format!("{seed_id}@{seed_addr}");
    let retries = [
        "--sync-retry-initial-delay-ms",
        "100",
        "--sync-retry-max-delay-ms",
        "500",
    ];
    let a = start_agent_with(None, &a_dir, "127.0.0.1:0", Some(&seeds), &retries);

    // Not joined, and status says why.
    let status = status_until(&a, |s| s["last_sync_error"].is_string());
    assert_eq!(status["joined"], false, "{status}");
    let error = status["last_sync_error"].as_str().expect("error");
    assert!(error.contains(&seed_id), "{status}");
    let text = ok(&["agent", "status", "--data-dir", a.dir()]);
    assert!(text.contains("not joined the network"), "{text}");
    assert!(text.contains(&seed_id), "{text}");
    // Its log (stderr) warns, naming the seed and its error.
    let log = std::fs::read_to_string(a_dir.with_extension("log")).expect("log");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&seed_id) && l.contains("unreachable")),
        "{log}"
    );

    // The seed comes up late, where it was: the agent joins by itself.
    let seed = start_agent_with(None, &seed_dir, &seed_addr, None, &[]);
    assert_eq!(seed.node_id, seed_id);
    let status = status_until(&a, |s| s["joined"] == true);
    assert_eq!(status["last_sync_error"], Value::Null, "{status}");
    assert!(status["contacts"].as_u64() >= Some(1), "{status}");
    let text = ok(&["agent", "status", "--data-dir", a.dir()]);
    assert!(text.contains("\njoined the network"), "{text}");
    a.stop_with("TERM");
    seed.stop_with("TERM");
}

/// One HTTP/1.1 request to `addr`, answered and closed by the server:
/// the status line, the headers (lower-case names) and the body.
fn http(addr: &str, method: &str, path: &str) -> (String, Vec<(String, String)>, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the answer, then close");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// A TCP port free on loopback a moment ago.
fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn agent_metrics_and_the_metrics_endpoint_pass_promtool_and_count_a_ping() {
    const INBOUND: &str = "keynode_connections_opened_total{mode=\"direct\",direction=\"inbound\"}";
    let tmp = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("127.0.0.1:{}", free_tcp_port());
    let a = start_agent_with(
        None,
        &tmp.path().join("a"),
        "127.0.0.1:0",
        None,
        &["--metrics-addr", &endpoint],
    );
    let b = start_agent(&tmp.path().join("b"));

    // Before anything happened: valid text, no inbound connection.
    let before = ok(&["agent", "metrics", "--data-dir", a.dir()]);
    promtool_check(&before);
    assert_eq!(sample_if_any(&before, INBOUND).unwrap_or(0), 0, "{before}");
    assert_eq!(sample(&before, "keynode_contacts"), 0, "{before}");

    // b adds a and pings it: a counts one inbound direct connection.
    ok(&["nodes", "add", "--data-dir", b.dir(), &a.node_id, &a.addr]);
    ok(&["nodes", "ping", "--data-dir", b.dir(), &a.node_id]);
    let after = ok(&["agent", "metrics", "--data-dir", a.dir()]);
    promtool_check(&after);
    assert_eq!(sample(&after, INBOUND), 1, "{after}");
    let b_text = ok(&["agent", "metrics", "--data-dir", b.dir()]);
    assert_eq!(
        sample(
            &b_text,
            "keynode_connections_opened_total{mode=\"direct\",direction=\"outbound\"}"
        ),
        1,
        "{b_text}"
    );
    assert_eq!(sample(&b_text, "keynode_contacts"), 1, "{b_text}");

    // The same counts over HTTP, with the Prometheus content type.
    let (status, headers, body) = http(&endpoint, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers:?}");
    let content_type = headers.iter().find(|(k, _)| k == "content-type");
    assert!(
        content_type.is_some_and(|(_, v)| v.starts_with("text/plain; version=0.0.4")),
        "{headers:?}"
    );
    promtool_check(&body);
    assert_eq!(sample(&body, INBOUND), 1, "{body}");
    // HEAD: the head alone; elsewhere 404; other methods 405.
    let (status, headers, body) = http(&endpoint, "HEAD", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.iter().any(|(k, _)| k == "content-length"));
    assert_eq!(body, "");
    assert_eq!(http(&endpoint, "GET", "/").0, "HTTP/1.1 404 Not Found");
    let (status, _, body) = http(&endpoint, "HEAD", "/");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 404 Not Found", "")
    );
    assert_eq!(
        http(&endpoint, "POST", "/metrics").0,
        "HTTP/1.1 405 Method Not Allowed"
    );

    // The endpoint is off by default: b serves none, and a's port is
    // released when it stops.
    a.stop_with("TERM");
    assert!(
        std::net::TcpStream::connect(&endpoint).is_err(),
        "closed with the agent"
    );
    b.stop_with("TERM");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_start_with_its_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tmp.path().join("a");
    let out = keynode(&[
        "agent",
        "start",
        "--data-dir",
        dir.to_str().unwrap(),
        "--metrics-addr",
        &addr,
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("metrics address {addr}")),
        "{out:?}"
    );
}

/// `--relay always` makes an agent relay from the start, and `agent
/// status` (JSON and text) and `agent metrics` say so; an agent left at
/// the default (`when-public`) on loopback, where no peer can tell it is
/// public (all share one IP), does not relay. Both show their
/// reservations (none: neither is behind a NAT) and the relay's counters,
/// and the metrics pass promtool.
#[test]
fn agent_status_and_metrics_say_whether_the_agent_relays() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_agent_with(
        None,
        &tmp.path().join("relay"),
        "127.0.0.1:0",
        None,
        &["--relay", "always"],
    );
    let plain = start_agent(&tmp.path().join("plain"));
    ok(&[
        "nodes",
        "add",
        "--data-dir",
        plain.dir(),
        &relay.node_id,
        &relay.addr,
    ]);
    ok(&["nodes", "ping", "--data-dir", plain.dir(), &relay.node_id]);

    let status = json(&["agent", "status", "--data-dir", relay.dir()]);
    let r = &status["relay"];
    assert_eq!(r["relaying"], true, "{status}");
    assert_eq!(r["serve"], "always", "{status}");
    assert_eq!(r["reservations"], serde_json::json!([]), "{status}");
    assert_eq!(r["pairs"], 0, "{status}");
    assert_eq!(r["reservations_served"], 0, "{status}");
    assert_eq!(r["frames_forwarded"], 0, "{status}");
    assert_eq!(r["bytes_forwarded"], 0, "{status}");
    assert_eq!(
        r["dropped"],
        serde_json::json!({"no_pair": 0, "over_rate": 0, "too_large": 0, "unexpected": 0}),
        "{status}"
    );
    assert_eq!(
        r["refused"],
        serde_json::json!({"not_relaying": 0, "full": 0, "per_peer": 0}),
        "{status}"
    );
    let status = json(&["agent", "status", "--data-dir", plain.dir()]);
    assert_eq!(status["relay"]["relaying"], false, "{status}");
    assert_eq!(status["relay"]["serve"], "when_public", "{status}");
    assert_eq!(status["nat_class"], "unknown", "{status}");

    let text = ok(&["agent", "status", "--data-dir", relay.dir()]);
    assert!(
        text.contains("relay: relaying for others (--relay always)"),
        "{text}"
    );
    assert!(text.contains("relay reservations: none"), "{text}");
    assert!(
        text.contains(
            "relayed: 0 pairs open, 0 reservations held for others, 0 frames (0 bytes) forwarded"
        ),
        "{text}"
    );
    assert!(text.contains("relay drops: 0 no pair"), "{text}");
    let text = ok(&["agent", "status", "--data-dir", plain.dir()]);
    assert!(
        text.contains("relay: not relaying (--relay when-public)"),
        "{text}"
    );

    for (agent, serving) in [(&relay, 1), (&plain, 0)] {
        let metrics = ok(&["agent", "metrics", "--data-dir", agent.dir()]);
        promtool_check(&metrics);
        assert_eq!(
            sample(&metrics, "keynode_relay_serving"),
            serving,
            "{metrics}"
        );
        for family in [
            "keynode_relay_pairs",
            "keynode_relay_reservations_served",
            "keynode_relay_reservations_held",
            "keynode_relay_paths",
            "keynode_relay_pairs_opened_total",
            "keynode_relay_reservations_granted_total",
            "keynode_relay_frames_forwarded_total",
            "keynode_relay_bytes_forwarded_total",
            "keynode_relay_dropped_total{reason=\"no_pair\"}",
            "keynode_relay_dropped_total{reason=\"over_rate\"}",
            "keynode_relay_dropped_total{reason=\"too_large\"}",
            "keynode_relay_dropped_total{reason=\"unexpected\"}",
            "keynode_relay_refused_total{reason=\"not_relaying\"}",
            "keynode_relay_refused_total{reason=\"full\"}",
            "keynode_relay_refused_total{reason=\"per_peer\"}",
        ] {
            assert_eq!(sample(&metrics, family), 0, "{family} in\n{metrics}");
        }
        for help in [
            "# HELP keynode_relay_frames_forwarded_total Relay frames this node forwarded.",
            "# HELP keynode_relay_dropped_total Relay frames dropped, by reason.",
            "# TYPE keynode_relay_refused_total counter",
            "# TYPE keynode_relay_pairs gauge",
        ] {
            assert!(metrics.contains(help), "{help} in\n{metrics}");
        }
    }

    // A bad mode is refused, naming the choices.
    let out = keynode(&[
        "agent",
        "start",
        "--data-dir",
        tmp.path().join("bad").to_str().expect("utf-8 path"),
        "--relay",
        "sometimes",
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("when-public") && out.stderr.contains("never"),
        "{out:?}"
    );
    relay.stop_with("TERM");
    plain.stop_with("TERM");
}
