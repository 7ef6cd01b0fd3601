//! The std driver's database file, damaged (bit flips, cuts), opened and read as a restarting
//! node does: no panic escapes. See `hotstuff_tests::fuzzing::store_file`.
#![no_main]

#[path = "../common/asan_options.rs"]
mod asan_options;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: hotstuff_tests::fuzzing::StoreFileInput| hotstuff_tests::fuzzing::store_file(&input));
