//! The store's durable path, old against new, in one run: four validators on the std driver
//! over loopback TCP, each with a redb file store (fsync), proposing empty blocks as fast as
//! they can. Each round runs, interleaved: the synchronous path (`background_store_writes(false)`:
//! every drain one durable write on the consensus thread), the background writer on a redb file
//! without a safety log (only the safety state and a node's own proposals written before
//! `Persisted`, as one fsynced redb transaction: the path before the safety log), and the
//! background writer with the safety log (`RedbStore::open`: those writes are one fdatasynced
//! log record). It prints blocks/s and the p50 propose-to-commit latency (proposer's `Proposed`
//! event to node 0's `Committed` event) of each run, then the medians and the ratios.
//!
//! `cargo run --release -p hotstuff-driver-std --example durable_bench -- [rounds] [seconds]`
//! (defaults: 3 rounds of 5 s per setup, after 1 s of warm-up).

use hotstuff_core::{AppOutcome, Block, ChainId, Keypair, ValidatorSet};
use hotstuff_driver_std::{App, BlockContext, Event, Genesis, NodeBuilder, Produced, RedbStore};
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Proposes and accepts empty blocks.
struct Empty;

impl App for Empty {
    fn produce_block(&mut self, _: &BlockContext<'_>) -> Produced {
        Produced::default()
    }

    fn validate_block(&mut self, _: &BlockContext<'_>, _: &Block) -> Option<AppOutcome> {
        Some(AppOutcome::default())
    }
}

#[derive(Default)]
struct Probe {
    proposed: HashMap<u64, Instant>,
    /// (when, latency) of node 0's commits.
    commits: Vec<(Instant, Duration)>,
}

struct Figures {
    blocks_per_s: f64,
    p50_ms: f64,
}

/// The setups compared: (name, background writer, safety log).
const SETUPS: [(&str, bool, bool); 3] =
    [("synchronous", false, true), ("writer, no log", true, false), ("writer + safety log", true, true)];

fn run(background: bool, log: bool, warmup: Duration, secs: Duration) -> Figures {
    const N: usize = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys: Vec<Keypair> = (0..N).map(|i| Keypair::from_secret(&[i as u8 + 1; 32])).collect();
    let validators = ValidatorSet::new(keys.iter().map(|k| (k.public(), 1))).expect("validators");
    let genesis = Genesis::new(ChainId(77), validators);
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
    let probe = Arc::new(Mutex::new(Probe::default()));
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let path = dir.path().join(format!("node{i}.redb"));
        let store = if log {
            RedbStore::open(&path).expect("store")
        } else {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .expect("file");
            RedbStore::with_backend(redb::backends::FileBackend::new(file).expect("backend")).expect("store")
        };
        let probe = probe.clone();
        let mut b = NodeBuilder::new(Keypair::from_secret(&keys[i].secret()), genesis.clone(), Empty, store)
            .listener(listener)
            .idle_block_delay(Duration::ZERO)
            .background_store_writes(background)
            .on_event(move |e| {
                let Event::Core(e) = e else { return };
                match e {
                    hotstuff_core::Event::Proposed { view, .. } => {
                        probe.lock().expect("probe").proposed.insert(view.0, Instant::now());
                    }
                    hotstuff_core::Event::Committed { view, .. } if i == 0 => {
                        let now = Instant::now();
                        let mut p = probe.lock().expect("probe");
                        if let Some(at) = p.proposed.remove(&view.0) {
                            p.commits.push((now, now.duration_since(at)));
                        }
                    }
                    _ => {}
                }
            });
        for (j, k) in keys.iter().enumerate() {
            if j != i {
                b = b.peer(k.public(), Some(addrs[j]));
            }
        }
        nodes.push(b.start().expect("start"));
    }
    std::thread::sleep(warmup);
    let from = Instant::now();
    std::thread::sleep(secs);
    let to = Instant::now();
    for n in nodes {
        n.shutdown().expect("shutdown");
    }
    let p = probe.lock().expect("probe");
    let mut lat: Vec<Duration> =
        p.commits.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, l)| *l).collect();
    lat.sort();
    let blocks = lat.len();
    Figures {
        blocks_per_s: blocks as f64 / to.duration_since(from).as_secs_f64(),
        p50_ms: lat.get(blocks / 2).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let secs = Duration::from_secs_f64(args.next().and_then(|a| a.parse().ok()).unwrap_or(5.0));
    let warmup = Duration::from_secs(1);
    let mut results: [Vec<Figures>; 3] = Default::default();
    for round in 0..rounds {
        for (k, (name, background, log)) in SETUPS.into_iter().enumerate() {
            let f = run(background, log, warmup, secs);
            println!("round {round} {name:>20}: {:7.0} blocks/s, p50 {:.2} ms", f.blocks_per_s, f.p50_ms);
            results[k].push(f);
        }
    }
    let med = |k: usize| {
        (
            median(results[k].iter().map(|f| f.blocks_per_s).collect()),
            median(results[k].iter().map(|f| f.p50_ms).collect()),
        )
    };
    println!("medians of {rounds} interleaved rounds, n = 4, loopback TCP, redb file stores with fsync, empty blocks:");
    for (k, (name, _, _)) in SETUPS.into_iter().enumerate() {
        let (bps, p50) = med(k);
        println!("  {name:>20}: {bps:7.0} blocks/s, p50 {p50:.2} ms");
    }
    let ((old_bps, old_p50), (new_bps, new_p50)) = (med(1), med(2));
    println!(
        "  ratio (safety log / no log): blocks/s {:.2}x, p50 {:.2}x",
        new_bps / old_bps,
        new_p50 / old_p50
    );
}
