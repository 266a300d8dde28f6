//! The `keynode` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keynode_core::SeedNodes;
use keynode_tokio::demo::{self, DemoOptions};
use keynode_tokio::{Agent, AgentConfig};

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
    /// Start a local network of agents that find, ping and claim each other.
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
    },
    /// Run an agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Start an agent and run until interrupted.
    Start {
        /// Where its key and database live.
        #[arg(long)]
        data_dir: PathBuf,
        /// The UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        /// Seed nodes: nodeid@host:port;...
        #[arg(long, default_value = "")]
        seed_nodes: String,
    },
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
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Top::Demo {
            nodes,
            finds,
            json,
            seed,
        } => {
            let report = demo::run(DemoOptions {
                nodes,
                finds_per_node: finds,
                seed,
                progress: !json,
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
                    bind,
                    seed_nodes,
                },
        } => {
            let seeds: SeedNodes = seed_nodes.parse()?;
            let agent = Agent::start(AgentConfig::new(data_dir, bind)).await?;
            println!("{} listening on {}", agent.node_id(), agent.local_addr());
            if !seeds.is_empty() {
                agent.sync_node_graph(seeds, false).await?;
            }
            tokio::signal::ctrl_c().await?;
            agent.stop().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
