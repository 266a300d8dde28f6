//! `keynode agent start --config FILE`: the file's keys take effect, flags
//! override them, and a bad file is a clear error before anything starts.

use std::time::{Duration, Instant};

mod common;

use common::{WAIT, json, keynode, start_agent_with};

#[test]
fn a_config_file_turns_mdns_on_and_its_agents_find_each_other() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A port of this test's own, so that parallel runs do not hear each other.
    let port = 40_000 + (std::process::id() % 20_000) as u16;
    let file = tmp.path().join("keynode.toml");
    std::fs::write(
        &file,
        format!(
            "bind = \"127.0.0.1:1\"\nmdns = true\nmdns-groups = [\"224.0.0.250\"]\nmdns-port = {port}\nmdns-interface = \"127.0.0.1\"\n"
        ),
    )
    .expect("config file");
    let file = file.to_str().expect("utf-8 path");
    // `--bind 127.0.0.1:0` (common's) overrides the file's port 1.
    let a = start_agent_with(
        None,
        &tmp.path().join("a"),
        "127.0.0.1:0",
        None,
        &["--config", file],
    );
    let b = start_agent_with(
        None,
        &tmp.path().join("b"),
        "127.0.0.1:0",
        None,
        &["--config", file],
    );
    for agent in [&a, &b] {
        assert!(!agent.addr.ends_with(":1"), "the flag wins: {}", agent.addr);
    }
    // No seeds: a finds b only by mDNS. Announcements take a moment.
    let deadline = Instant::now() + WAIT;
    loop {
        let out = keynode(&["nodes", "find", "--data-dir", a.dir(), &b.node_id, "--json"]);
        if out.status.success() {
            let found: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
            assert_eq!(found["address"]["address"], b.addr.as_str(), "{found}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a never found b by mDNS: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = json(&["agent", "status", "--data-dir", b.dir()]);
    assert_eq!(status["node_id"], b.node_id.as_str());
}

#[test]
fn a_bad_config_file_is_refused_with_the_key_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("agent");
    let dir = dir.to_str().expect("utf-8 path");
    for (text, named) in [
        ("map_size = 1000\n", "map_size"),
        ("mdns-port = \"high\"\n", "mdns-port"),
        (
            "mdns = true\nmdns-groups = [\"ff02::fa17\"]\n",
            "ff02::fa17",
        ),
    ] {
        let file = tmp.path().join("bad.toml");
        std::fs::write(&file, text).expect("config file");
        let out = keynode(&[
            "agent",
            "start",
            "--data-dir",
            dir,
            "--config",
            file.to_str().expect("utf-8 path"),
        ]);
        assert!(!out.status.success(), "{text:?} started: {out:?}");
        assert!(out.stderr.contains(named), "{text:?}: {out:?}");
        assert_eq!(out.stdout, "", "nothing started: {out:?}");
    }
    let missing = keynode(&[
        "agent",
        "start",
        "--data-dir",
        dir,
        "--config",
        "/nonexistent.toml",
    ]);
    assert!(!missing.status.success());
    assert!(missing.stderr.contains("/nonexistent.toml"), "{missing:?}");
}

/// `relay = "never"` and `relay-reservations` in the file take effect
/// (status says so), and `--relay` overrides the file's mode.
#[test]
fn a_config_file_sets_the_relay_mode_and_the_flag_overrides_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("keynode.toml");
    std::fs::write(&file, "relay = \"never\"\nrelay-reservations = 0\n").expect("config file");
    let file = file.to_str().expect("utf-8 path");
    let from_file = start_agent_with(
        None,
        &tmp.path().join("a"),
        "127.0.0.1:0",
        None,
        &["--config", file],
    );
    let status = json(&["agent", "status", "--data-dir", from_file.dir()]);
    assert_eq!(status["relay"]["serve"], "never", "{status}");
    assert_eq!(status["relay"]["relaying"], false, "{status}");
    let overridden = start_agent_with(
        None,
        &tmp.path().join("b"),
        "127.0.0.1:0",
        None,
        &["--config", file, "--relay", "always"],
    );
    let status = json(&["agent", "status", "--data-dir", overridden.dir()]);
    assert_eq!(status["relay"]["serve"], "always", "{status}");
    assert_eq!(status["relay"]["relaying"], true, "{status}");
    from_file.stop_with("TERM");
    overridden.stop_with("TERM");
}
