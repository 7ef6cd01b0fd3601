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

use crate::common;

use common::{key, CHAIN};
use hotstuff_core::{Envelope, Height, Limits, Message, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::certified::StateCommitted;
use hotstuff_driver_std::kv::{tx_count, KvApp, Mempool, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::net::channel::{ChannelHub, ChannelNetwork};
use hotstuff_driver_std::net::Frame;
use hotstuff_driver_std::{
    Event, Genesis, Node, NodeBuilder, RedbStore, RetainBlocks, SnapshotSettings, Storage,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The byte after an envelope's version (u16) and chain (u64): the message's tag.
const TAG_AT: usize = 10;
/// The tags of `SnapshotOffer` and `SnapshotChunk`.
const OFFER_TAG: u8 = 10;
const CHUNK_TAG: u8 = 11;

fn tamper(frame: &Frame, how: Tamper) -> Frame {
    if frame.get(TAG_AT) != Some(&CHUNK_TAG) {
        return frame.clone();
    }
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

type Events = Arc<Mutex<Vec<Event>>>;

/// Every snapshot offer a validator sent: (validator, to, tip height offered).
type Offers = Arc<Mutex<Vec<(usize, PublicKey, Option<Height>)>>>;

/// The chunk frames and bytes each validator sent each peer: (validator, to) -> (frames, bytes).
type ChunksSent = Arc<Mutex<BTreeMap<(usize, PublicKey), (u64, u64)>>>;

/// Validator `i`'s network: records the offers and chunks it sends and, for a Byzantine
/// server, tampers with its chunks.
fn network(
    hub: &ChannelHub,
    i: usize,
    how: Option<Tamper>,
    offers: Offers,
    chunks: ChunksSent,
) -> ChannelNetwork {
    hub.network().with_hook(move |to, frame| {
        if frame.get(TAG_AT) == Some(&CHUNK_TAG) {
            let mut sent = chunks.lock().unwrap();
            let e = sent.entry((i, *to)).or_default();
            e.0 += 1;
            e.1 += frame.len() as u64;
        }
        if frame.get(TAG_AT) == Some(&OFFER_TAG) {
            if let Ok(Envelope { message: Message::SnapshotOffer(o), .. }) =
                Envelope::decode(frame, &Limits::default())
            {
                offers.lock().unwrap().push((i, *to, o.snapshot.map(|s| s.tip.height)));
            }
        }
        Some(match how {
            Some(how) => tamper(frame, how),
            None => frame.clone(),
        })
    })
}

struct Chain {
    hub: ChannelHub,
    genesis: Genesis,
    validators: Vec<Node>,
    stores: Vec<Arc<dyn Storage>>,
    offers: Offers,
    chunks: ChunksSent,
    pause_load: Arc<AtomicBool>,
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
        let hub = ChannelHub::default();
        let offers = Offers::default();
        let chunks = ChunksSent::default();
        let pools: Vec<Mempool> = (0..n).map(|_| Mempool::new(100_000)).collect();
        let mut nodes = Vec::new();
        let mut stores = Vec::new();
        for (i, pool) in pools.iter().enumerate() {
            let store: Arc<dyn Storage> = Arc::new(RedbStore::in_memory().unwrap());
            let tamper = tampers.iter().find(|(j, _)| *j == i).map(|(_, t)| *t);
            let node = NodeBuilder::with_shared_store(key(i), genesis.clone(), app(pool), store.clone())
                .network(network(&hub, i, tamper, offers.clone(), chunks.clone()))
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
        let pause_load = Arc::new(AtomicBool::new(false));
        let submitted = Arc::new(AtomicU64::new(0));
        let (stop, pause, count) = (stop_load.clone(), pause_load.clone(), submitted.clone());
        let load = std::thread::spawn(move || {
            let mut t = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if pause.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
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
        let chain = Chain {
            hub,
            genesis,
            validators: nodes,
            stores,
            offers,
            chunks,
            pause_load,
            stop_load,
            submitted,
            load: Some(load),
        };
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
        .network(self.hub.network())
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

fn no_server_avoided(events: &Events) {
    let events = events.lock().unwrap();
    assert!(
        events.iter().all(|e| !matches!(e, Event::SnapshotPeerAvoided { .. })),
        "an honest server was avoided: {events:?}"
    );
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
    no_server_avoided(&events);
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
    // Every server must be asked for chunks, so every one must offer the same snapshot: under
    // load each builds the next one on its own clock and an offer round could split between
    // two heights (the joiner fetches from the larger group only). With the load paused no
    // block carries a new root, so once each server has built and certified the last one,
    // every server offers it.
    chain.pause_load.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let (joiner, _store, events) = chain.join();
    let start = Instant::now();
    let offered = loop {
        let offered: BTreeMap<usize, Option<Height>> = chain
            .offers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, to, _)| *to == key(100).public())
            .map(|(i, _, h)| (*i, *h))
            .collect();
        if offered.len() == chain.validators.len() {
            break offered;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "offers to the joiner: {offered:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let first = offered.values().next().copied().flatten();
    assert!(
        first.is_some() && offered.values().all(|h| *h == first),
        "the servers do not all offer one snapshot 2 s after the load paused: {offered:?}"
    );
    chain.pause_load.store(false, Ordering::Relaxed);
    let height = wait_installed(&events, Duration::from_secs(40));
    assert_eq!(Some(height), first, "installed another snapshot than the one offered");
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

/// A peer asking a validator for chunk after chunk (thousands a second, far more than an
/// honest client's four outstanding) is paced: what it gets is bounded by the serving budget,
/// and a new node fetching meanwhile still gets its snapshot from every server, none of them
/// too slow to be avoided.
#[test]
fn a_peer_flooding_chunk_requests_is_paced() {
    use hotstuff_core::{SnapshotAsk, SnapshotRequest};
    use hotstuff_driver_std::snapshot::pacing::{BURST_KIB, KIB_PER_SECOND};
    logs();
    let chain = Chain::start(4, &[]);
    // With the load paused the served snapshot stays the same (under load a newer one replaces
    // it every second or so, and requests for the old one are answered "not available").
    chain.pause_load.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let flooder = key(101).public();
    let target = key(0).public();
    let ask = |id, ask| Envelope::new(CHAIN, Message::SnapshotRequest(SnapshotRequest { id, ask })).encode();
    // The snapshot validator 0 offers.
    let start = Instant::now();
    let height = loop {
        assert!(chain.hub.inject(flooder, &target, &ask(0, SnapshotAsk::Offer)));
        std::thread::sleep(Duration::from_millis(100));
        let offered = chain
            .offers
            .lock()
            .unwrap()
            .iter()
            .find_map(|(i, to, h)| (*i == 0 && *to == flooder).then_some(*h));
        if let Some(Some(h)) = offered {
            break h;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "validator 0 offers no snapshot");
    };
    // Flood: 5 requests for the whole state (depth 0) per millisecond, for 3 s, while a new
    // node joins by snapshot.
    let (joiner, _store, events) = chain.join();
    let flood_start = Instant::now();
    let mut id = 1u64;
    while flood_start.elapsed() < Duration::from_secs(3) {
        for _ in 0..5 {
            chain.hub.inject(flooder, &target, &ask(id, SnapshotAsk::Chunk { height, depth: 0, index: 0 }));
            id += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let flood_time = flood_start.elapsed();
    chain.pause_load.store(false, Ordering::Relaxed);
    // Answers still queued when the flood stops go out within about one queue's worth of budget.
    std::thread::sleep(Duration::from_secs(1));
    let (frames, bytes) = chain.chunks.lock().unwrap().get(&(0, flooder)).copied().unwrap_or_default();
    let budget = (KIB_PER_SECOND as f64 * (flood_time.as_secs_f64() + 1.0) + f64::from(BURST_KIB)) * 1024.0;
    println!(
        "flooder: {} requests in {flood_time:?}, answered {frames} ({bytes} bytes; budget {budget:.0} bytes)",
        id - 1
    );
    assert!(frames > 0, "the flooder got nothing: it is paced, not shut out");
    assert!((bytes as f64) <= budget, "{bytes} bytes answered, over the budget of {budget:.0}");
    assert!(frames < id - 1, "every one of {} requests answered: no pacing", id - 1);
    let installed = wait_installed(&events, Duration::from_secs(40));
    println!("the joiner installed the snapshot at height {installed}");
    no_server_avoided(&events);
    chain.check_same_state(&joiner);
    joiner.shutdown().unwrap();
}
