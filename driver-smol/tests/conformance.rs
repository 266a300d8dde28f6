//! The conformance suite (issue 16) on smol: every case of
//! `agent/tests/conformance` with agents on smol's executor; and a smol
//! agent and a tokio agent exchanging streams.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use keynode_agent::{Agent, AgentConfig, AgentError, ProtocolOptions};

#[path = "../../agent/tests/conformance/mod.rs"]
mod suite;

/// The agents' loops on smol's global executor, the test on its own thread.
struct Smol;

impl suite::Runtime for Smol {
    fn start(config: AgentConfig) -> BoxFuture<'static, Result<Agent, AgentError>> {
        Box::pin(keynode_smol::start(config))
    }

    fn sleep(d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::after(d).await;
        })
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        smol::block_on(f)
    }
}

suite::conformance_suite!(Smol);

/// A tokio agent and a smol agent, each serving an echo, each send the
/// other a stream's worth and get it back.
#[test]
fn a_tokio_agent_and_a_smol_agent_exchange_streams() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The tokio agent's loop runs on the tokio runtime; its handles, like
    // the smol agent's, work from any executor: here, smol's.
    let on_tokio = runtime
        .block_on(keynode_tokio::start(AgentConfig::new(
            dir.path().join("tokio"),
            ([127, 0, 0, 1], 0).into(),
        )))
        .expect("the tokio agent starts");
    suite::run::<Smol>(Duration::from_secs(120), async {
        let on_smol = suite::start::<Smol>(dir.path(), "smol", |_| {}).await;
        let echo_p = suite::protocol("suite/echo/1");
        let listen = |agent: &Agent| {
            agent
                .accept(echo_p.clone(), ProtocolOptions::default())
                .expect("listens")
        };
        let servers = futures::future::join(
            suite::serve(listen(&on_tokio), suite::echo),
            suite::serve(listen(&on_smol), suite::echo),
        );
        let to_smol = suite::connect(&on_tokio, &on_smol).await;
        let to_tokio = suite::connect(&on_smol, &on_tokio).await;
        assert_eq!(
            (to_smol.peer(), to_tokio.peer()),
            (on_smol.node_id(), on_tokio.node_id())
        );
        let from_tokio = suite::payload(1, 4 << 20);
        let from_smol = suite::payload(2, 4 << 20);
        let (back_to_tokio, back_to_smol) = suite::while_serving(
            async {
                servers.await;
            },
            futures::future::join(
                suite::echo_of(&to_smol, &echo_p, &from_tokio),
                suite::echo_of(&to_tokio, &echo_p, &from_smol),
            ),
        )
        .await;
        assert!(back_to_tokio == from_tokio, "tokio -> smol -> tokio");
        assert!(back_to_smol == from_smol, "smol -> tokio -> smol");
        drop((to_smol, to_tokio));
        suite::stop_all(&[&on_smol, &on_tokio]).await;
    });
}
