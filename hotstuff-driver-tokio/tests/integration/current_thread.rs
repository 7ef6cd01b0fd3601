//! The driver needs no multi-threaded runtime: a single validator on a `current_thread`
//! runtime commits a transaction, and restarts from its store with it.

use hotstuff_core::{ChainId, Keypair, ValidatorSet};
use hotstuff_driver_tokio::kv::{state_key, KvApp, Mempool, Tx};
use hotstuff_driver_tokio::{Genesis, Node, NodeBuilder, RedbStore};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "current_thread")]
async fn a_single_validator_commits_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::from_secret(&[9; 32]);
    let genesis = Genesis::new(ChainId(3), ValidatorSet::new([(key.public(), 1)]).unwrap());
    let path = dir.path().join("solo.redb");
    let start = |mempool: Mempool| {
        let store = RedbStore::open(&path).unwrap();
        let b = NodeBuilder::new(
            Keypair::from_secret(&key.secret()),
            genesis.clone(),
            KvApp::new(mempool, 100),
            store,
        );
        Node::start(b)
    };
    let mempool = Mempool::new(100);
    let node = start(mempool.clone()).await.unwrap();
    mempool.submit(Tx::Put { key: b"k".to_vec(), value: b"v".to_vec() }).unwrap();
    let t0 = Instant::now();
    while node.reader().get(&state_key(b"k")).unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(60), "not committed; status {:?}", node.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let height = node.status().committed;
    node.shutdown().await.unwrap();

    let node = start(Mempool::new(100)).await.unwrap();
    assert!(node.status().committed >= height, "recovered below the committed height");
    assert_eq!(node.reader().get(&state_key(b"k")).unwrap().as_deref(), Some(&b"v"[..]));
    let t0 = Instant::now();
    while node.status().committed.0 < height.0 + 3 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress after restart: {:?}", node.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.shutdown().await.unwrap();
}

/// A leader waiting out a long idle delay proposes a new transaction at once when its app
/// wakes it: three writes, each submitted just after an idle block, commit well within the
/// 2 s delay (without the wake each would wait most of it).
#[tokio::test(flavor = "current_thread")]
async fn the_waker_ends_the_idle_delay_of_a_waiting_leader() {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::from_secret(&[10; 32]);
    let genesis = Genesis::new(ChainId(4), ValidatorSet::new([(key.public(), 1)]).unwrap());
    let delay = Duration::from_secs(2);
    let mempool = Mempool::new(100);
    let b = NodeBuilder::new(
        Keypair::from_secret(&key.secret()),
        genesis,
        KvApp::new(mempool.clone(), 100),
        RedbStore::open(dir.path().join("solo.redb")).unwrap(),
    )
    .base_timeout(Duration::from_secs(20))
    .idle_block_delay(delay)
    .max_idle_block_delay(delay);
    let node = Node::start(b).await.unwrap();
    let waker = node.waker();
    mempool.set_waker(move || waker.wake());
    let committed = |node: &Node| node.status().committed.0;
    // Idle: empty blocks now come one per delay.
    let t0 = Instant::now();
    while committed(&node) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no idle blocks: {:?}", node.status());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for i in 0..3u8 {
        // Just after an (idle) commit the leader waits out most of the delay.
        let seen = committed(&node);
        while committed(&node) == seen {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let key = [b'w', i];
        let submitted = Instant::now();
        mempool.submit(Tx::Put { key: key.to_vec(), value: b"v".to_vec() }).unwrap();
        while node.reader().get(&state_key(&key)).unwrap().is_none() {
            assert!(
                submitted.elapsed() < delay / 2,
                "write {i} not committed within half the idle delay: the wake did not end it ({:?})",
                node.status()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    node.shutdown().await.unwrap();
}
