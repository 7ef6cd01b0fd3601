//! `Envelope::decode` with default limits: no panic; whatever decodes re-encodes to the input
//! byte for byte; the bounded decoder accepts exactly what borsh + the limit checks accept.
#![no_main]

#[path = "../common/asan_options.rs"]
mod asan_options;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hotstuff_tests::fuzzing::decode_envelope(data));
