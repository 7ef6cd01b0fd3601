//! The tokio driver's integration tests: one test binary (one build and link) with a module per
//! concern. `liveness` stays a binary of its own: it times a 1 s heartbeat deadline, which
//! must not share the machine with another test.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod cluster;
mod current_thread;
mod mixed;
mod restart;
mod shutdown;
mod snapshot;
mod validator_changes;
