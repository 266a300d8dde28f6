//! The control socket against clients that misbehave (issue 15, defect 14):
//! clients that connect and never send must not lock the others out, a
//! client refused at the limit is told `busy` (not "broken pipe"), and the
//! data directory and lock file are the owner's only.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use keynode_tokio::AgentConfig;
use keynode_tokio::control::{
    Client, ClientError, ControlLimits, ControlSocket, ErrorKind, Reply, Request, Response,
};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// The permission bits of `path`, in octal.
fn mode(path: &std::path::Path) -> String {
    format!(
        "{:o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    )
}

/// At most this many tries of the real request; each refused one is
/// answered `busy`.
const MAX_TRIES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_time_out_and_a_real_request_gets_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("agent");
    let socket = ControlSocket::bind(&dir).unwrap();
    assert_eq!(mode(&dir), "700", "the data directory is the owner's only");
    let agent = keynode_tokio::start(AgentConfig::new(&dir, loopback()))
        .await
        .unwrap();
    assert_eq!(
        mode(&dir.join("agent.lock")),
        "600",
        "the lock file is the owner's only"
    );
    let limits = ControlLimits {
        max_clients: 64,
        request_timeout: Duration::from_millis(300),
    };
    let server = socket.serve_with(agent.clone(), limits).unwrap();

    // 64 clients connect and say nothing: every slot is taken.
    let mut silent = Vec::new();
    for _ in 0..limits.max_clients {
        silent.push(UnixStream::connect(server.path()).await.unwrap());
    }

    // A real client: refused with a clear `busy` while the slots are held,
    // served once the silent ones have timed out.
    let mut busy = 0;
    let mut served = false;
    for _ in 0..MAX_TRIES {
        let mut client = Client::connect(&dir).await.unwrap();
        match client.call(&Request::Status).await {
            Ok(Response::Ok(Reply::Status { .. })) => {
                served = true;
                break;
            }
            Ok(Response::Error(e)) if e.kind == ErrorKind::Busy => {
                assert!(e.message.contains("busy"), "unclear refusal: {}", e.message);
                busy += 1;
            }
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(ClientError::Closed(_)) => panic!("refused without a word"),
            Err(e) => panic!("the client failed instead of being told busy: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "never served in {MAX_TRIES} tries ({busy} busy)");

    // Each silent client was told why, then disconnected.
    for mut stream in silent {
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
            .await
            .expect("the silent client is disconnected")
            .unwrap();
        let answer: Response = serde_json::from_slice(&bytes).unwrap();
        match answer {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::Timeout),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    server.shutdown();
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_answers_garbage_is_a_typed_bad_answer_naming_the_agent() {
    use keynode_tokio::control::BadAnswer;
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // Not an agent: whatever connects gets a line that is not JSON.
    let listener =
        tokio::net::UnixListener::bind(keynode_tokio::control::socket_path(&dir)).unwrap();
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 64];
        let _ = stream.read(&mut request).await.unwrap();
        stream.write_all(b"this is not json\n").await.unwrap();
    });
    let mut client = Client::connect(&dir).await.unwrap();
    let error = client.call(&Request::Status).await.unwrap_err();
    match &error {
        ClientError::Protocol {
            dir: named,
            problem: BadAnswer::Json(_),
        } => assert_eq!(named, &dir),
        other => panic!("expected a JSON BadAnswer, got {other:?}"),
    }
    assert!(
        error.to_string().contains(&dir.display().to_string()),
        "{error}"
    );
    fake.await.unwrap();
}
