//! The std driver's connection handshake against a peer whose honest bytes are flipped, cut or
//! extended: accepted exactly when honest and allowed. See `hotstuff_tests::fuzzing::handshake`.
#![no_main]

#[path = "../common/asan_options.rs"]
mod asan_options;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: hotstuff_tests::fuzzing::HandshakeInput| hotstuff_tests::fuzzing::handshake(&input));
