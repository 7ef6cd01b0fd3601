//! The time and bytes of a snapshot sync of a large state (1,000,000 keys by default).
//!
//! One validator (the kv app with a certified state root, a file store in a temp dir) starts
//! from a genesis state of `KEYS` entries, commits blocks under light load (a put every 5 ms),
//! prunes everything below its last 6,000 blocks (more than the blocks committed while a
//! million keys are fetched on a loaded machine) and serves snapshots every 500 heights. A new
//! node then joins over an in-process channel network (frames are encoded and decoded as on
//! TCP, and counted), catches up by snapshot and block sync; its state digest is checked
//! against the validator's.
//!
//! `cargo run --release -p hotstuff-driver-std --features cli --example snapshot_size [KEYS]`

use hotstuff_core::{ChainId, Keypair, ValidatorSet};
use hotstuff_driver_std::kv::certified::StateCommitted;
use hotstuff_driver_std::kv::{KvApp, Mempool, Tx};
use hotstuff_driver_std::net::channel::ChannelHub;
use hotstuff_driver_std::{Event, Genesis, NodeBuilder, RedbStore, RetainBlocks, SnapshotSettings, Storage};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Blocks kept: enough that the blocks above a snapshot are still stored when its build (a
/// scan, a sort and a tree of the whole state: seconds at a million keys) ends.
const RETAIN: u64 = 6_000;

/// The envelope's message tag of `SnapshotChunk` (after version u16 and chain u64).
const CHUNK_TAG: u8 = 11;

fn main() {
    tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_writer(std::io::stderr).init();
    let keys: usize = std::env::args().nth(1).map_or(1_000_000, |a| a.parse().expect("KEYS"));
    let validator = Keypair::from_secret(&[1; 32]);
    let joiner_key = Keypair::from_secret(&[2; 32]);
    let genesis = Genesis::new(ChainId(9), ValidatorSet::new([(validator.public(), 1)]).unwrap())
        .with_app_state((0..keys).map(|i| {
            (format!("kv/key{i:08}").into_bytes(), format!("value {i} of the genesis").into_bytes())
        }));
    let state_bytes: usize = genesis.app_state.iter().map(|(k, v)| k.len() + v.len()).sum();
    println!("state: {keys} keys, {state_bytes} bytes of keys and values");
    let dir = tempfile::tempdir().unwrap();
    let hub = ChannelHub::default();
    let frames = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    // Counts the chunk frames and their bytes on the wire (with TCP's 4-byte length prefix).
    let net = || {
        let (frames, bytes) = (frames.clone(), bytes.clone());
        hub.network().with_hook(move |_to, frame| {
            if frame.get(10) == Some(&CHUNK_TAG) {
                frames.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
            }
            Some(frame.clone())
        })
    };
    let pool = Mempool::new(100_000);
    let vstore: Arc<dyn Storage> = Arc::new(RedbStore::open(dir.path().join("validator.redb")).unwrap());
    let start = Instant::now();
    let v = NodeBuilder::with_shared_store(
        Keypair::from_secret(&validator.secret()),
        genesis.clone(),
        StateCommitted::new(KvApp::new(pool.clone(), 100)),
        vstore.clone(),
    )
    .network(net())
    .retain_blocks(RetainBlocks::Last(RETAIN))
    .snapshots(SnapshotSettings { interval: 500, fetch: false })
    .start()
    .unwrap();
    println!("validator started in {:?}", start.elapsed());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let mut t = 0u64;
        while !flag.load(Ordering::Relaxed) {
            let _ = pool.submit(Tx::Put { key: format!("key{}", t % 1000).into_bytes(), value: vec![7; 16] });
            t += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    while vstore.retained_from().unwrap().0 < 2 {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "validator at height {} (pruned below {}) after {:?}",
        v.status().committed,
        vstore.retained_from().unwrap(),
        start.elapsed()
    );

    let installed = Arc::new(Mutex::new(None));
    let seen = installed.clone();
    let jstore: Arc<dyn Storage> = Arc::new(RedbStore::open(dir.path().join("joiner.redb")).unwrap());
    let t0 = Instant::now();
    let j = NodeBuilder::with_shared_store(
        joiner_key,
        genesis,
        StateCommitted::new(KvApp::new(Mempool::new(10), 100)),
        jstore.clone(),
    )
    .network(net())
    .snapshots(SnapshotSettings { interval: 0, fetch: true })
    .on_event(move |e| {
        if let Event::SnapshotInstalled { height, .. } = e {
            *seen.lock().unwrap() = Some((*height, Instant::now()));
        }
    })
    .start()
    .unwrap();
    let (height, at) = loop {
        if let Some(x) = *installed.lock().unwrap() {
            break x;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "no snapshot installed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = at - t0;
    println!(
        "snapshot at height {height} installed {took:?} after the joiner started: {} chunk frames, {} bytes on the wire ({:.2} x the state's keys and values)",
        frames.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) as f64 / state_bytes as f64
    );
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    // The joiner follows the chain; once both are idle at the same height, the digests agree.
    let t1 = Instant::now();
    loop {
        let (vt, vd) = v.reader().app_state_digest().unwrap();
        let (jt, jd) = j.reader().app_state_digest().unwrap();
        if vd == jd {
            println!(
                "joiner at {} has the validator's state digest (validator at {}), {:?} after the install",
                jt.height,
                vt.height,
                at.elapsed()
            );
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(120),
            "digests differ: joiner at {}, validator at {}",
            jt.height,
            vt.height
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let size = |p: &str| std::fs::metadata(dir.path().join(p)).map(|m| m.len()).unwrap_or(0);
    j.shutdown().unwrap();
    v.shutdown().unwrap();
    println!("store files: validator {} bytes, joiner {} bytes", size("validator.redb"), size("joiner.redb"));
}
