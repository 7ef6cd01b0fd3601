//! The std driver's inbound path: a byte stream read into length-prefixed frames by its frame
//! reader, each body decoded by `Envelope::decode`. See `hotstuff_tests::fuzzing::decode_frames`.
#![no_main]

#[path = "../common/asan_options.rs"]
mod asan_options;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hotstuff_tests::fuzzing::decode_frames(data));
