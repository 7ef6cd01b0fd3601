//! The std driver's integration tests: one test binary (one build and link) with a module per
//! concern. The tests that measure (rates, CPU shares, time bounds: `abuse`, `cluster`,
//! `crashed_validator`, `liveness`, `validator_changes`) stay binaries of their own, which
//! `cargo test` runs one at a time, so no other test shares the machine with them.

#[path = "../common/mod.rs"]
mod common;
#[path = "../ports/mod.rs"]
mod ports;

mod bad_input;
mod config_errors;
mod custom_network;
mod durable_crash;
mod listener;
mod oversized_payload;
mod processes;
mod prune;
mod reader;
mod safety_log;
mod shrink_to_one;
mod slow_peer;
mod snapshot;
mod snapshot_crash;
mod state_root;
mod storage;
mod store_file_corruption;
