//! The `keynode` command.

mod metrics_http;
mod start_options;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keynode_core::nat::NatClass;
use keynode_core::net::RelayServe;
use keynode_core::{NodeAddress, NodeAddressScopes, NodeId, SeedNodes};
use keynode_tokio::control::{
    AddressInfo, ClaimBodyInfo, Client, ControlError, ControlLimits, RelayInfo, Reply, Request,
    Response,
};
use keynode_tokio::demo::{self, DemoOptions};
use keynode_tokio::{AgentConfig, SyncOptions};
use start_options::StartOptions;

#[derive(Parser)]
#[command(
    name = "keynode",
    version,
    about = "keynode: a Polykey-style node layer over QUIC"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Start a local network of agents that find, ping and claim each
    /// other, and send each other a payload on an application protocol.
    Demo {
        /// How many agents.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Lookups per agent.
        #[arg(long, default_value_t = 2)]
        finds: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Seed of the random pairs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// KiB each agent sends to another's echo and gets back (0: none).
        #[arg(long, default_value_t = 1024)]
        transfer_kib: usize,
        /// Turn mDNS on, on this port (group 224.0.0.250 on loopback):
        /// every agent announces itself and looks another up by mDNS.
        #[arg(long)]
        mdns_port: Option<u16>,
    },
    /// Run an agent, or ask a running one for its status.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// The node graph, connections and claims of a running agent.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// The key of a running agent.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Join stdin and stdout to a stream of another node, found by its
    /// NodeId (like netcat), through a running agent.
    ///
    /// One side runs `pipe listen`, the other `pipe connect <nodeid>`, on
    /// the same --protocol; what goes into one's stdin comes out of the
    /// other's stdout, both ways at once.
    Pipe {
        #[command(subcommand)]
        command: PipeCommand,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Start an agent and run until interrupted (SIGINT or SIGTERM). It
    /// prints "<nodeid> listening on <addr>" once started, and takes
    /// commands on control.sock in its data directory.
    Start {
        /// Where its key, database and control socket live.
        #[arg(long)]
        data_dir: PathBuf,
        /// A TOML file of these options: each flag below is a key of the
        /// same name (e.g. `map-size = 1073741824`, `mdns = true`); a flag
        /// given here overrides the file's key.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        options: Box<StartOptions>,
        /// The async runtime the agent (its loop and its control socket)
        /// runs on; the command itself waits for signals on tokio.
        #[arg(long, value_enum, default_value_t = RuntimeName::Tokio)]
        runtime: RuntimeName,
    },
    /// The NodeId and address of a running agent.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A running agent's metrics, in the Prometheus text exposition
    /// format (what `agent start --metrics-addr` serves over HTTP).
    Metrics {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The runtimes an agent runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeName {
    /// tokio (keynode-tokio), this command's own runtime.
    Tokio,
    /// smol's global executor (keynode-smol).
    Smol,
}

/// How a client command reaches its agent.
#[derive(Args)]
struct ClientArgs {
    /// The agent's data directory (where its control.sock is).
    #[arg(long)]
    data_dir: PathBuf,
    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Subcommand)]
enum NodesCommand {
    /// Add a node to the graph, evicting the oldest contact of a full
    /// bucket (setNode, forced).
    Add {
        #[command(flatten)]
        client: ClientArgs,
        /// The node.
        node_id: NodeId,
        /// Where it is: host:port.
        address: NodeAddress,
    },
    /// Find a node through the network (findNode).
    Find {
        #[command(flatten)]
        client: ClientArgs,
        /// The node.
        node_id: NodeId,
    },
    /// Ping a node (pingNode); fails if it does not answer.
    Ping {
        #[command(flatten)]
        client: ClientArgs,
        /// The node.
        node_id: NodeId,
    },
    /// Every contact of the node graph, by bucket.
    Getall {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The connections up.
    Connections {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Link this node and another into one gestalt (claimNode); the other
    /// must allow it (nodes allow-claim).
    Claim {
        #[command(flatten)]
        client: ClientArgs,
        /// The node to claim.
        node_id: NodeId,
    },
    /// Allow a node to claim this one.
    AllowClaim {
        #[command(flatten)]
        client: ClientArgs,
        /// The node.
        node_id: NodeId,
        /// Withdraw the permission instead.
        #[arg(long)]
        revoke: bool,
    },
    /// The sigchain of a node (requestChainData), or this node's own.
    Chain {
        #[command(flatten)]
        client: ClientArgs,
        /// The node; this node's own chain if absent.
        node_id: Option<NodeId>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key: the agent gets a new NodeId.
    Renew {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum PipeCommand {
    /// Serve the first stream of --protocol a peer opens to this agent:
    /// stdin to the peer, the peer's bytes to stdout.
    ///
    /// Only the first stream is served (later ones are refused), and the
    /// command exits when it ends: stdin at its end and the peer done
    /// sending. Once a peer may connect it prints "listening for
    /// <protocol> on <nodeid>" on stderr; stdout carries only the peer's
    /// bytes. Exits non-zero if the stream breaks (reset, connection lost).
    Listen {
        #[command(flatten)]
        pipe: PipeArgs,
    },
    /// Open a stream of --protocol to a node: stdin to it, its bytes to
    /// stdout.
    ///
    /// The node is found through the network (connecting directly, or by
    /// signalling and hole punching). The command exits when both
    /// directions end: stdin at its end and the node done sending. Exits
    /// non-zero if the node does not serve the protocol or the stream
    /// breaks (reset, connection lost).
    Connect {
        #[command(flatten)]
        pipe: PipeArgs,
        /// The node.
        node_id: NodeId,
        /// Seconds to wait for the stream to open (finding and connecting
        /// to the node); the transfer itself has no limit.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

/// Where a pipe goes.
#[derive(Args)]
struct PipeArgs {
    /// The agent's data directory (where its control.sock is).
    #[arg(long)]
    data_dir: PathBuf,
    /// The application protocol's name, e.g. myapp/pipe/1 (names starting
    /// with keynode/ are keynode's own).
    #[arg(long, value_parser = protocol_name)]
    protocol: String,
}

fn protocol_name(name: &str) -> Result<String, keynode_tokio::ProtocolError> {
    keynode_tokio::Protocol::new(name.as_bytes().to_vec()).map(|_| name.to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let pipe = matches!(cli.command, Top::Pipe { .. });
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    };
    if pipe {
        // tokio reads stdin on a blocking thread that cannot be cancelled:
        // after a pipe that ended before its input did, the runtime's
        // shutdown would wait for that read (from a terminal, until the
        // user presses enter). Everything is written and flushed by now.
        std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
    }
    code
}

type BoxError = Box<dyn std::error::Error>;

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    match cli.command {
        Top::Demo {
            nodes,
            finds,
            json,
            seed,
            transfer_kib,
            mdns_port,
        } => {
            let report = demo::run(DemoOptions {
                nodes,
                finds_per_node: finds,
                seed,
                transfer_bytes: transfer_kib.saturating_mul(1024),
                progress: !json,
                mdns_port,
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(if report.failures == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Top::Agent {
            command:
                AgentCommand::Start {
                    data_dir,
                    config,
                    options,
                    runtime,
                },
        } => {
            let options = match config {
                Some(path) => (*options).or(StartOptions::load(&path)?),
                None => *options,
            };
            let limits = ControlLimits {
                max_clients: options
                    .control_max_clients
                    .unwrap_or(keynode_tokio::control::MAX_CLIENTS)
                    .max(1),
                request_timeout: Duration::from_millis(
                    options.control_request_timeout_ms.unwrap_or(5000).max(1),
                ),
            };
            let seeds = options.seeds()?;
            let config = options.agent_config(data_dir)?;
            let metrics = options.metrics_addr;
            match runtime {
                RuntimeName::Tokio => {
                    start_agent::<keynode_tokio::Tokio>(config, seeds, limits, metrics).await
                }
                RuntimeName::Smol => {
                    start_agent::<keynode_smol::Smol>(config, seeds, limits, metrics).await
                }
            }
        }
        Top::Agent {
            command: AgentCommand::Status { client },
        } => {
            command(&client, Request::Status, |reply| match reply {
                Reply::Status {
                    node_id,
                    address,
                    data_dir,
                    joined,
                    contacts,
                    connections,
                    failed_sync_attempts,
                    last_sync_error,
                    sync_retry_in_ms,
                    observed_addresses,
                    nat_class,
                    relay,
                } => {
                    let mut text = format!(
                        "{node_id} listening on {address} (data in {})\n",
                        data_dir.display()
                    );
                    text += if *joined {
                        "joined the network"
                    } else {
                        "not joined the network"
                    };
                    text += &format!("\n{contacts} contacts, {connections} connections");
                    text += &observed_text(observed_addresses, *nat_class);
                    text += &relay_text(relay);
                    if let Some(error) = last_sync_error {
                        text += &format!(
                            "\nlast sync failed ({failed_sync_attempts} attempts): {error}"
                        );
                        text += &match sync_retry_in_ms {
                            Some(ms) => format!("\nnext attempt {ms} ms after the last"),
                            None => "\nno further attempt scheduled".to_owned(),
                        };
                    }
                    Ok(text)
                }
                _ => Err(unexpected(reply)),
            })
            .await
        }
        Top::Agent {
            command: AgentCommand::Metrics { client },
        } => {
            command(&client, Request::Metrics, |reply| match reply {
                // `command` ends the text with a newline of its own.
                Reply::Metrics { text } => Ok(text.trim_end().to_owned()),
                _ => Err(unexpected(reply)),
            })
            .await
        }
        Top::Nodes { command: nodes } => run_nodes(nodes).await,
        Top::Pipe { command: pipe } => run_pipe(pipe).await,
        Top::Keys {
            command: KeysCommand::Renew { client },
        } => {
            command(&client, Request::RenewKey, |reply| match reply {
                Reply::KeyRenewed {
                    old_node_id,
                    node_id,
                } => Ok(format!("new key: NodeId {node_id} (was {old_node_id})")),
                _ => Err(unexpected(reply)),
            })
            .await
        }
    }
}

async fn run_nodes(nodes: NodesCommand) -> Result<ExitCode, BoxError> {
    match nodes {
        NodesCommand::Add {
            client,
            node_id,
            address,
        } => {
            let text = format!("added {node_id} at {address}");
            let request = Request::SetNode {
                node_id,
                address,
                force: true,
                block: false,
            };
            command(&client, request, |reply| done(reply, text)).await
        }
        NodesCommand::Find { client, node_id } => {
            command(&client, Request::FindNode { node_id }, |reply| {
                found(reply, "found at", "could not be found")
            })
            .await
        }
        NodesCommand::Ping { client, node_id } => {
            command(&client, Request::PingNode { node_id }, |reply| {
                found(reply, "answered at", "did not answer")
            })
            .await
        }
        NodesCommand::Getall { client } => {
            command(&client, Request::GetAll, |reply| match reply {
                Reply::Contacts { buckets } => {
                    let mut out = String::new();
                    let mut count = 0;
                    for bucket in buckets {
                        for contact in &bucket.contacts {
                            count += 1;
                            for address in &contact.addresses {
                                out.push_str(&format!(
                                    "{:>3}  {}  {}\n",
                                    bucket.bucket,
                                    contact.node_id,
                                    describe(address)
                                ));
                            }
                        }
                    }
                    out.push_str(&plural(count, "contact"));
                    Ok(out)
                }
                _ => Err(unexpected(reply)),
            })
            .await
        }
        NodesCommand::Connections { client } => {
            command(&client, Request::Connections, |reply| match reply {
                Reply::Connections { connections } => {
                    let mut out = String::new();
                    for c in connections {
                        let mode = c.mode.map_or("-".to_owned(), |m| format!("{m:?}"));
                        out.push_str(&format!(
                            "{:>5}  {}  {}  {mode}\n",
                            c.id, c.node_id, c.remote
                        ));
                    }
                    out.push_str(&plural(connections.len(), "connection"));
                    Ok(out)
                }
                _ => Err(unexpected(reply)),
            })
            .await
        }
        NodesCommand::Claim { client, node_id } => {
            let text = format!("claimed {node_id}: both sigchains link the two nodes");
            command(&client, Request::ClaimNode { node_id }, |reply| {
                done(reply, text)
            })
            .await
        }
        NodesCommand::AllowClaim {
            client,
            node_id,
            revoke,
        } => {
            let text = if revoke {
                format!("{node_id} may no longer claim this node")
            } else {
                format!("{node_id} may now claim this node")
            };
            let request = Request::AllowClaims {
                node_id,
                allowed: !revoke,
            };
            command(&client, request, |reply| done(reply, text)).await
        }
        NodesCommand::Chain { client, node_id } => {
            command(&client, Request::Chain { node_id }, |reply| match reply {
                Reply::Chain { node_id, claims } => {
                    let mut out =
                        format!("sigchain of {node_id}: {}", plural(claims.len(), "claim"));
                    for claim in claims {
                        let what = match &claim.body {
                            ClaimBodyInfo::LinkNode { issuer, subject } => {
                                format!("link {issuer} -> {subject}")
                            }
                        };
                        out.push_str(&format!(
                            "\n{:>4}  {}  {what}  (issued {})",
                            claim.seq,
                            claim.id,
                            ago(claim.iat)
                        ));
                    }
                    Ok(out)
                }
                _ => Err(unexpected(reply)),
            })
            .await
        }
    }
}

/// `keynode pipe listen` and `keynode pipe connect`: the request, its
/// answers (diagnostics on stderr), then stdin and stdout through the pipe.
async fn run_pipe(pipe: PipeCommand) -> Result<ExitCode, BoxError> {
    let (args, request, timeout) = match pipe {
        PipeCommand::Listen { pipe } => {
            let request = Request::PipeListen {
                protocol: pipe.protocol.clone(),
            };
            (pipe, request, None)
        }
        PipeCommand::Connect {
            pipe,
            node_id,
            timeout,
        } => {
            let request = Request::PipeConnect {
                node_id,
                protocol: pipe.protocol.clone(),
            };
            (pipe, request, Some(Duration::from_secs(timeout)))
        }
    };
    let dir = &args.data_dir;
    let opening = async {
        let mut control = Client::connect(dir).await?;
        let mut response = control.call(&request).await?;
        if let Response::Ok(Reply::PipeListening { node_id, protocol }) = &response {
            eprintln!("listening for {protocol} on {node_id}");
            response = control.read_response().await?;
        }
        match response {
            Response::Ok(Reply::PipeOpen { peer }) => Ok((control, peer)),
            Response::Ok(reply) => Err(unexpected(&reply).into()),
            Response::Error(e) => Err(Box::new(RequestFailed(e)) as BoxError),
        }
    };
    let (control, peer) = match timeout {
        None => opening.await?,
        Some(wait) => tokio::time::timeout(wait, opening).await.map_err(|_| {
            format!(
                "no stream of {} to the node within {} s",
                args.protocol,
                wait.as_secs()
            )
        })??,
    };
    eprintln!("stream of {} open with {peer}", args.protocol);
    control
        .into_pipe()
        .run(Compat(tokio::io::stdin()), Compat(tokio::io::stdout()))
        .await
        .map_err(|e| format!("pipe with {peer}: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// Sends one request to the agent of `client.data_dir` and prints the
/// answer: `render`'s text, or the reply as JSON with `--json`. The exit
/// code is non-zero when the request fails, the agent cannot be reached, or
/// `render` says the answer is a failure (a node not found).
async fn command(
    client: &ClientArgs,
    request: Request,
    render: impl FnOnce(&Reply) -> Result<String, String>,
) -> Result<ExitCode, BoxError> {
    let wait = Duration::from_secs(client.timeout);
    let dir = client.data_dir.clone();
    let response = tokio::time::timeout(wait, async {
        let mut control = Client::connect(&dir).await?;
        control.call(&request).await
    })
    .await
    .map_err(|_| {
        format!(
            "no answer from the agent in {} within {} s",
            dir.display(),
            wait.as_secs()
        )
    })??;
    let reply = match response {
        Response::Ok(reply) => reply,
        Response::Error(error) => {
            if client.json {
                println!(
                    "{}",
                    serde_json::to_string(&Response::Error(error.clone()))?
                );
            }
            return Err(Box::new(RequestFailed(error)));
        }
    };
    let outcome = render(&reply);
    if client.json {
        println!("{}", serde_json::to_string(&reply)?);
    }
    match outcome {
        Ok(text) => {
            if !client.json {
                println!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// An error answer of the agent.
#[derive(Debug)]
struct RequestFailed(ControlError);

impl std::fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.message)
    }
}

impl std::error::Error for RequestFailed {}

fn done(reply: &Reply, text: String) -> Result<String, String> {
    match reply {
        Reply::Done => Ok(text),
        _ => Err(unexpected(reply)),
    }
}

fn found(reply: &Reply, yes: &str, no: &str) -> Result<String, String> {
    match reply {
        Reply::Found {
            node_id,
            address: Some(address),
        } => Ok(format!("{node_id} {yes} {}", describe(address))),
        Reply::Found {
            node_id,
            address: None,
        } => Err(format!("node {node_id} {no}")),
        _ => Err(unexpected(reply)),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn unexpected(reply: &Reply) -> String {
    format!("unexpected answer from the agent: {reply:?}")
}

fn describe(address: &AddressInfo) -> String {
    let scopes = match address.scopes {
        NodeAddressScopes {
            local: true,
            global: true,
        } => "local+global",
        NodeAddressScopes { local: true, .. } => "local",
        NodeAddressScopes { global: true, .. } => "global",
        NodeAddressScopes { .. } => "no scope",
    };
    let mode = format!("{:?}", address.mode).to_lowercase();
    format!(
        "{}  {mode}, {scopes}, connected {}",
        address.address,
        ago(address.connected_time)
    )
}

fn ago(unix_secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.checked_sub(unix_secs) {
        Some(secs) => format!("{secs} s ago"),
        None => format!("{} s from now", unix_secs - now),
    }
}

/// `keynode agent start`: the control socket is bound before the agent
/// starts (so a second agent on the same directory is refused before it
/// opens the store) and removed when the agent stops. The agent and the
/// socket's server run on `R`; the handle works from any runtime.
async fn start_agent<R: keynode_agent::Runtime>(
    config: AgentConfig,
    seeds: SeedNodes,
    limits: ControlLimits,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<ExitCode, BoxError> {
    // Registered before anything is printed, so that a signal sent as soon
    // as the start line is read stops the agent cleanly.
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let socket = keynode_agent::control::ControlSocket::<R>::bind(&config.data_dir)?;
    let agent = match keynode_agent::start::<R>(config).await {
        Ok(agent) => agent,
        Err(e) => {
            socket.remove();
            return Err(e.into());
        }
    };
    let outcome = async {
        let server = socket.serve_with(agent.clone(), limits)?;
        // Bound before the start line, so that a test (or a supervisor)
        // that has read it can scrape at once; a bad address stops here.
        let _metrics = match metrics_addr {
            Some(addr) => {
                let metrics = metrics_http::MetricsServer::bind(addr, agent.clone()).await?;
                tracing::info!("serving metrics on http://{}/metrics", metrics.local_addr());
                Some(metrics)
            }
            None => None,
        };
        {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{} listening on {}",
                agent.node_id(),
                agent.local_addr()
            )?;
            out.flush()?;
        }
        if !seeds.is_empty() {
            agent.sync_node_graph(seeds, SyncOptions::default()).await?;
        }
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        }
        server.shutdown();
        Ok::<_, BoxError>(())
    }
    .await;
    let stopped = agent.stop().await;
    outcome?;
    stopped?;
    Ok(ExitCode::SUCCESS)
}

fn signal(kind: tokio::signal::unix::SignalKind) -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
}

/// tokio's stdin and stdout as the `futures` I/O that a pipe's end takes.
struct Compat<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> futures::io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        std::pin::Pin::new(&mut self.0)
            .poll_read(cx, &mut buf)
            .map_ok(|()| buf.filled().len())
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> futures::io::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The status lines about observed addresses and the NAT class.
fn observed_text(observed: &[keynode_core::nat::ObservedAddress], class: NatClass) -> String {
    let mut text = if observed.is_empty() {
        "\nobserved at: no address yet".to_owned()
    } else {
        let list: Vec<String> = observed
            .iter()
            .map(|o| {
                let peers = if o.observers == 1 { "peer" } else { "peers" };
                format!("{} ({} {peers})", o.address, o.observers)
            })
            .collect();
        format!("\nobserved at: {}", list.join(", "))
    };
    text += &format!("\nNAT class: {class}");
    text
}

/// The status lines about the relay: whether this agent relays (and its
/// `--relay` setting), the relays it holds reservations with, and what
/// its relay counted.
fn relay_text(relay: &RelayInfo) -> String {
    let serve = match relay.serve {
        RelayServe::WhenPublic => "when-public",
        RelayServe::Always => "always",
        RelayServe::Never => "never",
        _ => "unknown",
    };
    let mut text = if relay.relaying {
        format!("\nrelay: relaying for others (--relay {serve})")
    } else {
        format!("\nrelay: not relaying (--relay {serve})")
    };
    text += &if relay.reservations.is_empty() {
        "\nrelay reservations: none".to_owned()
    } else {
        let ids: Vec<String> = relay.reservations.iter().map(|r| r.to_string()).collect();
        format!("\nrelay reservations: {}", ids.join(", "))
    };
    text += &format!(
        "\nrelayed: {} pairs open, {} reservations held for others, {} frames ({} bytes) forwarded",
        relay.pairs, relay.reservations_served, relay.frames_forwarded, relay.bytes_forwarded
    );
    let d = &relay.dropped;
    let r = &relay.refused;
    text += &format!(
        "\nrelay drops: {} no pair, {} over rate, {} too large, {} unexpected; \
         refusals: {} not relaying, {} full, {} per peer",
        d.no_pair, d.over_rate, d.too_large, d.unexpected, r.not_relaying, r.full, r.per_peer
    );
    text
}
