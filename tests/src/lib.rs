//! A deterministic simulator for `hotstuff-core`: many replicas in one thread on a virtual
//! clock, with seeded network faults, crash-restarts with torn writes, Byzantine replicas and
//! oracles for safety and liveness. The project's own simulation batches run on this public
//! API; you can run the same on your own app and your own invariants.
//!
//! - **Setup** ([`Params`]): validator count and [`powers`](Params::powers), Byzantine
//!   [`Behavior`]s per key (silent, withholding, equivocating, replaying, bad sync responses,
//!   or your own [`Strategy`] through [`Sim::set_strategy`]), [`twins`](Params::twins) (two
//!   honest-code nodes sharing a key; [`Params::node_keys`] gives the numbering), listeners,
//!   validator-set changes, late starts, outages, dead validators, and the network fault model
//!   ([`NetFaults`]: delays, loss, duplication, partitions, crashes until `heal_at_ms`).
//!   [`scenario`] generates the seeded fault mixes and the Twins scenarios the CI batches use.
//! - **Your app**: implement [`SimApp`] and build with [`Sim::with_app`], or run an app written
//!   for the drivers (`hotstuff_driver_std::App`, what a node ships) unchanged through
//!   [`DriverApp`]. [`Sim::submit`] injects client transactions; [`SimApp::check`] (or
//!   [`DriverApp::with_invariant`]) is your invariant, called on every honest replica after
//!   every block it commits.
//! - **Stepping**: [`Sim::run_until`], [`Sim::run_until_pred`], [`Sim::step`], then
//!   [`Sim::run_to_end`]; between steps read each node's [`replica`](Sim::replica),
//!   [`commit_log`](Sim::commit_log), [`app_state`](Sim::app_state) and
//!   [`events`](Sim::events), and [`crash`](Sim::crash), [`restart`](Sim::restart) or
//!   [`set_partition`](Sim::set_partition).
//! - **Oracles** ([`Report`] from [`Sim::finish`] or [`Sim::run`]): safety (no two honest
//!   replicas commit different blocks at a height; certificates verify against the epoch's
//!   set), double signs by honest keys, the durable voted view across crashes, liveness after
//!   the heal, your invariants; [`Report::agreement`] re-checks agreement from the per-replica
//!   commit logs, and [`Report::ok`] sums them up.
//! - **Replay**: a seed replays exactly ([`Report::trace_hash`] is the same); failures name
//!   their seed.
//!
//! ```
//! use hotstuff_tests::{scenario, Params, Sim};
//!
//! // Four validators, one of them equivocating, under seeded loss, delays and partitions.
//! let p: Params = scenario::params(7, 4, 1, scenario::Kind::Equivocate);
//! let mut sim = Sim::new(p);
//! sim.run_until(2_000); // pause at 2 s of virtual time
//! assert!(sim.replica(0).is_some());
//! sim.run_to_end();
//! let report = sim.finish();
//! assert!(report.ok(), "{:?}", report.safety_violations);
//! report.agreement().unwrap();
//! ```
//!
//! `tests/examples/bank.rs` (a user app with a conservation invariant under 200 seeds) and
//! `tests/tests/integration/kv_sim.rs` (the shipped kv app through [`DriverApp`]) are complete examples.
//! Also here: a fault-injecting TCP proxy for the drivers' end-to-end tests on loopback
//! ([`proxy`]).

pub mod app;
pub mod batch;
pub mod fuzzing;
pub mod proxy;
pub mod scenario;
pub mod sim;
pub mod snapshot_batch;
mod snapsim;
pub mod user_app;

pub use sim::{
    Behavior, NetFaults, Params, Report, SetChange, Sim, SnapshotParams, Strategy, StrategyContext,
};
pub use user_app::{AppState, DriverApp, Invariant, SimApp, SimContext};

/// CPU time used by the calling thread so far, in seconds (Linux `/proc/thread-self/stat`,
/// 10 ms resolution), or `None` where that is not available. Used to report simulator rates
/// per second of CPU time, which a loaded machine does not distort.
#[must_use]
pub fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
