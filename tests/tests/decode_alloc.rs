//! Decoding allocates in proportion to the input, not to what its length prefixes claim: a
//! counting global allocator measures the peak heap growth of every decoder (`Envelope::decode`,
//! the borsh decoders of the stored records, the std and tokio drivers' frame readers and the kv app's
//! payload decoder, and its handshake reading a peer's bytes) on >= 100,000 inputs (random bytes, and truncations, bit flips and
//! length-prefix rewrites of valid encodings of every message type, record, payload and a
//! stream of frames), and each must stay within `2 * input length + 64 KiB`. Large valid inputs
//! (megabyte payloads, certificates of 1024 signers) are measured whole and cut.
//!
//! The counters are process-wide, so every test holds [`SERIAL`]: no other test thread
//! allocates while a decode is measured.

use hotstuff_core::{
    BlockRecord, CommittedTip, Envelope, Limits, QuorumCertificate, SafetyState, TimeoutCertificate,
    ValidatorSet,
};
use hotstuff_tests::fuzzing::{self, samples};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // A moving realloc holds both blocks for a moment: count the new one in full first.
            grew(new_size);
            CURRENT.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Peak heap growth while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    f();
    PEAK.load(Relaxed).saturating_sub(base)
}

fn bound(len: usize) -> usize {
    2 * len + 64 * 1024
}

type DecodeFn = fn(&[u8]) -> bool;
type Decoder = (&'static str, DecodeFn);

fn decoders() -> Vec<Decoder> {
    fn borsh_ok<T: borsh::BorshDeserialize>(b: &[u8]) -> bool {
        borsh::from_slice::<T>(b).is_ok()
    }
    vec![
        ("Envelope::decode", |b| Envelope::decode(b, &Limits::default()).is_ok()),
        ("SafetyState", borsh_ok::<SafetyState>),
        ("BlockRecord", borsh_ok::<BlockRecord>),
        ("ValidatorSet", borsh_ok::<ValidatorSet>),
        ("QuorumCertificate", borsh_ok::<QuorumCertificate>),
        ("TimeoutCertificate", borsh_ok::<TimeoutCertificate>),
        ("CommittedTip", borsh_ok::<CommittedTip>),
        ("EpochState", borsh_ok::<hotstuff_core::EpochState>),
        ("CommittedEntry", borsh_ok::<hotstuff_driver_std::CommittedEntry>),
        ("kv payload", |b| hotstuff_driver_std::kv::decode_payload(b).is_some()),
        ("driver handshake", |b| {
            // The peer's side of a handshake, read by validator 0 as its connections do.
            fuzzing::handshake_reads(b)
        }),
        ("tokio driver frame reader", |b| fuzzing::tokio_frames(b).iter().any(|r| matches!(r, Ok(Some(_))))),
        ("driver frame reader", |b| {
            // Every frame of a stream, with the default limit, as the driver's connections do.
            let mut r = b;
            let max = Limits::default().max_frame;
            let mut frames = 0;
            while let Ok(Some(f)) = hotstuff_driver_std::net::frame::read_frame(&mut r, max) {
                frames += usize::from(Envelope::decode(&f, &Limits::default()).is_ok());
            }
            frames > 0
        }),
    ]
}

/// Measures every decoder on `input`; returns the violations.
fn measure(input: &[u8], decoders: &[Decoder], out: &mut Vec<String>, accepted: &mut usize) {
    for (name, decode) in decoders {
        let mut ok = false;
        let peak = peak_during(|| ok = std::hint::black_box(decode(std::hint::black_box(input))));
        *accepted += usize::from(ok);
        if peak > bound(input.len()) && out.len() < 20 {
            let head: Vec<u8> = input.iter().take(64).copied().collect();
            out.push(format!(
                "{name}: {} input bytes, peak {peak} bytes; input starts {head:?}",
                input.len()
            ));
        }
    }
}

/// All the valid encodings the inputs are derived from.
fn valid() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = samples::messages().iter().map(Envelope::encode).collect();
    v.extend(samples::records().into_iter().map(|(_, b)| b));
    v.push(samples::frame_stream());
    v.push(samples::handshake_peer_bytes());
    v
}

/// Inputs derived from `valid`: every truncation, single bit flips, u32 length-prefix rewrites
/// at every offset (to 0xffff_ffff and other large values), and random bytes. `count` inputs.
fn inputs(valid: &[Vec<u8>], count: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    for v in valid {
        for n in 0..v.len() {
            out.push(v[..n].to_vec());
        }
        for at in 0..v.len().saturating_sub(3) {
            for big in [u32::MAX, 1 << 24, 4 << 20, 65_536, 1_025, 65] {
                let mut m = v.clone();
                m[at..at + 4].copy_from_slice(&big.to_le_bytes());
                out.push(m);
            }
        }
    }
    while out.len() < count {
        let v = &valid[rng.gen_range(0..valid.len())];
        let input = match rng.gen_range(0..4) {
            0 => {
                let mut m = v.clone();
                for _ in 0..rng.gen_range(1..=3) {
                    let bit = rng.gen_range(0..m.len() * 8);
                    m[bit / 8] ^= 1 << (bit % 8);
                }
                m
            }
            1 => {
                let mut m = v.clone();
                let bit = rng.gen_range(0..m.len() * 8);
                m[bit / 8] ^= 1 << (bit % 8);
                m.truncate(rng.gen_range(0..=m.len()));
                m
            }
            2 => {
                let mut m = vec![0; rng.gen_range(0..512)];
                rng.fill_bytes(&mut m);
                m
            }
            _ => {
                // A valid prefix followed by random bytes.
                let mut m = v[..rng.gen_range(0..v.len())].to_vec();
                let mut tail = vec![0; rng.gen_range(0..64)];
                rng.fill_bytes(&mut tail);
                m.extend(tail);
                m
            }
        };
        out.push(input);
    }
    out
}

#[test]
fn decoders_allocate_in_proportion_to_the_input() {
    let _serial = serial();
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(0xa110c);
    let valid = valid();
    let inputs = inputs(&valid, 110_000, &mut rng);
    assert!(inputs.len() >= 100_000);
    let decoders = decoders();
    let (mut violations, mut accepted) = (Vec::new(), 0);
    for input in &inputs {
        measure(input, &decoders, &mut violations, &mut accepted);
    }
    println!(
        "{} inputs x {} decoders in {:?}, {accepted} decodes accepted",
        inputs.len(),
        decoders.len(),
        start.elapsed()
    );
    assert!(accepted >= valid.len(), "the valid encodings must decode");
    assert!(violations.is_empty(), "decoders over-allocate:\n{}", violations.join("\n"));
}

/// Large frames: a sync response with thousands of minimal blocks, a QC with many signers. The
/// bounded decoder refuses them at the length prefix, before building thousands of blocks
/// (borsh would reserve and fill a `Vec<Block>` at 136 bytes per 96 input bytes, growing by
/// doubling, before the `max_sync_blocks` check).
#[test]
fn large_frames_are_refused_before_allocating() {
    let _serial = serial();
    use hotstuff_core::message::SyncResponse;
    use hotstuff_core::{Block, BlockHash, ChainId, Height, Message, PublicKey, View};
    let block = Block {
        epoch: hotstuff_core::Epoch(0),
        view: View(1),
        height: Height(1),
        justify: QuorumCertificate {
            epoch: hotstuff_core::Epoch(0),
            view: View(0),
            block: BlockHash([0; 32]),
            signatures: Vec::new(),
        },
        proposer: PublicKey([1; 32]),
        payload: Vec::new(),
    };
    for n in [65, 1_000, 3_841, 20_000] {
        let env = Envelope::new(
            ChainId(1),
            Message::SyncResponse(SyncResponse { id: 1, blocks: vec![block.clone(); n], certificate: None }),
        );
        let bytes = env.encode();
        let mut result = None;
        let peak = peak_during(|| result = Some(Envelope::decode(&bytes, &Limits::default())));
        assert!(result.is_some_and(|r| r.is_err()), "{n} blocks must be refused");
        assert!(peak <= bound(bytes.len()), "{n} blocks: {} bytes, peak {peak}", bytes.len());
        assert!(peak <= 64 * 1024, "{n} blocks: refused at the prefix, yet peak {peak}");
    }
    // A short proposal whose payload length prefix claims 4 GiB: plain borsh would reserve 1 MiB
    // for a `Vec<u8>`; `Block`'s chunked payload reader and the bounded decoder reserve nothing.
    let mut frame = samples::messages()[0].encode();
    // version, chain, kind, epoch, view, height, genesis justify (no signers), proposer.
    let at = 2 + 8 + 1 + 8 + 8 + 8 + (8 + 8 + 32 + 4) + 32;
    assert_eq!(frame[at..at + 4], 24u32.to_le_bytes());
    frame[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    frame.truncate(at + 30);
    let borsh_peak = peak_during(|| assert!(borsh::from_slice::<Envelope>(&frame).is_err()));
    let bounded_peak = peak_during(|| assert!(Envelope::decode(&frame, &Limits::default()).is_err()));
    assert!(borsh_peak <= bound(frame.len()), "borsh-derived decoder peak {borsh_peak}");
    assert!(bounded_peak <= bound(frame.len()), "bounded decoder peak {bounded_peak}");
}

/// A valid `ValidatorSet` of up to `MAX_VALIDATORS` (1024) members (a 40,964-byte record)
/// decodes within the bound: the decoder keeps only `(key, power)` pairs, checking each key
/// without keeping its decompressed form (232 bytes a member, which once made the peak ~8x the
/// input). Sizes just past each growth step of the decoder's vector are the worst cases.
#[test]
fn large_validator_set_decodes_within_the_bound() {
    let _serial = serial();
    let keys: Vec<_> = (0..1024u32)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..4].copy_from_slice(&i.to_le_bytes());
            hotstuff_core::Keypair::from_secret(&s).public()
        })
        .collect();
    for n in [1, 64, 103, 205, 409, 513, 817, 1000, 1024] {
        let set = ValidatorSet::new(keys.iter().take(n).map(|k| (*k, 1))).expect("valid set");
        let bytes = borsh::to_vec(&set).expect("vec");
        let mut decoded = None;
        let peak = peak_during(|| decoded = borsh::from_slice::<ValidatorSet>(&bytes).ok());
        assert_eq!(decoded.as_ref(), Some(&set), "{n} members decode to the same set");
        assert!(peak <= bound(bytes.len()), "{n} members: {} bytes, peak {peak}", bytes.len());
        println!(
            "{n} members: {} bytes, decode peak {peak} bytes (bound {})",
            bytes.len(),
            bound(bytes.len())
        );
    }
}

/// Large valid records and frames, whole and truncated at 64 points: decoding stays within the
/// bound however far the data runs (buffers grow with the bytes read, never past them by more
/// than a step, and never hold old and new copies of more than that).
#[test]
fn large_valid_inputs_decode_within_the_bound() {
    use hotstuff_core::message::SyncResponse;
    use hotstuff_core::{
        AppOutcome, AppStateUpdates, Block, BlockHash, ChainId, Epoch, EpochProof, EpochState, Height,
        Keypair, Message, PublicKey, Signature, View,
    };
    let _serial = serial();
    let mut rng = ChaCha8Rng::seed_from_u64(0x1a46e);
    let mut bytes_of = |n: usize| {
        let mut v = vec![0u8; n];
        rng.fill_bytes(&mut v);
        v
    };
    let fake_key = |i: u32| {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        PublicKey(k)
    };
    let qc = QuorumCertificate {
        epoch: Epoch(3),
        view: View(9),
        block: BlockHash([7; 32]),
        signatures: (0..1024).map(|i| (fake_key(i), Signature([i as u8; 64]))).collect(),
    };
    let tc = TimeoutCertificate {
        epoch: Epoch(3),
        view: View(10),
        high_qc: qc.clone(),
        signatures: (0..1024).map(|i| (fake_key(i), View(9), Signature([1; 64]))).collect(),
    };
    let block = |payload: Vec<u8>| Block {
        epoch: Epoch(3),
        view: View(11),
        height: Height(5),
        justify: qc.clone(),
        proposer: fake_key(1),
        payload,
    };
    let set = ValidatorSet::new((0..1024u32).map(|i| {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&i.to_le_bytes());
        (Keypair::from_secret(&s).public(), u64::from(i) + 1)
    }))
    .expect("valid set");
    let mut big_values = AppStateUpdates::default();
    for i in 0..64u32 {
        big_values.insert(i.to_be_bytes().to_vec(), bytes_of(16 << 10));
    }
    big_values.insert(b"huge".to_vec(), bytes_of(1 << 20));
    let proof = EpochProof { blocks: vec![block(bytes_of(300_000)), block(Vec::new())], qc: qc.clone() };
    let epoch_state =
        EpochState { epoch: Epoch(3), validators: set.clone(), previous: Some(set), root_qc: qc.clone() };
    let records: Vec<(&str, Vec<u8>, DecodeFn)> = vec![
        (
            "BlockRecord 2 MiB payload",
            borsh::to_vec(&BlockRecord { block: block(bytes_of(2 << 20)), outcome: None }).expect("vec"),
            |b| borsh::from_slice::<BlockRecord>(b).is_ok(),
        ),
        (
            "BlockRecord 2 MiB of app updates",
            borsh::to_vec(&BlockRecord {
                block: block(bytes_of(1000)),
                outcome: Some(AppOutcome { app_updates: big_values, ..AppOutcome::default() }),
            })
            .expect("vec"),
            |b| borsh::from_slice::<BlockRecord>(b).is_ok(),
        ),
        ("QC of 1024 signers", borsh::to_vec(&qc).expect("vec"), |b| {
            borsh::from_slice::<QuorumCertificate>(b).is_ok()
        }),
        ("TC of 1024 signers", borsh::to_vec(&tc).expect("vec"), |b| {
            borsh::from_slice::<TimeoutCertificate>(b).is_ok()
        }),
        ("EpochState of 2 x 1024", borsh::to_vec(&epoch_state).expect("vec"), |b| {
            borsh::from_slice::<EpochState>(b).is_ok()
        }),
        (
            "committed entry with an epoch proof",
            borsh::to_vec(&(block(bytes_of(100_000)), qc.clone(), Some(proof))).expect("vec"),
            |b| borsh::from_slice::<(Block, QuorumCertificate, Option<EpochProof>)>(b).is_ok(),
        ),
        (
            "proposal frame, 4 MiB payload",
            Envelope::new(
                ChainId(1),
                Message::Proposal(hotstuff_core::Proposal {
                    block: block(bytes_of(4 << 20)),
                    tc: Some(tc.clone()),
                    signature: Signature([0; 64]),
                }),
            )
            .encode(),
            |b| Envelope::decode(b, &Limits::default()).is_ok(),
        ),
        (
            "sync response frame, 64 blocks of 60 KB",
            Envelope::new(
                ChainId(1),
                Message::SyncResponse(SyncResponse {
                    id: 1,
                    blocks: (0..64).map(|_| block(bytes_of(60_000))).collect(),
                    certificate: Some(qc.clone()),
                }),
            )
            .encode(),
            |b| Envelope::decode(b, &Limits::default()).is_ok(),
        ),
    ];
    let mut violations = Vec::new();
    for (name, bytes, decode) in &records {
        let mut worst = 0f64;
        for cut in (0..=64).map(|i| bytes.len() * i / 64) {
            let input = &bytes[..cut];
            let mut ok = false;
            let peak = peak_during(|| ok = std::hint::black_box(decode(std::hint::black_box(input))));
            assert_eq!(ok, cut == bytes.len(), "{name}: only the whole input decodes (cut {cut})");
            worst = worst.max(peak as f64 / bound(cut) as f64);
            if peak > bound(cut) {
                violations.push(format!("{name}: {cut} of {} bytes, peak {peak}", bytes.len()));
            }
        }
        println!("{name}: {} bytes, worst peak / bound {worst:.2}", bytes.len());
    }
    assert!(violations.is_empty(), "over the bound:\n{}", violations.join("\n"));
    // Capped by meaning: no certificate has more signers than the largest validator set.
    let mut too_many = qc.clone();
    too_many.signatures.push((fake_key(5000), Signature([0; 64])));
    let bytes = borsh::to_vec(&too_many).expect("vec");
    let peak = peak_during(|| assert!(borsh::from_slice::<QuorumCertificate>(&bytes).is_err()));
    assert!(peak <= 64, "a QC of 1025 signers is refused at its count (peak {peak})");
}
