//! What the tests that run the `keynode` command share: child processes
//! killed when their guard drops, agents started with `keynode agent
//! start` (on loopback or in a network namespace), and client commands.
//! Every wait is bounded by [`WAIT`], so a hung child fails the test
//! instead of hanging it.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use keynode_core::NodeId;
use serde_json::Value;

pub const KEYNODE: &str = env!("CARGO_BIN_EXE_keynode");

/// The longest any child or answer is waited for.
pub const WAIT: Duration = Duration::from_secs(90);

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Guard {
    pub child: Child,
    pub what: String,
}

impl Guard {
    /// Waits for the child to end, at most [`WAIT`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {WAIT:?}",
                self.what
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {}", self.what);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent started with `keynode agent start`.
pub struct AgentProc {
    pub guard: Guard,
    pub dir: PathBuf,
    pub node_id: String,
    pub addr: String,
    /// What the agent printed on stdout after its start line, once it ends.
    pub rest: mpsc::Receiver<String>,
}

impl AgentProc {
    pub fn dir(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    pub fn id(&self) -> NodeId {
        self.node_id.parse().expect("the start line holds a NodeId")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Sends `signal`, waits for the agent to end, and checks that it ended
    /// successfully, removed its socket and printed nothing more.
    pub fn stop_with(mut self, signal: &str) {
        self.guard.signal(signal);
        let status = self.guard.wait();
        assert!(status.success(), "agent stopped by SIG{signal}: {status}");
        assert!(
            !self.socket().exists(),
            "control.sock is removed on SIG{signal}"
        );
        let rest = self.rest.recv_timeout(WAIT).expect("stdout closes");
        assert_eq!(rest, "", "the agent prints exactly one line on stdout");
    }
}

/// Starts `keynode agent start` on `dir`, bound to loopback, and reads its
/// start line.
pub fn start_agent(dir: &Path) -> AgentProc {
    start_agent_in(None, dir, "127.0.0.1:0", None)
}

/// Starts `keynode agent start` on `dir` bound to `bind`, in the network
/// namespace `netns` if one is given (through `ip netns exec`, which execs
/// the agent itself, so the guard holds the agent's pid), syncing from
/// `seeds` if given, and reads its start line.
pub fn start_agent_in(
    netns: Option<&str>,
    dir: &Path,
    bind: &str,
    seeds: Option<&str>,
) -> AgentProc {
    start_agent_with(netns, dir, bind, seeds, &[])
}

/// [`start_agent_in`] with `extra` arguments after the others (more
/// options of `agent start`, e.g. `--config FILE`).
pub fn start_agent_with(
    netns: Option<&str>,
    dir: &Path,
    bind: &str,
    seeds: Option<&str>,
    extra: &[&str],
) -> AgentProc {
    let log = dir.with_extension("log");
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, KEYNODE]);
            c
        }
        None => Command::new(KEYNODE),
    };
    command
        .args(["agent", "start", "--bind", bind, "--data-dir"])
        .arg(dir);
    if let Some(seeds) = seeds {
        command.args(["--seed-nodes", seeds]);
    }
    command.args(extra);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("keynode starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = Guard {
        child,
        what: format!("agent in {}", dir.display()),
    };
    let (line_tx, line_rx) = mpsc::channel();
    let (rest_tx, rest_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = line_tx.send(reader.read_line(&mut line).map(|_| line));
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        let _ = rest_tx.send(rest);
    });
    let line = match line_rx.recv_timeout(WAIT) {
        Ok(Ok(line)) => line,
        other => {
            let status = guard.child.try_wait();
            panic!(
                "no start line from the agent in {} ({other:?}, {status:?}); its log:\n{}",
                dir.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        }
    };
    let Some((node_id, addr)) = line.trim_end().split_once(" listening on ") else {
        let _ = guard.child.kill();
        panic!(
            "unexpected start line {line:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let agent = AgentProc {
        node_id: node_id.to_owned(),
        addr: addr.to_owned(),
        guard,
        dir: dir.to_path_buf(),
        rest: rest_rx,
    };
    assert!(agent.node_id.parse::<NodeId>().is_ok(), "{line:?}");
    assert!(
        agent.addr.parse::<std::net::SocketAddr>().is_ok(),
        "{line:?}"
    );
    agent
}

/// What a client command did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `keynode args...` to its end (at most [`WAIT`]).
pub fn keynode(args: &[&str]) -> Output {
    let mut child = Command::new(KEYNODE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keynode starts");
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let mut guard = Guard {
        child,
        what: format!("keynode {}", args.join(" ")),
    };
    let status = guard.wait();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs a command that must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = keynode(args);
    assert!(
        out.status.success(),
        "keynode {} failed: {out:?}",
        args.join(" ")
    );
    out.stdout
}

/// Runs a command with `--json` that must succeed; its one JSON line.
pub fn json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(&args);
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout:?}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

/// `promtool check metrics` on `text`: run when promtool is installed;
/// when it is not, the check is skipped unless `KEYNODE_PROMTOOL=require`.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let required = std::env::var("KEYNODE_PROMTOOL").is_ok_and(|v| v == "require");
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if !required => {
            eprintln!("promtool not run ({e}): set KEYNODE_PROMTOOL=require to fail instead");
            return;
        }
        Err(e) => panic!("KEYNODE_PROMTOOL=require but promtool did not start: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `line_start` (a name with its labels) in `text`.
pub fn sample(text: &str, line_start: &str) -> u64 {
    sample_if_any(text, line_start).unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

/// The value of the sample `line_start` in `text`, if it has one.
pub fn sample_if_any(text: &str, line_start: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{line_start} {v}: {e}"))
        })
}
