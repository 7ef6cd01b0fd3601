//! One replica of four fed an arbitrary list of operations (signed proposals, votes, timeout
//! votes with mutations, raw and bit-flipped frames, timers, persist acks, app replies,
//! restarts); the invariants of `hotstuff_tests::fuzzing::replica_inputs` are checked after
//! every operation.
#![no_main]

#[path = "../common/asan_options.rs"]
mod asan_options;

use hotstuff_tests::fuzzing::{replica_inputs, ReplicaInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: ReplicaInput| {
    let _ = replica_inputs(&input);
});
