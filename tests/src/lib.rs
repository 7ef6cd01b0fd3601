//! Test harness for `hotstuff-core`: a deterministic simulator with faults, Byzantine replicas
//! and safety/liveness oracles. See [`sim`]; users test their own app with it through
//! [`SimApp`] and [`Sim::with_app`] (and their own Byzantine [`Strategy`]), stepping it with
//! [`Sim::run_until`]. Also a fault-injecting TCP proxy for the drivers' end-to-end tests on
//! loopback ([`proxy`]).

pub mod app;
pub mod batch;
pub mod fuzzing;
pub mod proxy;
pub mod scenario;
pub mod sim;
pub mod user_app;

pub use sim::{Behavior, NetFaults, Params, Report, SetChange, Sim, Strategy, StrategyContext};
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
