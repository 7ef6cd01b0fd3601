//! hotstuff-core's integration tests, through the public API only: one test binary (one build
//! and link) with a module per concern.

mod common;

mod api;
mod app_wire;
mod broadcast_votes;
mod props;
mod recovery;
mod rules;
mod snapshot_wire;
mod sync_epochs;
mod sync_pruned;
mod test_util;
