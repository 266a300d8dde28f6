//! `keynode agent start --runtime smol`: the same agent on smol's
//! executor (its loop, receiving task and control socket server), driven
//! by the same client commands as one on tokio, next to one on tokio;
//! and a pipe through it, both ways.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

use keynode_core::NodeId;

mod common;

use common::{AgentProc, Guard, KEYNODE, WAIT, json, keynode, ok, start_agent, start_agent_with};

const PROTOCOL: &str = "test/smol-pipe/1";

fn start_smol(dir: &Path) -> AgentProc {
    start_agent_with(None, dir, "127.0.0.1:0", None, &["--runtime", "smol"])
}

#[test]
fn an_agent_on_smol_answers_every_client_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("smol");
    let on_smol = start_smol(&dir);
    let on_tokio = start_agent(&tmp.path().join("tokio"));
    let (s, t) = (&on_smol, &on_tokio);

    let status = json(&["agent", "status", "--data-dir", s.dir()]);
    assert_eq!(status["reply"], "status", "{status}");
    assert_eq!(status["node_id"], s.node_id.as_str(), "{status}");
    assert_eq!(status["address"], s.addr.as_str(), "{status}");
    let line = ok(&["agent", "status", "--data-dir", s.dir()]);
    assert!(line.contains(&s.node_id), "{line}");

    // nodes add, then find and ping through the smol agent.
    let added = ok(&["nodes", "add", "--data-dir", s.dir(), &t.node_id, &t.addr]);
    assert!(added.contains(&t.node_id), "{added}");
    let found = json(&["nodes", "find", "--data-dir", s.dir(), &t.node_id]);
    assert_eq!(found["reply"], "found", "{found}");
    assert_eq!(found["address"]["address"], t.addr.as_str(), "{found}");
    let pinged = ok(&["nodes", "ping", "--data-dir", s.dir(), &t.node_id]);
    assert!(pinged.contains(&t.addr), "{pinged}");
    let connections = json(&["nodes", "connections", "--data-dir", s.dir()]);
    assert!(
        connections["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .any(|c| c["node_id"] == t.node_id.as_str()),
        "{connections}"
    );
    let all = ok(&["nodes", "getall", "--data-dir", s.dir()]);
    assert!(all.contains(&t.node_id) && all.contains(&t.addr), "{all}");

    // The tokio agent learned of the smol one from its connection, and
    // finds it.
    let back = json(&["nodes", "find", "--data-dir", t.dir(), &s.node_id]);
    assert_eq!(back["address"]["address"], s.addr.as_str(), "{back}");

    // A node nobody knows: a failure with a message, from smol as from tokio.
    let nobody = NodeId::from_bytes([7; 32]).to_string();
    let out = keynode(&["nodes", "ping", "--data-dir", s.dir(), &nobody]);
    assert!(!out.status.success(), "ping of an unknown node: {out:?}");
    assert!(out.stderr.contains(&nobody), "{out:?}");

    // A claim, answered by the tokio agent, kept in the smol one's chain.
    ok(&["nodes", "allow-claim", "--data-dir", t.dir(), &s.node_id]);
    let claimed = ok(&["nodes", "claim", "--data-dir", s.dir(), &t.node_id]);
    assert!(claimed.contains(&t.node_id), "{claimed}");
    let chain = json(&["nodes", "chain", "--data-dir", s.dir()]);
    assert_eq!(chain["node_id"], s.node_id.as_str(), "{chain}");
    assert_eq!(chain["claims"].as_array().map(Vec::len), Some(1), "{chain}");

    // SIGTERM stops it cleanly and removes its socket.
    let socket = on_smol.socket();
    on_smol.stop_with("TERM");
    assert!(!socket.exists(), "control.sock removed at stop");
}

/// `keynode args...` with stdin from `input` and stdout to `output`; its
/// stderr lines arrive on the receiver.
fn spawn_pipe(args: &[&str], input: &Path, output: &Path) -> (Guard, mpsc::Receiver<String>) {
    let mut child = Command::new(KEYNODE)
        .args(args)
        .stdin(File::open(input).expect("input"))
        .stdout(File::create(output).expect("output"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("keynode starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let what = format!("keynode {}", args.join(" "));
    (Guard { child, what }, rx)
}

/// Waits (at most [`WAIT`]) for a line containing `text`; the lines seen.
fn wait_for(lines: &mpsc::Receiver<String>, text: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while !seen.iter().any(|line: &String| line.contains(text)) {
        match lines.recv_timeout(WAIT) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with {text:?} ({e}); seen {seen:?}"),
        }
    }
    seen
}

#[test]
fn a_pipe_through_an_agent_on_smol_carries_both_ways() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = start_smol(&tmp.path().join("a"));
    let b = start_agent(&tmp.path().join("b"));

    // A pipe: listen on the smol agent, connect from the tokio one.
    let path = |name: &str| tmp.path().join(name);
    let forward: Vec<u8> = (0..(256 * 1024 + 7)).map(|i: u32| (i * 31) as u8).collect();
    let back = b"and back again\n".repeat(1000);
    std::fs::write(path("forward"), &forward).expect("write");
    std::fs::write(path("back"), &back).expect("write");
    let (mut listen, listen_said) = spawn_pipe(
        &[
            "pipe",
            "listen",
            "--data-dir",
            a.dir(),
            "--protocol",
            PROTOCOL,
        ],
        &path("back"),
        &path("forward.out"),
    );
    wait_for(
        &listen_said,
        &format!("listening for {PROTOCOL} on {}", a.node_id),
    );
    ok(&["nodes", "add", "--data-dir", b.dir(), &a.node_id, &a.addr]);
    let (mut connect, _) = spawn_pipe(
        &[
            "pipe",
            "connect",
            "--data-dir",
            b.dir(),
            &a.node_id,
            "--protocol",
            PROTOCOL,
        ],
        &path("forward"),
        &path("back.out"),
    );
    assert!(connect.wait().success(), "pipe connect to the smol agent");
    assert!(listen.wait().success(), "pipe listen on the smol agent");
    assert!(
        std::fs::read(path("forward.out")).expect("read") == forward,
        "connect's stdin on listen's stdout"
    );
    assert!(
        std::fs::read(path("back.out")).expect("read") == back,
        "listen's stdin on connect's stdout"
    );

    a.stop_with("TERM");
    b.stop_with("INT");
}
