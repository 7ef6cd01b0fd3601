//! A 4-validator simulation (at most one Byzantine key or twin) with a seed, partitions and
//! leaders from the input: no two honest replicas commit different blocks, no honest key signs
//! twice in a view.
#![no_main]

#[path = "../common/asan_options.rs"]
mod asan_options;

use hotstuff_tests::fuzzing::{sim_schedule, SimInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: SimInput| {
    let _ = sim_schedule(&input);
});
