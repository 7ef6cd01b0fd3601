//! Setups (b) and (c): the std driver (`NodeBuilder`), proposing as fast as it can
//! (`idle_block_delay(0)`).
//! - (b) over the driver's in-process channel network (`net::channel`: a send decodes the
//!   frame into the receiver's inbox channel, on the sender's thread), `RedbStore::in_memory()`, an 8-byte payload as in (a);
//! - (c) over loopback TCP, a redb file store per node (fsync; the default background writer),
//!   empty blocks.
//!
//! Both use the round-robin leader policy of (a) and hotstuff_rs (the driver's default is
//! leader reputation).
//!
//! Latency: from the app's `produce_block` call (recorded by view) to node 0's `Committed`
//! event for that view.

use crate::stats::{stamp, CpuWindow, Recorder, Sample};
use hotstuff_core::{AppOutcome, Block, ChainId, Keypair, LeaderPolicy, ValidatorSet};
use hotstuff_driver_std::net::channel::ChannelHub;
use hotstuff_driver_std::{App, BlockContext, Event, Genesis, NodeBuilder, Produced, RedbStore};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// (b)
    Memory,
    /// (c)
    TcpDisk,
}

type Produces = Arc<Mutex<HashMap<u64, Instant>>>;

struct BenchApp {
    payload: bool,
    base: Instant,
    produced: Produces,
}

impl App for BenchApp {
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced {
        self.produced.lock().expect("produced").insert(ctx.view.0, Instant::now());
        let payload = if self.payload { stamp(self.base).to_vec() } else { Vec::new() };
        Produced { payload, outcome: AppOutcome::default() }
    }

    fn validate_block(&mut self, _: &BlockContext<'_>, _: &Block) -> Option<AppOutcome> {
        Some(AppOutcome::default())
    }
}

pub fn run(n: usize, transport: Transport, warmup: Duration, measure: Duration) -> Sample {
    let keys: Vec<Keypair> = (0..n).map(|i| Keypair::from_secret(&[i as u8 + 1; 32])).collect();
    let validators = ValidatorSet::new(keys.iter().map(|k| (k.public(), 1))).expect("validators");
    let genesis = Genesis::new(ChainId(77), validators);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "hotstuff-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    let listeners: Vec<TcpListener> = match transport {
        Transport::TcpDisk => {
            std::fs::create_dir_all(&dir).expect("temp dir");
            (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect()
        }
        Transport::Memory => Vec::new(),
    };
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
    let mut listeners = listeners.into_iter();
    let hub = ChannelHub::default();
    let base = Instant::now();
    let produced: Produces = Arc::default();
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let mut nodes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let app = BenchApp { payload: transport == Transport::Memory, base, produced: produced.clone() };
        let key = Keypair::from_secret(&key.secret());
        let mut b = match transport {
            Transport::Memory => {
                NodeBuilder::new(key, genesis.clone(), app, RedbStore::in_memory().expect("store"))
                    .network(hub.network())
            }
            Transport::TcpDisk => {
                let store = RedbStore::open(dir.join(format!("node{i}.redb"))).expect("store");
                let mut b = NodeBuilder::new(key, genesis.clone(), app, store)
                    .listener(listeners.next().expect("listener"));
                for (j, k) in keys.iter().enumerate() {
                    if j != i {
                        b = b.peer(k.public(), Some(addrs[j]));
                    }
                }
                b
            }
        }
        .idle_block_delay(Duration::ZERO)
        // The leader policy of (a) and of hotstuff_rs, so that (b) and (c) measure the driver.
        .leader_policy(LeaderPolicy::RoundRobin);
        if i == 0 {
            let produced = produced.clone();
            let rec = rec.clone();
            b = b.on_event(move |e| {
                if let Event::Core(hotstuff_core::Event::Committed { view, .. }) = e {
                    let now = Instant::now();
                    if let Some(at) = produced.lock().expect("produced").remove(&view.0) {
                        rec.lock().expect("rec").record(now, now.duration_since(at));
                    }
                }
            });
        }
        nodes.push(b.start().expect("start"));
    }
    thread::sleep(warmup);
    let cpu = CpuWindow::start();
    let from = Instant::now();
    thread::sleep(measure);
    let to = Instant::now();
    let cpu = cpu.pct();
    for node in nodes {
        let _ = node.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let sample = rec.lock().expect("rec").sample(from, to, cpu);
    sample
}
