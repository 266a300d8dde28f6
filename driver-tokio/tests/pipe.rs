//! `keynode pipe listen` and `keynode pipe connect` in child processes,
//! each the client of an agent started with `keynode agent start`: what
//! goes into one's stdin comes out of the other's stdout, byte for byte,
//! both ways at once; and what can go wrong is said on stderr with a
//! non-zero exit.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;

use common::{AgentProc, Guard, KEYNODE, WAIT, keynode, ok, start_agent};

/// A `keynode pipe ...` child: its stderr lines arrive on `stderr`.
struct PipeProc {
    guard: Guard,
    stderr: mpsc::Receiver<String>,
    /// The lines read so far, for failure messages.
    seen: Vec<String>,
}

impl PipeProc {
    /// Runs `keynode args...` with stdin from `input` and stdout to `output`.
    fn spawn(args: &[&str], input: &Path, output: &Path) -> PipeProc {
        Self::spawn_with(args, File::open(input).expect("input").into(), output)
    }

    /// Runs `keynode args...` with `stdin` and stdout to `output`.
    fn spawn_with(args: &[&str], stdin: Stdio, output: &Path) -> PipeProc {
        let mut child = Command::new(KEYNODE)
            .args(args)
            .stdin(stdin)
            .stdout(File::create(output).expect("output"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("keynode starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PipeProc {
            guard: Guard {
                child,
                what: format!("keynode {}", args.join(" ")),
            },
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most [`WAIT`]) for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        while !self.seen.iter().any(|line| line.contains(text)) {
            match self.stderr.recv_timeout(WAIT) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "{}: no line with {text:?} on stderr ({e}); it said {:?}",
                    self.guard.what, self.seen
                ),
            }
        }
    }

    /// The next stderr line, `None` at the end (waits at most [`WAIT`]).
    fn next_line(&mut self) -> Option<String> {
        let line = self.stderr.recv_timeout(WAIT).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Waits for the end; whether it succeeded, and all it said on stderr.
    fn finish(mut self) -> (bool, String) {
        let status = self.guard.wait();
        while let Ok(line) = self.stderr.recv_timeout(WAIT) {
            self.seen.push(line);
        }
        (status.success(), self.seen.join("\n"))
    }
}

/// `len` bytes no compressor would guess, the same for the same `seed`.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Asserts `got` is `want`, saying where they part (not printing megabytes).
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    let first_difference = got.iter().zip(want).position(|(g, w)| g != w);
    assert!(
        got.len() == want.len() && first_difference.is_none(),
        "{what}: {} bytes arrived of {}, first difference at {first_difference:?}",
        got.len(),
        want.len()
    );
}

/// Two agents, `a` knowing where `b` is.
fn two_agents(root: &Path) -> (AgentProc, AgentProc) {
    let a = start_agent(&root.join("a"));
    let b = start_agent(&root.join("b"));
    ok(&["nodes", "add", "--data-dir", a.dir(), &b.node_id, &b.addr]);
    (a, b)
}

const PROTOCOL: &str = "test/pipe/1";

#[test]
fn ten_mib_piped_into_connect_come_out_of_listen_and_its_input_comes_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_agents(tmp.path());
    let forward = random_bytes(10 << 20, 1);
    // Not a multiple of any buffer or chunk size.
    let back = random_bytes((1 << 20) + 17, 2);
    let path = |name: &str| tmp.path().join(name);
    std::fs::write(path("forward"), &forward).expect("write");
    std::fs::write(path("back"), &back).expect("write");

    let args = [
        "pipe",
        "listen",
        "--data-dir",
        b.dir(),
        "--protocol",
        PROTOCOL,
    ];
    let mut listen = PipeProc::spawn(&args, &path("back"), &path("forward.out"));
    listen.wait_for(&format!("listening for {PROTOCOL} on {}", b.node_id));
    let args = [
        "pipe",
        "connect",
        "--data-dir",
        a.dir(),
        &b.node_id,
        "--protocol",
        PROTOCOL,
    ];
    let connect = PipeProc::spawn(&args, &path("forward"), &path("back.out"));

    let (connected, connect_said) = connect.finish();
    assert!(connected, "pipe connect failed: {connect_said}");
    let (listened, listen_said) = listen.finish();
    assert!(listened, "pipe listen failed: {listen_said}");
    assert!(
        listen_said.contains(&format!("open with {}", a.node_id)),
        "listen names its peer: {listen_said}"
    );
    assert_same(
        &std::fs::read(path("forward.out")).expect("read"),
        &forward,
        "connect's stdin on listen's stdout",
    );
    assert_same(
        &std::fs::read(path("back.out")).expect("read"),
        &back,
        "listen's stdin on connect's stdout",
    );
    a.stop_with("TERM");
    b.stop_with("TERM");
}

#[test]
fn a_protocol_nobody_serves_or_one_served_already_fails_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_agents(tmp.path());
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"hello?\n").expect("write");
    let out = tmp.path().join("out");

    // b listens on nothing: the stream is refused.
    let args = [
        "pipe",
        "connect",
        "--data-dir",
        a.dir(),
        &b.node_id,
        "--protocol",
        "test/nobody/1",
    ];
    let (connected, said) = PipeProc::spawn(&args, &empty, &out).finish();
    assert!(
        !connected,
        "a pipe to an unserved protocol succeeded: {said}"
    );
    assert!(
        said.contains("error: ") && said.contains("does not serve this protocol"),
        "{said}"
    );
    assert_eq!(std::fs::read(&out).expect("read"), b"", "nothing on stdout");

    // One listener a protocol: a second is refused while the first waits,
    // and once the first gives up (killed), the protocol is free again.
    let args = [
        "pipe",
        "listen",
        "--data-dir",
        b.dir(),
        "--protocol",
        PROTOCOL,
    ];
    let mut first = PipeProc::spawn(&args, &empty, &out);
    first.wait_for("listening for");
    let second = keynode(&args);
    assert!(!second.status.success(), "{second:?}");
    assert!(second.stderr.contains("registered already"), "{second:?}");
    drop(first);
    // The agent sees the first one's connection end a moment after the
    // kill: until then a listen is still refused.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut third = PipeProc::spawn(&args, &empty, &out);
        match third.next_line() {
            Some(line) if line.contains("listening for") => break,
            Some(line) if line.contains("registered already") => {}
            other => panic!("listen after the first gave up: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the protocol stays taken");
        thread::sleep(Duration::from_millis(20));
    }

    a.stop_with("TERM");
    b.stop_with("TERM");
}

#[test]
fn a_pipe_whose_other_end_goes_away_mid_stream_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_agents(tmp.path());
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let args = [
        "pipe",
        "listen",
        "--data-dir",
        b.dir(),
        "--protocol",
        PROTOCOL,
    ];
    let mut listen = PipeProc::spawn(&args, &empty, &tmp.path().join("listen.out"));
    listen.wait_for("listening for");
    let args = [
        "pipe",
        "connect",
        "--data-dir",
        a.dir(),
        &b.node_id,
        "--protocol",
        PROTOCOL,
    ];
    let mut connect = PipeProc::spawn_with(&args, Stdio::piped(), &tmp.path().join("out"));
    let mut input = connect.guard.child.stdin.take().expect("stdin");
    listen.wait_for("open with");
    // The listening client dies mid-stream; its agent resets the stream
    // when the next bytes come, and connect must not take that for an end.
    drop(listen);
    let chunk = random_bytes(64 << 10, 3);
    for _ in 0..1024 {
        if input.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(input);
    let (connected, said) = connect.finish();
    assert!(!connected, "connect ended cleanly: {said}");
    assert!(
        said.contains("error: ") && said.contains("stopped the stream"),
        "{said}"
    );
    a.stop_with("TERM");
    b.stop_with("TERM");
}
