//! Dispatch: one [`Request`] carried out on an [`Agent`], its result
//! turned into a [`Response`]. The server calls it for each line.

use keynode_core::{ContactMode, NodeAddressScopes, NodeContactAddressData};

use super::protocol::{
    AddressInfo, BucketInfo, ClaimInfo, ConnectionInfo, ContactInfo, ControlError, ErrorKind,
    RelayInfo, Reply, Request, Response,
};
use crate::{Agent, ChainOptions, ClaimOptions, FindOptions, PingOptions, SetNodeOptions};

/// Carries out one request on `agent`.
pub async fn handle(agent: &Agent, request: Request) -> Response {
    match dispatch(agent, request).await {
        Ok(reply) => Response::Ok(reply),
        Err(e) => Response::Error(e),
    }
}

/// Parses one request line and carries it out.
pub async fn handle_line(agent: &Agent, line: &[u8]) -> Response {
    match parse_line(line) {
        Ok(request) => handle(agent, request).await,
        Err(e) => Response::Error(e),
    }
}

/// Parses one request line.
pub(super) fn parse_line(line: &[u8]) -> Result<Request, ControlError> {
    serde_json::from_slice(line)
        .map_err(|e| ControlError::new(ErrorKind::BadRequest, e.to_string()))
}

async fn dispatch(agent: &Agent, request: Request) -> Result<Reply, ControlError> {
    Ok(match request {
        Request::Status => {
            let status = agent.status().await?;
            Reply::Status {
                node_id: agent.node_id(),
                address: agent.local_addr(),
                data_dir: agent.data_dir().to_path_buf(),
                joined: status.join.joined,
                contacts: status.contacts,
                connections: status.connections,
                failed_sync_attempts: status.join.failed_attempts,
                last_sync_error: status.join.last_error.map(|e| e.to_string()),
                sync_retry_in_ms: status
                    .join
                    .retry_in
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                observed_addresses: status.observed_addresses,
                nat_class: status.nat_class,
                relay: Box::new(RelayInfo::new(&status.relay)),
            }
        }
        Request::SetNode {
            node_id,
            address,
            force,
            block,
        } => {
            // The core skips its own NodeId without a word (spec setNode);
            // a user who typed it is told nothing was stored.
            if node_id == agent.node_id() {
                return Err(ControlError::new(
                    ErrorKind::Failed,
                    format!(
                        "ignored: {node_id} is this agent's own NodeId, not a contact of its graph"
                    ),
                ));
            }
            let data = NodeContactAddressData {
                mode: ContactMode::Direct,
                connected_time: unix_secs(),
                scopes: NodeAddressScopes::GLOBAL,
            };
            let options = SetNodeOptions::default().block(block).force(force);
            agent.set_node(node_id, address, data, options).await?;
            Reply::Done
        }
        Request::FindNode { node_id } => Reply::Found {
            node_id,
            address: agent
                .find_node(node_id, FindOptions::default())
                .await?
                .map(|(address, data)| AddressInfo::new(&address, &data)),
        },
        Request::PingNode { node_id } => Reply::Found {
            node_id,
            address: agent
                .ping_node(node_id, PingOptions::default())
                .await?
                .map(|(address, data)| AddressInfo::new(&address, &data)),
        },
        Request::GetAll => Reply::Contacts {
            buckets: agent
                .get_all()
                .await?
                .into_iter()
                .filter(|(_, contacts)| !contacts.is_empty())
                .map(|(bucket, contacts)| BucketInfo {
                    bucket: bucket.get(),
                    contacts: contacts
                        .iter()
                        .map(|(id, contact)| ContactInfo::new(*id, contact))
                        .collect(),
                })
                .collect(),
        },
        Request::Connections => {
            let modes: std::collections::BTreeMap<_, _> =
                agent.connection_modes().await?.into_iter().collect();
            Reply::Connections {
                connections: agent
                    .connections()
                    .await?
                    .into_iter()
                    .map(|(conn, node_id, remote)| ConnectionInfo {
                        id: conn.0,
                        node_id,
                        remote,
                        mode: modes.get(&conn).copied(),
                    })
                    .collect(),
            }
        }
        Request::ClaimNode { node_id } => {
            agent.claim_node(node_id, ClaimOptions::default()).await?;
            Reply::Done
        }
        Request::AllowClaims { node_id, allowed } => {
            agent.allow_claims_from(node_id, allowed).await?;
            Reply::Done
        }
        Request::Chain { node_id } => {
            let own = agent.node_id();
            let (node_id, claims) = match node_id {
                Some(id) if id != own => (
                    id,
                    agent
                        .request_chain_data(id, ChainOptions::default())
                        .await?,
                ),
                _ => (own, agent.sigchain().await?),
            };
            let claims = claims
                .iter()
                .map(ClaimInfo::new)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ControlError::new(ErrorKind::Internal, e))?;
            Reply::Chain { node_id, claims }
        }
        Request::PipeListen { .. } | Request::PipeConnect { .. } => {
            return Err(ControlError::new(
                ErrorKind::BadRequest,
                "a pipe needs a control socket connection, which it takes over",
            ));
        }
        Request::Metrics => Reply::Metrics {
            text: agent.metrics_text(),
        },
        Request::RenewKey => {
            let old_node_id = agent.node_id();
            let node_id = agent.renew_key().await?;
            Reply::KeyRenewed {
                old_node_id,
                node_id,
            }
        }
    })
}

/// Wall-clock seconds since the Unix epoch (0 before it).
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
