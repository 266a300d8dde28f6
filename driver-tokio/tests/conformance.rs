//! The conformance suite (issue 16) on tokio: every case of
//! `agent/tests/conformance` with agents on tokio runtimes; and the
//! streams through tokio's AsyncRead/AsyncWrite.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use keynode_agent::{Agent, AgentConfig, AgentError, ProtocolOptions};

#[path = "../../agent/tests/conformance/mod.rs"]
mod suite;

/// Each test on a runtime of its own, multi-threaded like a server's.
struct Tokio;

impl suite::Runtime for Tokio {
    fn start(config: AgentConfig) -> BoxFuture<'static, Result<Agent, AgentError>> {
        Box::pin(keynode_tokio::start(config))
    }

    fn sleep(d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f)
    }
}

suite::conformance_suite!(Tokio);

/// With the tokio driver the streams are tokio's AsyncRead/AsyncWrite: an
/// echo served with `tokio::io::copy` and used through tokio's extension
/// traits returns what was sent.
#[test]
fn streams_are_tokio_async_read_and_write() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    suite::run::<Tokio>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = suite::start::<Tokio>(dir.path(), "a", |_| {}).await;
        let b = suite::start::<Tokio>(dir.path(), "b", |_| {}).await;
        let echo_p = suite::protocol("suite/tokio-echo/1");
        let mut listener = b
            .accept(echo_p.clone(), ProtocolOptions::default())
            .expect("b listens");
        let server = tokio::spawn(async move {
            let mut incoming = listener.accept().await;
            let mut send = incoming.send.take().expect("a bidirectional stream");
            tokio::io::copy(&mut incoming.recv, &mut send)
                .await
                .expect("echoed");
            send.shutdown().await.expect("finished");
        });
        let conn = suite::connect(&a, &b).await;
        let sent = suite::payload(1, 200_000);
        let (mut send, mut recv) = conn.open_bi(&echo_p).await.expect("the stream opens");
        let write = async {
            // The trait's, not the stream's own `write_all`.
            AsyncWriteExt::write_all(&mut send, &sent)
                .await
                .expect("written");
            send.shutdown().await.expect("finished");
        };
        let mut echoed = Vec::new();
        let read = AsyncReadExt::read_to_end(&mut recv, &mut echoed);
        let ((), read) = tokio::join!(write, read);
        assert_eq!(read.expect("read"), sent.len());
        assert!(echoed == sent, "the echo is what was sent");
        server.await.expect("the server ends");
        drop((send, recv, conn));
        suite::stop_all(&[&a, &b]).await;
    });
}
