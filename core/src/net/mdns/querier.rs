//! The querier: asking the local network for a node's addresses by
//! NodeId, retransmitting through `mdns-proto`'s queries, and matching the
//! records of each response datagram to the queries in flight.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

use mdns_proto::QueryHandle;
use mdns_proto::config::QuerySpec;
use mdns_proto::event::QueryUpdate;
use mdns_proto::wire::{MessageReader, ResourceType};

use super::outbox::Emitted;
use super::packet::{PacketRecords, dns_name, instance_name, socket_address};
use super::{
    MAX_ADDRESSES, MAX_DRAIN_STEPS, MAX_PENDING_ANSWERS, MAX_QUERIES, MdnsError, MdnsService,
    QUERY_LIFETIME,
};
use crate::{NodeId, QueryId};

/// A query in flight.
pub(super) struct ActiveQuery {
    pub(super) node_id: NodeId,
    pub(super) handle: QueryHandle,
    /// `<nodeid>._polykey._udp.local`, lowercase, no trailing dot: what
    /// owner names of answer records are compared with.
    pub(super) instance: String,
    /// Addresses already reported, so that repeated announcements and the
    /// same response arriving on two groups are reported once.
    pub(super) found: BTreeSet<SocketAddr>,
}

impl MdnsService {
    /// Asks the local network for the addresses of `node_id`; what is found
    /// comes out of [`Self::poll_answer`] tagged with `query`. The question
    /// goes out at once and is repeated with backoff (1 s, 2 s, 4 s, …) until
    /// [`Self::end_query`], or at most [`QUERY_LIFETIME`]. Unsolicited
    /// announcements of `node_id` answer the query too. Reusing the id of a
    /// query in flight restarts it.
    pub fn query(
        &mut self,
        now: Instant,
        query: QueryId,
        node_id: NodeId,
    ) -> Result<(), MdnsError> {
        self.end_query(query);
        if self.queries.len() >= MAX_QUERIES {
            return Err(MdnsError::TooManyQueries { max: MAX_QUERIES });
        }
        let instance = instance_name(&node_id);
        let name = dns_name(&instance)?;
        // ANY: the responder sends its whole record set whatever the type,
        // and ANY is what other DNS-SD responders answer fully. No answer
        // collection in `mdns-proto` (0): answers are matched per datagram
        // in `match_answers`, which also needs the host's A / AAAA records
        // that an instance-name query would not collect.
        let spec = QuerySpec::new(name, ResourceType::Any)
            .with_max_answers(0)
            .with_timeout(QUERY_LIFETIME);
        let handle =
            self.endpoint
                .try_start_query(spec, now)
                .map_err(|error| MdnsError::Refused {
                    reason: error.to_string(),
                })?;
        self.queries.insert(
            query,
            ActiveQuery {
                node_id,
                handle,
                instance,
                found: BTreeSet::new(),
            },
        );
        self.pump(now);
        Ok(())
    }

    /// Ends a query: no more questions, no more answers (also drops its
    /// answers not yet polled). Unknown ids are ignored.
    pub fn end_query(&mut self, query: QueryId) {
        if let Some(active) = self.queries.remove(&query) {
            // Finished queries stay in mdns-proto's pool until cancelled.
            let _ = self.endpoint.cancel_query(active.handle);
        }
        self.answers.retain(|(id, _)| *id != query);
    }

    pub(super) fn pump_queries(&mut self, now: Instant) {
        let mut finished = Vec::new();
        for (id, active) in &self.queries {
            for _ in 0..MAX_DRAIN_STEPS {
                match self
                    .endpoint
                    .poll_query_transmit(active.handle, now, &mut self.buf)
                {
                    Ok(Some(transmit)) => {
                        let emitted = match self.buf.get(..transmit.size()) {
                            Some(bytes) => self.outbox.emit(transmit.dst(), bytes),
                            None => Emitted::default(),
                        };
                        self.endpoint
                            .note_query_transmit_result(active.handle, now, emitted.any());
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // The terminal update comes once; a finished query would
            // otherwise keep its slot in mdns-proto's pool forever.
            for _ in 0..MAX_DRAIN_STEPS {
                match self.endpoint.poll_query(active.handle) {
                    Some(QueryUpdate::Done | QueryUpdate::Timeout) => finished.push(*id),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        for id in finished {
            self.end_query(id);
        }
    }

    /// Reads one response datagram for answers to our queries: for each
    /// query, the SRV and TXT records of its instance name, the TXT NodeId
    /// being the queried one, and the A / AAAA records of the SRV target.
    pub(super) fn match_answers(&mut self, from: SocketAddr, bytes: &[u8]) {
        let Ok(reader) = MessageReader::try_parse(bytes) else {
            return;
        };
        if !reader.header().flags().is_response() {
            return;
        }
        let records = PacketRecords::read(&reader);
        for (id, active) in self.queries.iter_mut() {
            let mut named = false;
            let mut vouched = false;
            for (owner, node_id) in &records.txt {
                if *owner == active.instance {
                    named = true;
                    vouched |= *node_id == Some(active.node_id);
                }
            }
            if !vouched {
                if named {
                    self.stats.answers_rejected = self.stats.answers_rejected.saturating_add(1);
                }
                continue;
            }
            let mut new = BTreeSet::new();
            for (owner, port, target) in &records.srv {
                if *owner != active.instance || *port == 0 {
                    continue;
                }
                for (host, ip) in &records.addresses {
                    if host != target {
                        continue;
                    }
                    let address = socket_address(*ip, *port, from);
                    if !active.found.contains(&address)
                        && active.found.len().saturating_add(new.len()) < MAX_ADDRESSES
                    {
                        new.insert(address);
                    }
                }
            }
            if new.is_empty() {
                continue;
            }
            if self.answers.len() >= MAX_PENDING_ANSWERS {
                // Not marked found: a later response can still report them.
                self.stats.answers_dropped = self.stats.answers_dropped.saturating_add(1);
                continue;
            }
            active.found.extend(new.iter().copied());
            self.answers.push_back((*id, new.into_iter().collect()));
        }
    }
}
