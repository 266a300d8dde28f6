//! The conformance suite of the agent (issue 16), written once and run by
//! each driver on real UDP loopback, with real QUIC and LMDB directories:
//! `keynode-tokio/tests/conformance.rs` and `keynode-smol/tests/conformance.rs`
//! include this module as `suite`, give it their [`Runtime`] and
//! instantiate every case with [`conformance_suite!`]. An agent must behave
//! the same on every runtime; this suite is what "the same" means.
//!
//! It lives with keynode-agent because it tests the agent's API (both
//! drivers only run the agent's loop); it is compiled into each driver's
//! test binary, not the agent's, because the agent has no runtime of its
//! own.
//!
//! Every case is runtime-free: servers and clients run side by side in one
//! task (`select`, `join`, `FuturesUnordered`), so the only things a driver
//! supplies are starting an agent, sleeping, and blocking on the test. A
//! runtime's spawn is not needed, and nothing a case starts can outlive
//! it. Each case runs under a generous time limit ([`run`]), so that a hang
//! fails instead of blocking; nothing asserts on speed.
//!
//! The cases, one module per area:
//! - `agents`: sync through a seed (by address or host name), find, ping,
//!   claim, chain data; a peer's key checked; key renewal; restart from the
//!   data directory and on its port; mDNS and its configuration; stop
//!   while operations run, and when the last handle goes; observed
//!   addresses and the NAT class.
//! - `observe`: events in order for a scripted scenario, lag reported to a
//!   subscriber that does not read, metrics counting the scenario.
//! - `ops`: cancel on drop, per-call timeouts, the bounded call queue;
//!   `with_conn_*` giving their connection's use back.
//! - `streams`: application streams and datagrams (issue 14).
//!
//! # Adding a case
//!
//! 1. Write it in the module of its area (or a new module `foo.rs`, declared
//!    below with `pub mod foo;` and starting with `use super::*;`) as
//!    `pub fn what_a_user_would_check<R: Runtime>() { run::<R>(limit, async { .. }) }`,
//!    using the harness (`start::<R>`, `connect`, `within::<R, _>`,
//!    `eventually::<R, _>`, `stop_all`, ...) and nothing of a runtime.
//! 2. Add its name to its module's list in [`conformance_suite!`] (a new
//!    module gets a new `name { .. }` group there).
//!
//! Both drivers then run it as `<module>::<name>` (`cargo test -p
//! keynode-tokio --test conformance agents::`), with nothing to change in
//! either driver.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use keynode_agent::{Agent, AgentConfig, AgentError};

mod harness;

pub mod agents;
pub mod observe;
pub mod ops;
pub mod streams;

pub use harness::{
    connect, connected_to, echo, echo_of, empty, eventually, first_error, leases, payload,
    protocol, run, serve, start, stop_all, while_serving, within,
};

/// What a driver gives the suite.
pub trait Runtime: 'static {
    /// Starts an agent on this runtime (the driver's `start`).
    fn start(config: AgentConfig) -> BoxFuture<'static, Result<Agent, AgentError>>;
    /// The runtime's sleep.
    fn sleep(d: Duration) -> BoxFuture<'static, ()>;
    /// Runs `f` to its end on a fresh runtime (or the runtime's executor).
    fn block_on<T>(f: impl Future<Output = T>) -> T;
}

/// Instantiates every case of the suite for a [`Runtime`], as a `#[test]`
/// in a module named after the case's module; the including file names
/// this module `suite`.
macro_rules! conformance_suite {
    ($rt:ty) => {
        $crate::suite::conformance_suite!(@tests $rt:
            agents {
                agents_sync_through_one_seed_then_find_ping_claim_and_fetch_each_others_chains,
                twenty_agents_sync_through_one_seed_and_find_each_other,
                a_seed_named_by_hostname_is_resolved_and_joined,
                a_wrong_certificate_key_is_refused,
                renew_key_moves_every_contact_and_the_agent_is_found_under_its_new_id,
                a_stopped_agent_frees_its_directory_and_restarts_with_its_id_graph_chain_and_tasks,
                a_stopped_agent_restarts_at_once_on_its_port,
                dropping_every_handle_stops_the_agent_and_frees_its_directory,
                two_agents_without_seeds_find_each_other_by_mdns,
                an_ipv6_mdns_group_is_refused_at_start_not_ignored,
                a_call_waiting_when_the_agent_stops_ends_and_later_calls_say_stopped,
                an_agent_joined_through_two_peers_reports_its_observed_address_and_public,
            }
            observe {
                events_follow_join_find_claim_and_stop_in_order,
                a_subscriber_that_does_not_read_is_told_how_many_it_missed,
                metrics_count_connections_lookups_and_closes,
            }
            ops {
                a_dropped_find_leaves_no_operation_lease_or_slot_behind,
                a_call_past_its_timeout_ends_typed_and_is_cancelled,
                a_full_call_queue_refuses_with_busy,
                with_conn_f_and_g_give_their_use_back_on_success_error_and_drop,
            }
            streams {
                an_echo_protocol_returns_what_was_sent,
                two_hundred_fifty_six_mib_go_through_one_stream_with_the_checksum_matching,
                a_hundred_concurrent_streams_each_echo_their_own_payload,
                a_unidirectional_stream_and_datagrams_are_delivered,
                an_unregistered_protocol_gives_the_opener_a_typed_refusal,
                the_inbound_cap_refuses_with_a_type_while_other_protocols_and_peers_go_on,
                a_reader_that_stops_reading_leaves_the_writer_pending_within_the_window,
                a_connection_with_an_open_stream_outlives_its_idle_ttl_and_goes_after_it,
                a_hundred_thousand_sequential_streams_leave_the_tables_flat,
                with_conn_f_and_g_time_out_with_a_typed_error_and_release_the_connection,
                keynode_requests_work_while_application_streams_run,
            }
        );
    };
    (@tests $rt:ty: $($module:ident { $($name:ident),* $(,)? })*) => {
        $(
            mod $module {
                use super::*;
                $(
                    #[test]
                    fn $name() {
                        $crate::suite::$module::$name::<$rt>();
                    }
                )*
            }
        )*
    };
}
pub(crate) use conformance_suite;
