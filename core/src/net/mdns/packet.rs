//! Reading and naming: the records of one response datagram that answers
//! are made of, the TXT `nodeid=` entry, DNS names as keynode builds and
//! compares them, and which addresses a peer could connect to.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use mdns_proto::Name;
use mdns_proto::wire::{MessageReader, NameRef, Rdata};

use super::{MAX_RECORDS_PER_PACKET, MdnsError, SERVICE_TYPE, TXT_NODE_ID_KEY};
use crate::NodeId;

/// The records of one datagram that answers are made of, owner names
/// lowercased without the trailing dot.
#[derive(Default)]
pub(super) struct PacketRecords {
    /// (owner, port, target host)
    pub(super) srv: Vec<(String, u16, String)>,
    /// (owner, the NodeId of its `nodeid=` entry if it has a valid one)
    pub(super) txt: Vec<(String, Option<NodeId>)>,
    /// (owner, address)
    pub(super) addresses: Vec<(String, IpAddr)>,
}

impl PacketRecords {
    pub(super) fn read(reader: &MessageReader<'_>) -> Self {
        let mut records = Self::default();
        // Answers and additionals both: DNS-SD responders put the SRV, TXT
        // and addresses in either. A malformed record ends its section.
        let all = reader
            .answers()
            .map_while(Result::ok)
            .chain(reader.additional().map_while(Result::ok))
            .take(MAX_RECORDS_PER_PACKET);
        for record in all {
            // TTL 0 is a goodbye: the record is being withdrawn.
            if record.ttl() == 0 {
                continue;
            }
            let Some(owner) = lowercase_name(record.name()) else {
                continue;
            };
            match record.rdata_view() {
                Ok(Rdata::Srv(srv)) => {
                    if let Some(target) = lowercase_name(srv.target()) {
                        records.srv.push((owner, srv.port(), target));
                    }
                }
                Ok(Rdata::Txt(txt)) => {
                    let node_id = txt.segments().map_while(Result::ok).find_map(txt_node_id);
                    records.txt.push((owner, node_id));
                }
                Ok(Rdata::A(a)) => {
                    let ip = IpAddr::V4(a.addr());
                    if connectable(ip) {
                        records.addresses.push((owner, ip));
                    }
                }
                Ok(Rdata::AAAA(aaaa)) => {
                    let ip = IpAddr::V6(aaaa.addr());
                    if connectable(ip) {
                        records.addresses.push((owner, ip));
                    }
                }
                _ => {}
            }
        }
        records
    }
}

/// The NodeId of a TXT entry `nodeid=<NodeId>` (the key is
/// case-insensitive, RFC 6763 §6.4; the value is the case-sensitive NodeId
/// text).
fn txt_node_id(segment: &[u8]) -> Option<NodeId> {
    let text = std::str::from_utf8(segment).ok()?;
    let (key, value) = text.split_once('=')?;
    if !key.eq_ignore_ascii_case(TXT_NODE_ID_KEY) {
        return None;
    }
    value.parse().ok()
}

/// A DNS name as lowercase dotted text, or `None` if it is malformed or not
/// ASCII (ours are ASCII, so such a name never matches anyway).
fn lowercase_name(name: &NameRef<'_>) -> Option<String> {
    let mut text = String::new();
    for label in name.labels() {
        let label = label.ok()?;
        if !label.is_ascii() {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.extend(
            label
                .iter()
                .map(|byte| char::from(byte.to_ascii_lowercase())),
        );
    }
    Some(text)
}

/// The instance name of a node, lowercase, without the trailing dot.
pub(super) fn instance_name(node_id: &NodeId) -> String {
    // NodeId text is lowercase already; lowercasing again keeps the
    // comparison right should that ever change.
    format!("{node_id}.{SERVICE_TYPE}").to_ascii_lowercase()
}

pub(super) fn dns_name(text: &str) -> Result<Name, MdnsError> {
    Name::try_from_str(text).map_err(|_| MdnsError::InvalidName {
        name: text.to_owned(),
    })
}

/// Whether a peer could connect to `ip`.
pub(super) fn connectable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The socket address of an answer. An IPv6 link-local address means
/// nothing without its interface; the best guess is the interface the
/// response came in on.
pub(super) fn socket_address(ip: IpAddr, port: u16, from: SocketAddr) -> SocketAddr {
    match (ip, from) {
        (IpAddr::V6(v6), SocketAddr::V6(from)) if v6.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, from.scope_id()))
        }
        _ => SocketAddr::new(ip, port),
    }
}
