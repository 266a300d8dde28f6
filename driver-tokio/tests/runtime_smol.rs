//! `keynode agent start --runtime smol`: the same agent on smol's
//! executor (its loop, receiving task and control socket server), driven
//! by the same client commands as one on tokio, next to one on tokio.

use keynode_core::NodeId;

mod common;

use common::{json, keynode, ok, start_agent, start_agent_with};

#[test]
fn an_agent_on_smol_answers_every_client_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("smol");
    let on_smol = start_agent_with(None, &dir, "127.0.0.1:0", None, &["--runtime", "smol"]);
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
