//! `keynode agent start --runtime smol`: the same agent, its loop and its
//! control socket on smol instead of tokio, and every client command
//! works against it as against the default (status, nodes add, find,
//! ping, and a pipe both ways), with a tokio agent as its peer.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

mod common;

use common::{AgentProc, Guard, KEYNODE, WAIT, json, ok, start_agent, start_agent_with};

const PROTOCOL: &str = "test/smol-pipe/1";

fn start_smol(dir: &Path) -> AgentProc {
    start_agent_with(None, dir, "127.0.0.1:0", None, &["--runtime", "smol"])
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
fn an_agent_on_smol_answers_every_client_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = start_smol(&tmp.path().join("a"));
    let b = start_agent(&tmp.path().join("b"));

    let status = ok(&["agent", "status", "--data-dir", a.dir()]);
    assert!(
        status.contains(&a.node_id) && status.contains(&a.addr),
        "{status}"
    );

    let added = ok(&["nodes", "add", "--data-dir", a.dir(), &b.node_id, &b.addr]);
    assert!(added.contains(&b.node_id), "{added}");
    let found = json(&["nodes", "find", "--data-dir", a.dir(), &b.node_id]);
    assert_eq!(found["reply"], "found");
    assert_eq!(found["address"]["address"], b.addr.as_str());
    let pinged = ok(&["nodes", "ping", "--data-dir", a.dir(), &b.node_id]);
    assert!(pinged.contains(&b.addr), "{pinged}");

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
