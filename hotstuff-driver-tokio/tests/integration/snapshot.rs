//! Snapshot sync on the tokio driver: four std validators on loopback (kv app with a certified
//! state root, the last 300 blocks kept, snapshots every 100 heights) under load; a tokio node
//! started once every validator has pruned catches up by snapshot (its snapshot work runs on
//! the blocking pool), block-syncs on and ends with the validators' app-state digest.

use crate::common;

use common::{key, CHAIN};
use hotstuff_core::ValidatorSet;
use hotstuff_driver_std::kv::certified::StateCommitted;
use hotstuff_driver_std::kv::{tx_count, KvApp, Mempool, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::{
    Event, Genesis, Node as StdNode, NodeBuilder, RedbStore, RetainBlocks, SnapshotSettings, Storage,
};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const N: usize = 4;
const JOINER: usize = 100;

fn app(pool: &Mempool) -> StateCommitted<KvApp> {
    StateCommitted::new(KvApp::new(pool.clone(), 100))
}

#[test]
fn a_tokio_node_catches_up_by_snapshot() {
    let genesis = Genesis::new(CHAIN, ValidatorSet::new((0..N).map(|i| (key(i).public(), 1))).unwrap());
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let pools: Vec<Mempool> = (0..N).map(|_| Mempool::new(100_000)).collect();
    let mut stores: Vec<Arc<dyn Storage>> = Vec::new();
    let validators: Vec<StdNode> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let store: Arc<dyn Storage> = Arc::new(RedbStore::in_memory().unwrap());
            stores.push(store.clone());
            NodeBuilder::with_shared_store(key(i), genesis.clone(), app(&pools[i]), store)
                .listener(l)
                .peers((0..N).filter(|j| *j != i).map(|j| (key(j).public(), Some(addrs[j]))))
                .peer(key(JOINER).public(), None)
                .base_timeout(Duration::from_millis(500))
                .retain_blocks(RetainBlocks::Last(300))
                .snapshots(SnapshotSettings { interval: 100, fetch: false })
                .start()
                .unwrap()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicU64::new(0));
    let (flag, count) = (stop.clone(), submitted.clone());
    let load = std::thread::spawn(move || {
        let mut t = 0u64;
        while !flag.load(Ordering::Relaxed) {
            let tx =
                Tx::Put { key: format!("k{}", t % 700).into_bytes(), value: format!("v{t}").into_bytes() };
            if pools[(t % N as u64) as usize].submit(tx).is_ok() {
                t += 1;
                count.store(t, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let start = Instant::now();
    while stores.iter().any(|s| s.retained_from().unwrap().0 < 2) {
        assert!(start.elapsed() < Duration::from_secs(40), "validators did not prune in time");
        std::thread::sleep(Duration::from_millis(50));
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let installed = Arc::new(Mutex::new(None));
    let seen = installed.clone();
    let builder =
        NodeBuilder::new(key(JOINER), genesis, app(&Mempool::new(10)), RedbStore::in_memory().unwrap())
            .listen("127.0.0.1:0".parse().unwrap())
            .peers((0..N).map(|i| (key(i).public(), Some(addrs[i]))))
            .base_timeout(Duration::from_millis(500))
            .snapshots(SnapshotSettings { interval: 0, fetch: true })
            .on_event(move |e| {
                if let Event::SnapshotInstalled { height, .. } = e {
                    *seen.lock().unwrap() = Some(*height);
                }
            });
    let joiner = rt.block_on(hotstuff_driver_tokio::Node::start(builder)).unwrap();
    let t = Instant::now();
    while installed.lock().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "no snapshot installed");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("tokio node installed a snapshot at {:?}", installed.lock().unwrap());
    while joiner.status().committed.0 + 5 < validators[0].status().committed.0 {
        assert!(t.elapsed() < Duration::from_secs(45), "joiner at {:?}", joiner.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let total = submitted.load(Ordering::Relaxed);
    let txs = |r: hotstuff_driver_std::Reader| tx_count(r.get(TX_COUNT_KEY).unwrap().as_deref());
    while txs(joiner.reader()) != total || validators.iter().any(|v| txs(v.reader()) != total) {
        assert!(t.elapsed() < Duration::from_secs(55), "transactions not all committed everywhere");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, digest) = joiner.reader().app_state_digest().unwrap();
    for v in &validators {
        assert_eq!(v.reader().app_state_digest().unwrap().1, digest);
    }
    println!("the tokio node has the validators' app-state digest ({total} transactions)");
    rt.block_on(joiner.shutdown()).unwrap();
    for v in validators {
        v.shutdown().unwrap();
    }
}
