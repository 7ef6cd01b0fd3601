//! Runs every fuzz target body of `fuzz/` (see `hotstuff_tests::fuzzing`) on stable Rust, on
//! seeded pseudo-random inputs turned into structured ones with `arbitrary::Unstructured`, and on
//! mutations of valid encodings. A failure prints the seed of the input; replay it with the same
//! function.

use arbitrary::{Arbitrary, Unstructured};
use hotstuff_tests::fuzzing::{self, samples, Op, ReplicaInput, SimInput};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max);
    let mut v = vec![0; len];
    rng.fill_bytes(&mut v);
    v
}

/// Valid encodings with a few random bit flips, truncations or random bytes.
fn mutated(rng: &mut ChaCha8Rng, valid: &[Vec<u8>]) -> Vec<u8> {
    let mut v = valid[rng.gen_range(0..valid.len())].clone();
    match rng.gen_range(0..4) {
        0 => {
            for _ in 0..rng.gen_range(1..4) {
                let bit = rng.gen_range(0..v.len() * 8);
                v[bit / 8] ^= 1 << (bit % 8);
            }
        }
        1 => v.truncate(rng.gen_range(0..v.len())),
        2 => {
            let i = rng.gen_range(0..v.len());
            v[i] = rng.gen();
        }
        _ => v = bytes(rng, 256),
    }
    v
}

#[test]
fn decode_targets_on_mutated_encodings() {
    let start = Instant::now();
    let messages: Vec<Vec<u8>> = samples::messages().iter().map(|e| e.encode()).collect();
    let records: Vec<Vec<u8>> = samples::records().into_iter().map(|(_, b)| b).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0xdec0de);
    for v in &messages {
        fuzzing::decode_envelope(v);
    }
    for v in &records {
        fuzzing::decode_records(v);
    }
    for _ in 0..20_000 {
        fuzzing::decode_envelope(&mutated(&mut rng, &messages));
        fuzzing::decode_records(&mutated(&mut rng, &records));
    }
    println!("decode targets: 40,000 inputs in {:?}", start.elapsed());
}

/// Structured inputs drawn from seeded random bytes, as `fuzz_target!` does (`arbitrary_take_rest`).
fn structured<T: for<'a> Arbitrary<'a>>(seed: u64, max_len: usize) -> T {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = bytes(&mut rng, max_len);
    let u = Unstructured::new(&data);
    T::arbitrary_take_rest(u).expect("arbitrary never fails on short data: it fills with defaults")
}

/// A `ReplicaInput` of 1..=150 ops, each drawn with `Op::arbitrary` from seeded random bytes.
/// (`arbitrary`'s own `Vec` decoding continues with probability 1/2 per element on random bytes,
/// which is fine for libFuzzer, which learns, but gives ~1 op per input here.)
fn replica_input(seed: u64) -> ReplicaInput {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = bytes(&mut rng, 8_192);
    let mut u = Unstructured::new(&data);
    let me = rng.gen();
    let ops = (0..rng.gen_range(1..=150)).map_while(|_| Op::arbitrary(&mut u).ok()).collect();
    ReplicaInput { me, ops }
}

#[test]
fn replica_inputs_on_random_ops() {
    let start = Instant::now();
    let runs = 3_000;
    let (mut ops, mut total) = (0, fuzzing::Stats::default());
    for seed in 0..runs {
        let input = replica_input(seed);
        ops += input.ops.len().min(fuzzing::MAX_OPS);
        match std::panic::catch_unwind(|| fuzzing::replica_inputs(&input)) {
            Ok(s) => {
                total.accepted += s.accepted;
                total.refused += s.refused;
                total.signed_sent += s.signed_sent;
                total.committed = total.committed.max(s.committed);
                total.max_view = total.max_view.max(s.max_view);
            }
            Err(e) => {
                eprintln!("replica_inputs failed on seed {seed}: {input:?}");
                std::panic::resume_unwind(e);
            }
        }
    }
    println!("replica_inputs: {runs} inputs, {ops} ops in {:?}; {total:?}", start.elapsed());
    assert!(
        total.signed_sent > 0 && total.accepted > 0,
        "the harness never gets the replica to act: {total:?}"
    );
}

#[test]
fn sim_schedule_on_random_schedules() {
    let start = Instant::now();
    let runs = 40;
    for seed in 0..runs {
        let input: SimInput = structured(0x51_0000 + seed, 64);
        let r = std::panic::catch_unwind(|| fuzzing::sim_schedule(&input));
        if let Err(e) = r {
            eprintln!("sim_schedule failed on seed {seed}: {input:?}");
            std::panic::resume_unwind(e);
        }
    }
    println!("sim_schedule: {runs} inputs in {:?}", start.elapsed());
}

#[test]
fn driver_decode_targets_on_mutated_streams() {
    let start = Instant::now();
    let stream = samples::frame_stream();
    fuzzing::decode_frames(&stream);
    let frames = [stream];
    let mut rng = ChaCha8Rng::seed_from_u64(0xf4a3e);
    for _ in 0..5_000 {
        fuzzing::decode_frames(&mutated(&mut rng, &frames));
    }
    println!("decode_frames: 5,000 streams in {:?}", start.elapsed());
}

#[test]
fn handshake_accepts_exactly_the_honest_peer() {
    let start = Instant::now();
    let mut accepted = 0;
    for seed in 0..3_000u64 {
        let mut input: fuzzing::HandshakeInput = structured(seed, 160);
        // Half the inputs unmutated, from each kind of peer (0 is us, 1..=3 the other
        // validators, 4 and 5 outsiders), so that acceptance is exercised too.
        if seed % 2 == 0 {
            input.flips.clear();
            input.cut = None;
            input.peer = ((seed / 2) % 6) as u8;
        }
        fuzzing::handshake(&input);
        accepted += usize::from(seed % 2 == 0 && (1..4).contains(&input.peer));
    }
    assert!(accepted > 100, "too few honest handshakes exercised: {accepted}");
    // Regression (fuzzer): the last byte cut off and supplied again as a trailing byte gives
    // the honest stream, which must be accepted (one of these 256 inputs is that one).
    for last in 0..=255u8 {
        let mut input: fuzzing::HandshakeInput = structured(1, 160);
        input.peer = 3;
        input.flips.clear();
        input.cut = Some(143);
        input.extra = vec![last];
        fuzzing::handshake(&input);
    }
    println!("handshake: 3,000 inputs ({accepted} honest from allowed peers) in {:?}", start.elapsed());
}

#[test]
fn store_file_target_on_random_damage() {
    let start = Instant::now();
    fuzzing::store_file(&fuzzing::StoreFileInput { flips: Vec::new(), cut: None });
    for seed in 0..150u64 {
        fuzzing::store_file(&structured(seed, 64));
    }
    println!("store_file: 150 damaged images in {:?}", start.elapsed());
}
