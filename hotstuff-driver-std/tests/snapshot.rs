//! Snapshot sync end to end: validators running the kv app with a certified state root keep
//! only the last blocks and serve snapshots; a new node, behind every
//! validator's retained range, catches up by snapshot (verified chunk by chunk against the
//! root a QC certifies), installs it, block-syncs from there and ends with the same app-state
//! digest as the validators. In the second test five of six validators serve bad chunks (wrong
//! chunk, wrong commitment, truncated, stale, oversized): each is detected and avoided, and the
//! new node still ends with the validators' state.
//!
//! The nodes talk over an in-process channel network (no sockets), so a validator's outgoing
//! frames can be tampered with; consensus itself stays honest.

mod common;

use common::{key, CHAIN};
use hotstuff_core::{Envelope, Height, Limits, Message, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::certified::StateCommitted;
use hotstuff_driver_std::kv::{tx_count, KvApp, Mempool, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::net::{Frame, NetContext};
use hotstuff_driver_std::{
    Event, Genesis, Inbox, NetError, Network, Node, NodeBuilder, RedbStore, RetainBlocks, SnapshotSettings,
    Storage,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Hub = Arc<Mutex<BTreeMap<PublicKey, Inbox>>>;

/// How a Byzantine snapshot server corrupts its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tamper {
    /// Labels the chunk as another one.
    WrongChunk,
    /// Changes a sibling of the proof (so the chunk hashes to another root).
    WrongCommitment,
    /// Drops an entry (or adds one to an empty chunk).
    Truncated,
    /// Answers for another height.
    Stale,
    /// Adds entries beyond the chunk size limit.
    Oversized,
}

struct ChannelNetwork {
    hub: Hub,
    me: Option<PublicKey>,
    tamper: Option<Tamper>,
}

fn tamper(frame: &Frame, how: Tamper) -> Frame {
    let limits = Limits::default();
    let Ok(mut env) = Envelope::decode(frame, &limits) else { return frame.clone() };
    let Message::SnapshotChunk(c) = &mut env.message else { return frame.clone() };
    if !c.available || c.too_large {
        return frame.clone();
    }
    match how {
        Tamper::WrongChunk => c.index ^= 1,
        Tamper::WrongCommitment => {
            if let Some(s) = c.proof.first_mut() {
                *s = hotstuff_core::ChunkSibling::Inner([0xab; 32]);
            }
        }
        Tamper::Truncated => {
            if c.entries.pop().is_none() {
                c.entries.push((b"kv/forged".to_vec(), b"x".to_vec()));
            }
        }
        Tamper::Stale => c.height = Height(c.height.0 - 1),
        Tamper::Oversized => {
            for i in 0..2u8 {
                c.entries.push((vec![b'z', i], vec![7; 3 << 20]));
            }
        }
    }
    Arc::new(env.encode())
}

impl ChannelNetwork {
    fn deliver(&self, to: &PublicKey, frame: &Frame) {
        let inbox = self.hub.lock().unwrap().get(to).cloned();
        if let (Some(inbox), Some(me)) = (inbox, self.me) {
            let frame = match self.tamper {
                Some(how) => tamper(frame, how),
                None => frame.clone(),
            };
            let _ = inbox.deliver_frame(me, &frame);
        }
    }
}

impl Network for ChannelNetwork {
    fn start(&mut self, ctx: NetContext) -> Result<(), NetError> {
        self.me = Some(ctx.key.public());
        self.hub.lock().unwrap().insert(ctx.key.public(), ctx.inbox);
        Ok(())
    }
    fn send(&mut self, to: PublicKey, frame: Frame) {
        self.deliver(&to, &frame);
    }
    fn broadcast(&mut self, frame: Frame) {
        let peers: Vec<PublicKey> =
            self.hub.lock().unwrap().keys().copied().filter(|k| Some(*k) != self.me).collect();
        for p in peers {
            self.deliver(&p, &frame);
        }
    }
    fn shutdown(&mut self) {
        if let Some(me) = self.me {
            self.hub.lock().unwrap().remove(&me);
        }
    }
}

type Events = Arc<Mutex<Vec<Event>>>;

struct Chain {
    hub: Hub,
    genesis: Genesis,
    validators: Vec<Node>,
    stores: Vec<Arc<dyn Storage>>,
    stop_load: Arc<AtomicBool>,
    submitted: Arc<AtomicU64>,
    load: Option<std::thread::JoinHandle<()>>,
}

/// Blocks kept: far more than the minimum, as this in-process chain commits a few hundred
/// blocks a second.
const RETAIN: u64 = 2_000;
const INTERVAL: u64 = 200;

fn app(pool: &Mempool) -> StateCommitted<KvApp> {
    StateCommitted::new(KvApp::new(pool.clone(), 200))
}

impl Chain {
    /// `n` validators under load until every one has pruned below `3 * MIN_RETAIN_BLOCKS`.
    fn start(n: usize, tampers: &[(usize, Tamper)]) -> Chain {
        let validators = ValidatorSet::new((0..n).map(|i| (key(i).public(), 1))).unwrap();
        let genesis = Genesis::new(CHAIN, validators);
        let hub: Hub = Arc::default();
        let pools: Vec<Mempool> = (0..n).map(|_| Mempool::new(100_000)).collect();
        let mut nodes = Vec::new();
        let mut stores = Vec::new();
        for (i, pool) in pools.iter().enumerate() {
            let store: Arc<dyn Storage> = Arc::new(RedbStore::in_memory().unwrap());
            let tamper = tampers.iter().find(|(j, _)| *j == i).map(|(_, t)| *t);
            let node = NodeBuilder::with_shared_store(key(i), genesis.clone(), app(pool), store.clone())
                .network(ChannelNetwork { hub: hub.clone(), me: None, tamper })
                .base_timeout(Duration::from_millis(500))
                .idle_block_delay(Duration::from_millis(5))
                .retain_blocks(RetainBlocks::Last(RETAIN))
                .snapshots(SnapshotSettings { interval: INTERVAL, fetch: true })
                .start()
                .unwrap();
            nodes.push(node);
            stores.push(store);
        }
        // Load: puts to 3,000 keys, round robin over the validators' mempools, paced.
        let stop_load = Arc::new(AtomicBool::new(false));
        let submitted = Arc::new(AtomicU64::new(0));
        let (stop, count) = (stop_load.clone(), submitted.clone());
        let load = std::thread::spawn(move || {
            let mut t = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    let tx = Tx::Put {
                        key: format!("key{}", t % 3000).into_bytes(),
                        value: format!("value {t} of some length").into_bytes(),
                    };
                    if pools[(t % n as u64) as usize].submit(tx).is_ok() {
                        t += 1;
                    }
                }
                count.store(t, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let chain = Chain { hub, genesis, validators: nodes, stores, stop_load, submitted, load: Some(load) };
        let start = Instant::now();
        loop {
            let pruned = chain.stores.iter().all(|s| s.retained_from().unwrap().0 > RETAIN / 2);
            if pruned {
                break;
            }
            let hs: Vec<u64> = chain.validators.iter().map(|v| v.status().committed.0).collect();
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "validators did not prune in time: heights {hs:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "validators at heights {:?} after {:?}, retained from {:?}",
            chain.validators.iter().map(|v| v.status().committed.0).collect::<Vec<_>>(),
            start.elapsed(),
            chain.stores.iter().map(|s| s.retained_from().unwrap().0).collect::<Vec<_>>()
        );
        chain
    }

    /// Starts the new node (a listener) and returns it with its store and events.
    fn join(&self) -> (Node, Arc<dyn Storage>, Events) {
        let store: Arc<dyn Storage> = Arc::new(RedbStore::in_memory().unwrap());
        let events: Events = Arc::default();
        let seen = events.clone();
        let node = NodeBuilder::with_shared_store(
            key(100),
            self.genesis.clone(),
            app(&Mempool::new(10)),
            store.clone(),
        )
        .network(ChannelNetwork { hub: self.hub.clone(), me: None, tamper: None })
        .base_timeout(Duration::from_millis(500))
        .snapshots(SnapshotSettings { interval: 0, fetch: true })
        .on_event(move |e| {
            if matches!(e, Event::SnapshotInstalled { .. } | Event::SnapshotPeerAvoided { .. }) {
                seen.lock().unwrap().push(e.clone());
            }
        })
        .start()
        .unwrap();
        (node, store, events)
    }

    /// Stops the load, waits until the joiner has every transaction, and checks its app-state
    /// digest against every validator's.
    fn check_same_state(mut self, joiner: &Node) {
        let start = Instant::now();
        // Keep the load on until the joiner installed and follows the chain.
        while joiner.status().committed.0 < self.validators[0].status().committed.0.saturating_sub(5) {
            assert!(start.elapsed() < Duration::from_secs(30), "joiner stuck at {:?}", joiner.status());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_load.store(true, Ordering::Relaxed);
        if let Some(l) = self.load.take() {
            l.join().unwrap();
        }
        let total = self.submitted.load(Ordering::Relaxed);
        let count = |n: &Node| tx_count(n.reader().get(TX_COUNT_KEY).unwrap().as_deref());
        loop {
            let counts: Vec<u64> = self.validators.iter().chain([joiner]).map(count).collect();
            if counts.iter().all(|c| *c == total) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(45),
                "committed transactions {counts:?} of {total}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (jtip, digest) = joiner.reader().app_state_digest().unwrap();
        for (i, v) in self.validators.iter().enumerate() {
            let (tip, d) = v.reader().app_state_digest().unwrap();
            assert_eq!(d, digest, "validator {i} at {} and the joiner at {} differ", tip.height, jtip.height);
        }
        println!("joiner at height {} has the validators' app state ({total} transactions)", jtip.height);
        for v in self.validators.drain(..) {
            v.shutdown().unwrap();
        }
    }
}

/// Logs at info level to the test's output when `SNAPSHOT_LOG` is set.
fn logs() {
    if std::env::var_os("SNAPSHOT_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_test_writer().try_init();
    }
}

fn installed(events: &Events) -> Option<Height> {
    events.lock().unwrap().iter().find_map(|e| match e {
        Event::SnapshotInstalled { height, .. } => Some(*height),
        _ => None,
    })
}

fn wait_installed(events: &Events, timeout: Duration) -> Height {
    let start = Instant::now();
    loop {
        if let Some(h) = installed(events) {
            return h;
        }
        assert!(start.elapsed() < timeout, "no snapshot installed; events {:?}", events.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_new_node_catches_up_by_snapshot_behind_the_retained_range() {
    logs();
    let chain = Chain::start(4, &[]);
    let (joiner, store, events) = chain.join();
    let height = wait_installed(&events, Duration::from_secs(30));
    println!("snapshot installed at height {height}");
    assert!(height.0 > RETAIN, "installed at {height}");
    // The joiner never held the early blocks: its store starts at the snapshot.
    assert!(store.retained_from().unwrap() >= height);
    assert!(store.committed_block(Height(1)).unwrap().is_none());
    assert!(
        events.lock().unwrap().iter().all(|e| !matches!(e, Event::SnapshotPeerAvoided { .. })),
        "an honest server was avoided: {:?}",
        events.lock().unwrap()
    );
    chain.check_same_state(&joiner);
    joiner.shutdown().unwrap();
}

#[test]
fn bad_snapshot_servers_are_detected_and_avoided() {
    let tampers = [
        (1, Tamper::WrongChunk),
        (2, Tamper::WrongCommitment),
        (3, Tamper::Truncated),
        (4, Tamper::Stale),
        (5, Tamper::Oversized),
    ];
    logs();
    let chain = Chain::start(6, &tampers);
    let (joiner, _store, events) = chain.join();
    let height = wait_installed(&events, Duration::from_secs(40));
    println!("snapshot installed at height {height}");
    let avoided: BTreeMap<PublicKey, &'static str> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::SnapshotPeerAvoided { peer, reason } => Some((*peer, *reason)),
            _ => None,
        })
        .collect();
    println!("avoided: {avoided:?}");
    assert!(!avoided.contains_key(&key(0).public()), "the honest server was avoided: {avoided:?}");
    for (i, how) in tampers {
        let reason =
            avoided.get(&key(i).public()).unwrap_or_else(|| panic!("{how:?} server {i} not avoided"));
        let expected = match how {
            Tamper::WrongChunk | Tamper::Stale => "answers another chunk or height",
            Tamper::WrongCommitment | Tamper::Truncated => "does not verify against the root",
            Tamper::Oversized => "chunk over the size limit",
        };
        assert_eq!(*reason, expected, "{how:?}");
    }
    chain.check_same_state(&joiner);
    joiner.shutdown().unwrap();
}
