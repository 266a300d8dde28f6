//! The options of `keynode agent start`: each is a flag and a key of the
//! same name in an optional TOML file (`--config FILE`); a flag given on
//! the command line overrides the file's key. Unknown keys and bad values
//! are errors that name the key.
//!
//! ```toml
//! bind = "0.0.0.0:1314"
//! seed-nodes = "v0123...@seed.example:1314"
//! map-size = 1073741824
//! max-connections = 512
//! sync-retry-max-delay-ms = 30000
//! mdns = true
//! mdns-groups = ["224.0.0.250"]
//! mdns-port = 64023
//! mdns-interface = "192.168.1.10"
//! metrics-addr = "127.0.0.1:9464"
//! relay = "when-public"
//! relay-reservations = 2
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use keynode_core::net::RelayServe;
use keynode_core::{MdnsConfig, SeedNodes, SeedNodesParseError};
use serde::Deserialize;

use keynode_tokio::AgentConfig;

/// The mDNS group used when mDNS is on and no groups are given (the
/// original's IPv4 group; the agent's mDNS socket is IPv4).
pub const DEFAULT_MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 250);

/// The options of `keynode agent start`, from flags or from a file: every
/// field is optional, so that [`StartOptions::or`] can tell a flag given
/// from one left out.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StartOptions {
    /// The UDP address to listen on [default: 127.0.0.1:0].
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Seed nodes: nodeid@host:port;...
    #[arg(long)]
    pub seed_nodes: Option<String>,
    /// The LMDB map size in bytes: the most the database can hold.
    #[arg(long)]
    pub map_size: Option<usize>,
    /// Connections at once, in and out (Config::max_connections).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Inbound handshakes in progress at once.
    #[arg(long)]
    pub max_handshakes: Option<usize>,
    /// Inbound connections from one IP.
    #[arg(long)]
    pub max_inbound_per_ip: Option<usize>,
    /// Inbound connections from one /24 (IPv4) or /48 (IPv6).
    #[arg(long)]
    pub max_inbound_per_prefix: Option<usize>,
    /// Milliseconds after a failed background sync (no seed answered)
    /// before it runs again; doubling after each failure [default: 1000].
    #[arg(long)]
    pub sync_retry_initial_delay_ms: Option<u64>,
    /// The longest delay between two attempts of a background sync, in
    /// milliseconds [default: 60000].
    #[arg(long)]
    pub sync_retry_max_delay_ms: Option<u64>,
    /// Retries of a failed background sync before the agent gives up; 0
    /// never retries [default: 100].
    #[arg(long)]
    pub sync_retry_attempts: Option<u32>,
    /// Milliseconds a control client has to send each request line before
    /// it is answered `timeout` and disconnected [default: 5000].
    #[arg(long)]
    pub control_request_timeout_ms: Option<u64>,
    /// Control connections served at once; more are answered `busy`.
    #[arg(long)]
    pub control_max_clients: Option<usize>,
    /// Announce this node and find others on the local network by mDNS
    /// (`--mdns` or `--mdns true`; off by default).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub mdns: Option<bool>,
    /// mDNS multicast groups, comma-separated [default: 224.0.0.250].
    /// IPv6 groups are refused: the mDNS socket is IPv4.
    #[arg(long, value_delimiter = ',')]
    pub mdns_groups: Option<Vec<IpAddr>>,
    /// The mDNS port [default: 64023].
    #[arg(long)]
    pub mdns_port: Option<u16>,
    /// The IPv4 interface address mDNS joins its groups on and announces
    /// when bound to 0.0.0.0 [default: 127.0.0.1].
    #[arg(long)]
    pub mdns_interface: Option<Ipv4Addr>,
    /// Serve the agent's metrics over HTTP at `http://ADDR/metrics`, in
    /// the Prometheus text format (off by default; anyone who can reach
    /// ADDR can read them, so keep it on loopback or a private network).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Milliseconds one connection attempt (a dial, a punch) may take
    /// (Config::connection_connect_timeout) [default: 15000].
    #[arg(long)]
    pub connect_timeout_ms: Option<u64>,
    /// Milliseconds between the tries of a relayed connection to become
    /// direct (Config::relay_upgrade_interval); 0 never [default: 60000].
    #[arg(long)]
    pub relay_upgrade_interval_ms: Option<u64>,
    /// When this agent relays datagrams for peers that cannot reach each
    /// other (behind NATs) [default: when-public].
    #[arg(long, value_enum)]
    pub relay: Option<RelayMode>,
    /// Relay reservations the agent keeps when it is behind a NAT, so
    /// that peers reach it through those relays; 0: none [default: 2].
    #[arg(long)]
    pub relay_reservations: Option<usize>,
    /// Bytes per second one relayed pair may use through this agent, both
    /// ways together (RelayConfig::pair_bytes_per_second); its burst is a
    /// quarter of a second's worth, at least 64 KiB [default: 4194304].
    #[arg(long)]
    pub relay_pair_bytes_per_second: Option<u64>,
}

/// When the agent relays for others (`--relay`, `relay = "..."`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayMode {
    /// While peers see it at a public address (its NAT class is public).
    WhenPublic,
    /// Always, e.g. on a host known to be reachable, before any peer has
    /// seen it.
    Always,
    /// Never.
    Never,
}

impl From<RelayMode> for RelayServe {
    fn from(mode: RelayMode) -> Self {
        match mode {
            RelayMode::WhenPublic => RelayServe::WhenPublic,
            RelayMode::Always => RelayServe::Always,
            RelayMode::Never => RelayServe::Never,
        }
    }
}

/// Why the options do not make an agent's configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartOptionsError {
    /// The config file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a bad value.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where (the key, line and column).
        source: Box<toml::de::Error>,
    },
    /// The seed-node list does not parse.
    #[error("seed-nodes: {0}")]
    SeedNodes(#[from] SeedNodesParseError),
    /// An IPv6 mDNS group: the agent's mDNS socket is IPv4, and a group it
    /// cannot join would be silently ignored.
    #[error(
        "mdns-groups: {0} is an IPv6 group, and this agent's mDNS socket is IPv4 only; give IPv4 groups (e.g. 224.0.0.250)"
    )]
    Ipv6MdnsGroup(IpAddr),
    /// mDNS settings without `mdns = true`.
    #[error("mdns-groups, mdns-port and mdns-interface need mDNS on (mdns = true, or --mdns)")]
    MdnsOff,
}

impl StartOptions {
    /// The options of a TOML text (`path` names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, StartOptionsError> {
        toml::from_str(text).map_err(|source| StartOptionsError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The options of the TOML file at `path`.
    pub fn load(path: &Path) -> Result<Self, StartOptionsError> {
        let text = std::fs::read_to_string(path).map_err(|source| StartOptionsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// These options, each left out taken from `file`: flags over a file.
    pub fn or(self, file: StartOptions) -> StartOptions {
        StartOptions {
            bind: self.bind.or(file.bind),
            seed_nodes: self.seed_nodes.or(file.seed_nodes),
            map_size: self.map_size.or(file.map_size),
            max_connections: self.max_connections.or(file.max_connections),
            max_handshakes: self.max_handshakes.or(file.max_handshakes),
            max_inbound_per_ip: self.max_inbound_per_ip.or(file.max_inbound_per_ip),
            max_inbound_per_prefix: self.max_inbound_per_prefix.or(file.max_inbound_per_prefix),
            sync_retry_initial_delay_ms: self
                .sync_retry_initial_delay_ms
                .or(file.sync_retry_initial_delay_ms),
            sync_retry_max_delay_ms: self
                .sync_retry_max_delay_ms
                .or(file.sync_retry_max_delay_ms),
            sync_retry_attempts: self.sync_retry_attempts.or(file.sync_retry_attempts),
            control_request_timeout_ms: self
                .control_request_timeout_ms
                .or(file.control_request_timeout_ms),
            control_max_clients: self.control_max_clients.or(file.control_max_clients),
            mdns: self.mdns.or(file.mdns),
            mdns_groups: self.mdns_groups.or(file.mdns_groups),
            mdns_port: self.mdns_port.or(file.mdns_port),
            mdns_interface: self.mdns_interface.or(file.mdns_interface),
            metrics_addr: self.metrics_addr.or(file.metrics_addr),
            connect_timeout_ms: self.connect_timeout_ms.or(file.connect_timeout_ms),
            relay_upgrade_interval_ms: self
                .relay_upgrade_interval_ms
                .or(file.relay_upgrade_interval_ms),
            relay: self.relay.or(file.relay),
            relay_reservations: self.relay_reservations.or(file.relay_reservations),
            relay_pair_bytes_per_second: self
                .relay_pair_bytes_per_second
                .or(file.relay_pair_bytes_per_second),
        }
    }

    /// The seed nodes (none when left out).
    pub fn seeds(&self) -> Result<SeedNodes, StartOptionsError> {
        Ok(self.seed_nodes.as_deref().unwrap_or("").parse()?)
    }

    /// The agent's configuration in `data_dir`: the defaults of
    /// [`AgentConfig::new`], with every option given.
    pub fn agent_config(&self, data_dir: PathBuf) -> Result<AgentConfig, StartOptionsError> {
        let bind = self
            .bind
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let mut config = AgentConfig::new(data_dir, bind);
        if let Some(map_size) = self.map_size {
            config.map_size = map_size;
        }
        if let Some(max) = self.max_connections {
            config.config.max_connections = max;
        }
        if let Some(max) = self.max_handshakes {
            config.net.max_handshakes = max;
        }
        if let Some(max) = self.max_inbound_per_ip {
            config.net.max_inbound_per_ip = max;
        }
        if let Some(max) = self.max_inbound_per_prefix {
            config.net.max_inbound_per_prefix = max;
        }
        if let Some(ms) = self.sync_retry_initial_delay_ms {
            config.config.sync_retry_initial_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = self.sync_retry_max_delay_ms {
            config.config.sync_retry_max_delay = Duration::from_millis(ms);
        }
        if let Some(attempts) = self.sync_retry_attempts {
            config.config.sync_retry_attempts = attempts;
        }
        if let Some(ms) = self.connect_timeout_ms {
            config.config.connection_connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.relay_upgrade_interval_ms {
            config.config.relay_upgrade_interval = Duration::from_millis(ms);
        }
        if let Some(mode) = self.relay {
            config.net.relay.serve = mode.into();
        }
        if let Some(n) = self.relay_reservations {
            config.config.relay_reservations = n;
        }
        if let Some(rate) = self.relay_pair_bytes_per_second {
            config.net.relay.pair_bytes_per_second = rate;
            config.net.relay.pair_burst = (rate / 4).max(64 << 10);
            // A reservation carries its pairs: never below one of them.
            config.net.relay.reservation_bytes_per_second =
                config.net.relay.reservation_bytes_per_second.max(rate);
            config.net.relay.reservation_burst = config
                .net
                .relay
                .reservation_burst
                .max(config.net.relay.pair_burst);
        }
        let mdns_settings =
            self.mdns_groups.is_some() || self.mdns_port.is_some() || self.mdns_interface.is_some();
        match self.mdns {
            Some(true) => {
                let groups = self
                    .mdns_groups
                    .clone()
                    .unwrap_or_else(|| vec![IpAddr::V4(DEFAULT_MDNS_GROUP)]);
                if let Some(v6) = groups.iter().find(|group| group.is_ipv6()) {
                    return Err(StartOptionsError::Ipv6MdnsGroup(*v6));
                }
                config.config.mdns = Some(MdnsConfig {
                    groups,
                    port: self.mdns_port.unwrap_or(MdnsConfig::default().port),
                });
                if let Some(interface) = self.mdns_interface {
                    config.mdns_interface = interface;
                }
            }
            _ if mdns_settings => return Err(StartOptionsError::MdnsOff),
            _ => {}
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StartOptions, StartOptionsError> {
        StartOptions::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn every_key_takes_effect() {
        let file = parse(
            r#"
            bind = "127.0.0.1:4000"
            map-size = 33554432
            max-connections = 77
            max-handshakes = 9
            max-inbound-per-ip = 3
            max-inbound-per-prefix = 5
            sync-retry-initial-delay-ms = 250
            sync-retry-max-delay-ms = 4000
            sync-retry-attempts = 7
            mdns = true
            mdns-groups = ["224.0.0.251"]
            mdns-port = 5353
            mdns-interface = "127.0.0.1"
            metrics-addr = "127.0.0.1:9464"
            connect-timeout-ms = 3000
            relay-upgrade-interval-ms = 2000
            relay = "never"
            relay-reservations = 5
            relay-pair-bytes-per-second = 1000000
            "#,
        )
        .unwrap();
        assert_eq!(file.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let config = file.agent_config(PathBuf::from("d")).unwrap();
        assert_eq!(
            config.config.connection_connect_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(config.config.relay_upgrade_interval, Duration::from_secs(2));
        assert_eq!(config.net.relay.pair_bytes_per_second, 1_000_000);
        assert_eq!(config.net.relay.pair_burst, 250_000);
        assert_eq!(config.bind, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(config.map_size, 33554432);
        assert_eq!(config.config.max_connections, 77);
        assert_eq!(config.net.max_handshakes, 9);
        assert_eq!(config.net.max_inbound_per_ip, 3);
        assert_eq!(config.net.max_inbound_per_prefix, 5);
        assert_eq!(
            config.config.sync_retry_initial_delay,
            Duration::from_millis(250)
        );
        assert_eq!(config.config.sync_retry_max_delay, Duration::from_secs(4));
        assert_eq!(config.config.sync_retry_attempts, 7);
        assert_eq!(config.net.relay.serve, RelayServe::Never);
        assert_eq!(config.config.relay_reservations, 5);
        assert_eq!(
            config.config.mdns,
            Some(MdnsConfig {
                groups: vec!["224.0.0.251".parse().unwrap()],
                port: 5353
            })
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse("map-size = 1000\nmax-connections = 5\n").unwrap();
        let flags = StartOptions {
            map_size: Some(2000),
            ..StartOptions::default()
        };
        let both = flags.or(file);
        assert_eq!(both.map_size, Some(2000), "the flag wins");
        assert_eq!(both.max_connections, Some(5), "the file fills the rest");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let unknown = parse("map_size = 1000\n").unwrap_err().to_string();
        assert!(
            unknown.contains("test.toml") && unknown.contains("map_size"),
            "{unknown}"
        );
        let bad = parse("mdns-port = \"high\"\n").unwrap_err().to_string();
        assert!(bad.contains("mdns-port"), "{bad}");
        let bad = parse("bind = \"nowhere\"\n").unwrap_err().to_string();
        assert!(bad.contains("bind"), "{bad}");
        let bad = parse("relay = \"sometimes\"\n").unwrap_err().to_string();
        assert!(
            bad.contains("relay") && bad.contains("when-public"),
            "{bad}"
        );
    }

    #[test]
    fn the_relay_mode_is_when_public_unless_given() {
        let default = StartOptions::default()
            .agent_config(PathBuf::from("d"))
            .unwrap();
        assert_eq!(default.net.relay.serve, RelayServe::WhenPublic);
        let always = parse("relay = \"always\"\n").unwrap();
        let config = always.agent_config(PathBuf::from("d")).unwrap();
        assert_eq!(config.net.relay.serve, RelayServe::Always);
    }

    #[test]
    fn mdns_is_off_unless_asked_and_ipv6_groups_are_refused() {
        let off = StartOptions::default()
            .agent_config(PathBuf::from("d"))
            .unwrap();
        assert_eq!(off.config.mdns, None);
        let on = parse("mdns = true\n").unwrap();
        let on = on.agent_config(PathBuf::from("d")).unwrap();
        assert_eq!(
            on.config.mdns.map(|m| m.groups),
            Some(vec![IpAddr::V4(DEFAULT_MDNS_GROUP)])
        );
        let v6 = parse("mdns = true\nmdns-groups = [\"224.0.0.250\", \"ff02::fa17\"]\n").unwrap();
        let error = v6.agent_config(PathBuf::from("d")).unwrap_err();
        assert!(
            error.to_string().contains("ff02::fa17") && error.to_string().contains("IPv4 only"),
            "{error}"
        );
        let without = parse("mdns-port = 5353\n").unwrap();
        assert!(matches!(
            without.agent_config(PathBuf::from("d")),
            Err(StartOptionsError::MdnsOff)
        ));
    }
}
