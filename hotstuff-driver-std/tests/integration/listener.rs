//! A listener (a replica outside the validator set, with no listen address) dials the
//! validators, follows the chain, and holds the same app state. Its app proposes at most 10
//! transactions per block, the validators' 1,000: validation must not depend on that.

use crate::common;

use common::{key, Cluster};
use hotstuff_driver_std::kv::{KvApp, Mempool, Tx};
use hotstuff_driver_std::{NodeBuilder, RedbStore};
use std::time::{Duration, Instant};

#[test]
fn a_listener_follows_the_chain() {
    let c = Cluster::start(4, 1);
    c.wait_height(3, Duration::from_secs(20)).unwrap();
    let store = RedbStore::open(c.dir.path().join("listener.redb")).unwrap();
    let peers = (0..4).map(|i| (c.public(i), Some(c.addrs[i])));
    let listener = NodeBuilder::new(key(100), c.genesis.clone(), KvApp::new(Mempool::new(10), 10), store)
        .peers(peers)
        .on_event(|e| {
            if std::env::var("DEBUG_LISTENER").is_ok() {
                eprintln!("listener: {e:?}")
            }
        })
        .start()
        .unwrap();
    for t in 0..50 {
        c.mempools[t % 4].submit(Tx::Put { key: format!("k{t}").into_bytes(), value: vec![1] }).unwrap();
    }
    let start = Instant::now();
    loop {
        let target = c.height(0);
        let reader = listener.reader();
        if reader.tip().unwrap().height.0 >= target && target > 10 {
            let (tip, digest) = reader.app_state_digest().unwrap();
            // Compare with a validator at the same height.
            let (vtip, vdigest) = c.node(0).reader().app_state_digest().unwrap();
            if tip == vtip {
                assert_eq!(digest, vdigest, "listener and validator disagree at {tip:?}");
                println!("listener at height {} after {:?}, same app state", tip.height.0, start.elapsed());
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "listener at {:?}, validators at {target}",
            reader.tip()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!listener.status().leader.0.is_empty());
    listener.shutdown().unwrap();
}
