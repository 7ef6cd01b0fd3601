//! Writes the seed corpus under `fuzz/seeds/<target>/` (run once from `fuzz/`:
//! `cargo run --release --example seed_corpus`; the files are committed):
//! - decode_envelope: a valid encoding of every message kind;
//! - decode_records: a valid encoding of every stored record type and a kv payload;
//! - decode_frames: a stream of every message kind as frames;
//! - handshake: an unmutated handshake from each kind of peer;
//! - replica_inputs: byte strings that `arbitrary` decodes to op lists following a script
//!   that makes progress (proposals of certified chains, acknowledgements, app replies);
//! - sim_schedule: a few byte strings decoding to different Byzantine kinds.
//!
//! `arbitrary` has no inverse, so the structured seeds are found by a greedy search: append
//! random bytes until the input decodes to the previous ops plus exactly one op of the wanted kind.

use arbitrary::{Arbitrary, Unstructured};
use hotstuff_tests::fuzzing::{self, samples, Mutation, Op, ReplicaInput, SimInput};
use std::mem::discriminant;
use std::path::Path;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write");
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn decode_ops(bytes: &[u8]) -> Option<ReplicaInput> {
    ReplicaInput::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

/// Whether `op` is an honest op of the kind of `want`.
fn fits(op: &Op, want: &Op) -> bool {
    if discriminant(op) != discriminant(want) {
        return false;
    }
    match op {
        Op::Propose { parent, view, tc, mutation, .. } => {
            *mutation == Mutation::None && parent & 0x80 == 0 && view.is_none() && tc.is_none()
        }
        Op::Certify { block, signers, mutation } => {
            *mutation == Mutation::None && block & 0x80 == 0 && signers.is_none()
        }
        Op::Timer { view } => *view == fuzzing::ViewSel::Current,
        _ => true,
    }
}

/// Decodes `bytes` as `ReplicaInput::arbitrary_take_rest` does (a continue flag before each
/// op), returning `me`, the ops, and how many bytes were left after the last op.
fn decode_counted(bytes: &[u8]) -> Option<(u8, Vec<Op>, usize)> {
    let mut u = Unstructured::new(bytes);
    let me = u8::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    let mut left = u.len();
    while bool::arbitrary(&mut u).ok()? {
        ops.push(Op::arbitrary(&mut u).ok()?);
        left = u.len();
    }
    Some((me, ops, left))
}

/// Appends one op at a time: a continue flag and random bytes, kept when they decode to the
/// ops so far plus one op of the wanted kind that uses exactly those bytes (an op that ran out
/// of bytes would take the next op's bytes and change).
fn search(me: u8, script: &[Op], rng: &mut XorShift) -> Vec<u8> {
    let mut bytes = vec![me];
    let mut ops: Vec<Op> = Vec::new();
    for want in script {
        for _ in 0..400_000 {
            let mut cand = bytes.clone();
            cand.push(1 | (rng.next() as u8 & 0xfe));
            for _ in 0..(rng.next() % 24 + 1) {
                cand.push(rng.next() as u8);
            }
            cand.push(0); // stop flag: must be left unread by the new op
            let Some((m, got, left)) = decode_counted(&cand) else { continue };
            if m == me
                && left == 1
                && got.len() == ops.len() + 1
                && got[..ops.len()] == ops[..]
                && fits(&got[ops.len()], want)
            {
                cand.pop();
                bytes = cand;
                ops = got;
                break;
            }
        }
    }
    bytes
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (i, env) in samples::messages().iter().enumerate() {
        write(&root.join("decode_envelope"), &format!("message-{i}"), &env.encode());
    }
    for (i, (name, bytes)) in samples::records().into_iter().enumerate() {
        write(&root.join("decode_records"), &format!("{i}-{name}").replace(' ', "-"), &bytes);
    }
    write(&root.join("decode_frames"), "stream", &samples::frame_stream());
    // An undamaged store file, and one cut short.
    write(&root.join("store_file"), "undamaged", &[0]);
    write(
        &root.join("store_file"),
        "flips-near-the-header",
        &[1, 0, 16, 0, 0, 0x40, 1, 1, 0, 2, 0, 0, 0x01, 1, 0],
    );
    // Handshakes from each kind of peer, unmutated: random bytes until one decodes so.
    let mut hrng = XorShift(0x4a5d_5eed);
    for peer in 0..6u8 {
        loop {
            let mut bytes: Vec<u8> = (0..96).map(|_| hrng.next() as u8).collect();
            bytes[0] = peer;
            let input =
                fuzzing::HandshakeInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
            if input.peer == peer && input.flips.is_empty() && input.cut.is_none() {
                fuzzing::handshake(&input);
                write(&root.join("handshake"), &format!("peer-{peer}"), &bytes);
                break;
            }
        }
    }

    let propose =
        Op::Propose { parent: 0, view: None, tc: None, payload: Vec::new(), mutation: Mutation::None };
    let certify = Op::Certify { block: 0, signers: None, mutation: Mutation::None };
    let mut script = vec![Op::Drive];
    for _ in 0..6 {
        script.extend([propose.clone(), Op::Drive, certify.clone()]);
    }
    script.extend([Op::Timer { view: fuzzing::ViewSel::Current }, Op::Drive, Op::Restart, Op::Drive]);
    let mut rng = XorShift(0x5eed_f022);
    for me in 0..4u8 {
        let bytes = search(me, &script, &mut rng);
        let input = decode_ops(&bytes).expect("decodes");
        let stats = fuzzing::replica_inputs(&input);
        println!("replica_inputs seed {me}: {} ops, {} bytes, {stats:?}", input.ops.len(), bytes.len());
        write(&root.join("replica_inputs"), &format!("progress-{me}"), &bytes);
    }

    for kind in 0..6u8 {
        let mut bytes = vec![0u8; 32];
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = (rng.next() >> (j % 8)) as u8;
        }
        // Find bytes that decode to this kind.
        loop {
            let input = SimInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
            if input.kind % 6 == kind {
                let report = fuzzing::sim_schedule(&input);
                println!("sim_schedule seed {kind}: {input:?} -> committed {}", report.max_committed);
                write(&root.join("sim_schedule"), &format!("kind-{kind}"), &bytes);
                break;
            }
            bytes[8] = bytes[8].wrapping_add(1);
        }
    }
}
