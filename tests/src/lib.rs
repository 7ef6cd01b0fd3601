//! Test harness for `hotstuff-core`: a deterministic simulator with faults, Byzantine replicas
//! and safety/liveness oracles. See [`sim`].

pub mod app;
pub mod batch;
pub mod fuzzing;
pub mod scenario;
pub mod sim;

pub use sim::{Behavior, NetFaults, Params, Report, SetChange, Sim};
