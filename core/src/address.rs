//! Where a node can be reached: [`NodeAddress`] = [`Host`] (IP address or hostname) and port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest hostname DNS allows, in bytes.
pub const MAX_HOSTNAME_LEN: usize = 253;

/// A DNS hostname: ASCII letters, digits and hyphens in dot-separated labels of
/// 1 to 63 characters, at most 253 characters, stored lowercase.
///
/// Spec: `Hostname`. The core never resolves it: a driver does, on the core's request.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub struct Hostname(Box<str>);

/// Why a text is not a [`Hostname`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostnameError {
    /// Empty text.
    #[error("hostname is empty")]
    Empty,
    /// Longer than [`MAX_HOSTNAME_LEN`].
    #[error("hostname is {len} bytes long, the limit is {MAX_HOSTNAME_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A label is empty or longer than 63 characters.
    #[error("hostname label {label:?} must be 1 to 63 characters long")]
    BadLabelLength {
        /// The label.
        label: String,
    },
    /// A character other than a letter, a digit, `-` or `.`.
    #[error("hostname has an invalid character {character:?}")]
    BadCharacter {
        /// The character.
        character: char,
    },
    /// A label starts or ends with `-`.
    #[error("hostname label {label:?} starts or ends with '-'")]
    BadHyphen {
        /// The label.
        label: String,
    },
}

impl Hostname {
    /// The hostname as text (lowercase).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = HostnameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(HostnameError::Empty);
        }
        if text.len() > MAX_HOSTNAME_LEN {
            return Err(HostnameError::TooLong { len: text.len() });
        }
        if let Some(character) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(HostnameError::BadCharacter { character });
        }
        for label in text.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(HostnameError::BadLabelLength {
                    label: label.to_owned(),
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(HostnameError::BadHyphen {
                    label: label.to_owned(),
                });
            }
        }
        Ok(Hostname(text.to_ascii_lowercase().into_boxed_str()))
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host part of a [`NodeAddress`]: an IP address or a hostname.
///
/// Spec: `Host | Hostname`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name, to be resolved by the driver.
    Name(Hostname),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(name) => name.fmt(f),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        Host::Ip(ip)
    }
}

/// A network address of a node: host and UDP port.
///
/// Spec: `NodeAddress = [Host | Hostname, Port]`. Text form `1.2.3.4:5`,
/// `[::1]:5` or `name.example:5`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct NodeAddress {
    /// The IP address or hostname.
    pub host: Host,
    /// The UDP port.
    pub port: u16,
}

impl NodeAddress {
    /// An address from its parts.
    pub fn new(host: impl Into<Host>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Whether the address is on this host (a loopback IP): nothing, no
    /// NAT, stands between this node and a node there.
    pub fn is_loopback(&self) -> bool {
        matches!(self.host, Host::Ip(ip) if ip.to_canonical().is_loopback())
    }

    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl From<SocketAddr> for NodeAddress {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr.ip(), addr.port())
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

/// Why a text is not a [`NodeAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeAddressParseError {
    /// No `:port` at the end.
    #[error("address {text:?} has no port (expected host:port)")]
    MissingPort {
        /// The text.
        text: String,
    },
    /// The port is not a number in 0..=65535.
    #[error("address {text:?} has an invalid port")]
    BadPort {
        /// The text.
        text: String,
    },
    /// The host is neither an IP address nor a valid hostname.
    #[error("address {text:?} has an invalid host: {source}")]
    BadHost {
        /// The text.
        text: String,
        /// What is wrong with the hostname.
        source: HostnameError,
    },
}

impl FromStr for NodeAddress {
    type Err = NodeAddressParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let (host, port) =
            text.rsplit_once(':')
                .ok_or_else(|| NodeAddressParseError::MissingPort {
                    text: text.to_owned(),
                })?;
        let port = port.parse().map_err(|_| NodeAddressParseError::BadPort {
            text: text.to_owned(),
        })?;
        // `[v6]` without a valid socket form, or a bare v6 address with a port
        // glued on, falls through to here and fails as a hostname.
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => {
                Host::Name(
                    host.parse()
                        .map_err(|source| NodeAddressParseError::BadHost {
                            text: text.to_owned(),
                            source,
                        })?,
                )
            }
        };
        Ok(NodeAddress { host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for text in [
            "127.0.0.1:1314",
            "[::1]:80",
            "node.example.com:1",
            "localhost:65535",
        ] {
            let addr: NodeAddress = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        let named: NodeAddress = "Node.Example:5".parse().unwrap();
        assert_eq!(named.to_string(), "node.example:5");
        assert!(named.socket_addr().is_none());
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            "localhost".parse::<NodeAddress>(),
            Err(NodeAddressParseError::MissingPort { .. })
        ));
        assert!(matches!(
            "localhost:70000".parse::<NodeAddress>(),
            Err(NodeAddressParseError::BadPort { .. })
        ));
        assert!(matches!(
            "bad_host:1".parse::<NodeAddress>(),
            Err(NodeAddressParseError::BadHost {
                source: HostnameError::BadCharacter { character: '_' },
                ..
            })
        ));
        assert!(matches!(
            "a..b:1".parse::<NodeAddress>(),
            Err(NodeAddressParseError::BadHost {
                source: HostnameError::BadLabelLength { .. },
                ..
            })
        ));
        let long = format!("{}:1", "a".repeat(300));
        assert!(matches!(
            long.parse::<NodeAddress>(),
            Err(NodeAddressParseError::BadHost {
                source: HostnameError::TooLong { len: 300 },
                ..
            })
        ));
    }

    #[test]
    fn hostname_deserialization_validates() {
        let bytes = postcard::to_allocvec("not a host!").unwrap();
        assert!(postcard::from_bytes::<Hostname>(&bytes).is_err());
    }
}
