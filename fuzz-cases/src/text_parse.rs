//! The text forms users and config files give: NodeId, NodeAddress,
//! Hostname, SeedNodes (and a NodeId from raw bytes). Nothing may panic,
//! and whatever parses must print to a text that parses to the same value
//! (what the CLI shows is what it would take back).

use std::fmt::{Debug, Display};
use std::str::FromStr;

use keynode_core::{Hostname, NodeAddress, NodeId, SeedNodes};

fn round_trip<T>(what: &str, text: &str)
where
    T: FromStr + Display + PartialEq + Debug,
{
    if let Ok(value) = text.parse::<T>() {
        let printed = value.to_string();
        match printed.parse::<T>() {
            Ok(again) => assert!(
                again == value,
                "{what} {text:?} prints as {printed:?}, which parses to {again:?}, not {value:?}"
            ),
            Err(_) => panic!("{what} {text:?} prints as {printed:?}, which does not parse"),
        }
    }
}

/// The target: the input as text (lossily, if it is not UTF-8) into every
/// parser.
pub fn run(input: &[u8]) {
    let _ = NodeId::try_from_slice(input);
    let text = String::from_utf8_lossy(input);
    round_trip::<NodeId>("NodeId", &text);
    round_trip::<NodeAddress>("NodeAddress", &text);
    round_trip::<Hostname>("Hostname", &text);
    round_trip::<SeedNodes>("SeedNodes", &text);
}
