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
