//! Bounded storage in a running node: with a retention window, the store keeps the window (and
//! no more than a batch beyond it) while the chain commits several times the window, and a new
//! listener, behind the window, is told that its heights are pruned (it needs a state
//! snapshot; block sync cannot catch it up). One validator, so that a debug build on a busy
//! machine commits the blocks quickly; the four-validator long run is the `store_growth`
//! example (figures in the README).

use crate::common;

use common::{key, Cluster};
use hotstuff_core::{Height, PublicKey};
use hotstuff_driver_std::kv::{KvApp, Mempool};
use hotstuff_driver_std::storage::prune::{MIN_RETAIN_BLOCKS, PRUNE_BATCH};
use hotstuff_driver_std::{Event, NodeBuilder, RedbStore, RetainBlocks, Storage};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RETAIN: u64 = MIN_RETAIN_BLOCKS;

#[test]
fn stores_stay_within_the_window_and_a_node_behind_it_is_told() {
    const N: usize = 1;
    let c = Cluster::start_with(N, 1, |b| {
        b.idle_block_delay(Duration::ZERO).retain_blocks(RetainBlocks::Last(RETAIN))
    });
    // Commit three windows' worth of blocks.
    let target = 3 * RETAIN;
    let took = c.wait_height(target, Duration::from_secs(300)).unwrap();
    println!("{target} blocks in {took:?}");
    // Pruning runs every 500 ms, a backlog in batches of PRUNE_BATCH (256) a few milliseconds
    // apart: once it has dropped height RETAIN everywhere (not just height 1, which the first
    // batch drops while the next still waits), a new node that asks from the start is behind
    // every window and is told a retained height above RETAIN (the chain may reach the target
    // before the first pass, and a listener would then sync from height 1 before it is pruned).
    let start = Instant::now();
    while (0..N).any(|i| c.node(i).reader().block(Height(RETAIN)).unwrap().is_some()) {
        assert!(start.elapsed() < Duration::from_secs(30), "height {RETAIN} never pruned");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A listener starts now, behind every validator's window: each tells it so.
    let told = Arc::new(Mutex::new(Vec::<(PublicKey, Height)>::new()));
    let seen = told.clone();
    let store = RedbStore::open(c.dir.path().join("listener.redb")).unwrap();
    let listener = NodeBuilder::new(key(100), c.genesis.clone(), KvApp::new(Mempool::new(10), 10), store)
        .peers((0..N).map(|i| (c.public(i), Some(c.addrs[i]))))
        .on_event(move |e| {
            if let Event::Core(hotstuff_core::Event::SyncBelowRetained { peer, retained_from, .. }) = e {
                seen.lock().unwrap().push((*peer, *retained_from));
            }
        })
        .start()
        .unwrap();
    let peers = |t: &[(PublicKey, Height)]| {
        let mut p: Vec<_> = t.iter().map(|(k, _)| *k).collect();
        p.sort();
        p.dedup();
        p.len()
    };
    let start = Instant::now();
    while peers(&told.lock().unwrap()) < N && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let told = told.lock().unwrap().clone();
    assert_eq!(peers(&told), N, "every validator said its heights are pruned: {told:?}");
    assert!(told.iter().all(|(_, from)| from.0 > RETAIN), "{told:?}");
    assert_eq!(listener.status().committed, Height(0), "nothing taken in from a pruned peer");
    // The validators commit on regardless.
    let h = c.min_height();
    c.wait_height(h + 10, Duration::from_secs(30)).unwrap();
    listener.shutdown().unwrap();

    // Stopped, each store holds the window, plus at most what committed since the last pruning
    // pass (every 500 ms; a backlog is pruned in one pass), and the epoch proofs (none here).
    let rate = target as f64 / took.as_secs_f64();
    let slack = (rate * 0.75) as u64 + PRUNE_BATCH as u64;
    let mut c = c;
    for i in 0..N {
        c.stop(i);
        let store = RedbStore::open(c.store_path(i)).unwrap();
        let tip = store.tip().unwrap().unwrap().0.height.0;
        let from = store.retained_from().unwrap().0;
        let kept = (1..=tip).filter(|h| store.committed_block(Height(*h)).unwrap().is_some()).count() as u64;
        println!(
            "node {i}: tip {tip}, retained from {from}, {kept} committed blocks stored ({rate:.0} blocks/s)"
        );
        assert!(tip >= target);
        assert_eq!(kept, tip - from + 1, "exactly the blocks from the retained height up");
        assert!(kept >= RETAIN, "node {i} pruned into its window: {kept}");
        assert!(kept <= RETAIN + slack, "node {i} keeps {kept} blocks, window {RETAIN} + {slack}");
    }
}
