//! The stored records (`SafetyState`, `BlockRecord`, `ValidatorSet`, `QuorumCertificate`,
//! `TimeoutCertificate`, `CommittedTip`) decoded with borsh: no panic; whatever decodes
//! re-encodes to the input byte for byte.
#![no_main]

#[path = "../common/asan_options.rs"]
mod asan_options;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hotstuff_tests::fuzzing::decode_records(data));
