//! The responder: announcing this node's records (SRV, A / AAAA, TXT),
//! answering questions for them through `mdns-proto`'s `Service`, and the
//! goodbye when it stops; also the check of the addresses it announces.

use std::net::SocketAddr;
use std::time::Instant;

use mdns_proto::ServiceHandle;
use mdns_proto::config::ServiceSpec;
use mdns_proto::endpoint::WithdrawalSend;
use mdns_proto::event::ServiceUpdate;
use mdns_proto::records::ServiceRecords;
use mdns_proto::slab::Slab;
use mdns_proto::transmit::Transmit;

use super::outbox::Emitted;
use super::packet::{connectable, dns_name, instance_name};
use super::{
    MAX_ADDRESSES, MAX_DRAIN_STEPS, MdnsError, MdnsService, ProtoService, RECORD_TTL_SECS,
    SERVICE_TYPE, TXT_NODE_ID_KEY,
};

/// The service this node announces, while it announces.
pub(super) struct Announced {
    pub(super) handle: ServiceHandle,
    pub(super) service: ProtoService,
}

impl MdnsService {
    /// Starts announcing this node and answering questions for it: the
    /// first announcement is queued at once, the second a second later
    /// (RFC 6762 §8.3), then the records are re-announced before their TTL
    /// runs out. Announcing again while announcing does nothing.
    pub fn announce(&mut self, now: Instant) -> Result<(), MdnsError> {
        if self.announced.is_some() {
            return Ok(());
        }
        if self.addresses.is_empty() {
            return Err(MdnsError::NoAddresses);
        }
        // A goodbye still going out holds the name: drop it, since we are
        // about to announce the same records again.
        if let Some(retired) = self.retired.take() {
            self.endpoint.unregister_service(retired);
        }
        let records = self.records()?;
        let (handle, mut service) = self
            .endpoint
            .try_register_service::<Slab<Transmit>, Slab<ServiceUpdate>>(
                ServiceSpec::new(records),
                now,
            )
            .map_err(|error| MdnsError::Refused {
                reason: error.to_string(),
            })?;
        // The service starts in Announcing(0) with its deadline at `now`:
        // fire it so the first announcement is queued right away.
        let _ = service.handle_timeout(now);
        self.announced = Some(Announced { handle, service });
        self.pump(now);
        Ok(())
    }

    /// The records this node announces.
    fn records(&self) -> Result<ServiceRecords, MdnsError> {
        let text = self.node_id.to_string();
        let instance = dns_name(&instance_name(&self.node_id))?;
        let host = dns_name(&format!("{text}.local"))?;
        let service_type = dns_name(SERVICE_TYPE)?;
        let port = self.addresses.first().map_or(0, SocketAddr::port);
        let mut records = ServiceRecords::new(service_type, instance, host, port, RECORD_TTL_SECS);
        for address in &self.addresses {
            match address {
                SocketAddr::V4(v4) => {
                    records.add_a(*v4.ip());
                }
                SocketAddr::V6(v6) => {
                    records.add_aaaa_scoped(*v6.ip(), v6.scope_id());
                }
            }
        }
        records.add_txt_segment(format!("{TXT_NODE_ID_KEY}={text}").into_bytes());
        Ok(records)
    }

    pub(super) fn pump_service(&mut self, now: Instant) {
        let Some(announced) = self.announced.as_mut() else {
            return;
        };
        for _ in 0..MAX_DRAIN_STEPS {
            let Some(update) = announced.service.poll() else {
                break;
            };
            // Conflicts are never delivered (see `handle_datagram`), so the
            // service should never rename itself; were it to, the endpoint
            // must hear of it before the next datagram, and the old name
            // gets its goodbye (mdns-proto's contract). Other updates need
            // nothing from us.
            if let ServiceUpdate::Renamed(renamed) = update {
                let _ = self
                    .endpoint
                    .handle_service_renamed(announced.handle, renamed.new_name().clone());
                if let Some(handoff) = announced.service.take_rename_goodbye_handoff() {
                    self.endpoint.enqueue_rename_withdrawal(handoff, now, false);
                }
            }
        }
        for _ in 0..MAX_DRAIN_STEPS {
            match announced.service.poll_transmit(now, &mut self.buf) {
                Ok(Some(transmit)) => {
                    let emitted = match self.buf.get(..transmit.size()) {
                        Some(bytes) => self.outbox.emit(transmit.dst(), bytes),
                        None => Emitted::default(),
                    };
                    // Every produced datagram must be confirmed before the
                    // service produces the next one.
                    announced.service.note_transmit_result(now, emitted.any());
                }
                // Ok(None): nothing due. Err: the message does not fit
                // MAX_PACKET_LEN; the service keeps it and retries on its
                // next deadline, which cannot succeed but cannot spin either.
                Ok(None) | Err(_) => break,
            }
        }
    }

    pub(super) fn pump_goodbyes(&mut self, now: Instant) {
        let has_v4 = self.outbox.has_family(true);
        let has_v6 = self.outbox.has_family(false);
        for _ in 0..MAX_DRAIN_STEPS {
            let Some((destination, size, token)) =
                self.endpoint.poll_withdrawal_transmit(now, &mut self.buf)
            else {
                break;
            };
            let emitted = match self.buf.get(..size) {
                Some(bytes) => self.outbox.emit(destination, bytes),
                None => Emitted::default(),
            };
            // Per family: a family without a group has nobody to say
            // goodbye to; one whose datagram did not fit the queue retries.
            let outcome = |has: bool, sent: bool| match (has, sent) {
                (false, _) => WithdrawalSend::WriteOff,
                (true, true) => WithdrawalSend::Sent,
                (true, false) => WithdrawalSend::Retry,
            };
            self.endpoint.note_withdrawal_result(
                token,
                now,
                outcome(has_v4, emitted.v4),
                outcome(has_v6, emitted.v6),
            );
        }
        let mut completed: Vec<ServiceHandle> = Vec::new();
        self.endpoint
            .drain_completed_withdrawals(now, &mut completed);
        if self
            .retired
            .is_some_and(|retired| completed.contains(&retired))
        {
            self.retired = None;
        }
    }
}

/// Checks and deduplicates the addresses to announce.
pub(super) fn validate_addresses(addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, MdnsError> {
    let mut unique: Vec<SocketAddr> = Vec::new();
    for address in addresses {
        // An IPv4 address in IPv6 clothing (from a dual-stack socket) is
        // announced as the A record it is.
        let address = SocketAddr::new(address.ip().to_canonical(), address.port());
        if address.port() == 0 || !connectable(address.ip()) {
            return Err(MdnsError::Unannounceable { address });
        }
        if !unique.contains(&address) {
            unique.push(address);
        }
    }
    if unique.len() > MAX_ADDRESSES {
        return Err(MdnsError::TooManyAddresses {
            found: unique.len(),
            max: MAX_ADDRESSES,
        });
    }
    if let Some(first) = unique.first().map(SocketAddr::port)
        && let Some(other) = unique
            .iter()
            .map(SocketAddr::port)
            .find(|port| *port != first)
    {
        return Err(MdnsError::MixedPorts { first, other });
    }
    Ok(unique)
}
