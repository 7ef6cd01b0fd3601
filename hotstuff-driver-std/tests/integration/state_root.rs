//! Four validators running the kv app wrapped in `StateCommitted`: every block with a payload
//! carries the state root of its parent's state and every validator checks it, so the chain
//! commits transactions only if all replicas compute the same roots. At the end every replica's
//! committed state has the same root, and a proof from it shows a committed value.

use crate::common;

use common::{key, CHAIN};
use hotstuff_core::{Height, ValidatorSet};
use hotstuff_driver_std::kv::certified::{StateCommitted, ROOT_LEN};
use hotstuff_driver_std::kv::commitment::StateTree;
use hotstuff_driver_std::kv::{decode_payload, state_key, KvApp, Mempool, Tx};
use hotstuff_driver_std::{Genesis, Node, NodeBuilder, RedbStore, Storage};
use std::net::TcpListener;
use std::time::{Duration, Instant};

#[test]
fn replicas_agree_on_the_certified_state_root() {
    let n = 4;
    let validators = ValidatorSet::new((0..n).map(|i| (key(i).public(), 1))).unwrap();
    let genesis = Genesis::new(CHAIN, validators);
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mempools: Vec<Mempool> = (0..n).map(|_| Mempool::new(10_000)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = |i: usize| dir.path().join(format!("node{i}.redb"));
    let nodes: Vec<Node> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let app = StateCommitted::new(KvApp::new(mempools[i].clone(), 50));
            let peers = (0..n).filter(|j| *j != i).map(|j| (key(j).public(), Some(addrs[j])));
            NodeBuilder::new(key(i), genesis.clone(), app, RedbStore::open(path(i)).unwrap())
                .listener(l)
                .peers(peers)
                .base_timeout(Duration::from_millis(300))
                .start()
                .unwrap()
        })
        .collect();

    // Transactions at every validator, so every validator proposes some of them.
    let total = 400;
    for t in 0..total {
        let tx = Tx::Put { key: format!("k{}", t % 97).into_bytes(), value: format!("v{t}").into_bytes() };
        mempools[t % n].submit(tx).unwrap();
    }
    let start = Instant::now();
    let count =
        |node: &Node| hotstuff_driver_std::kv::tx_count(node.reader().get(b"meta/txs").unwrap().as_deref());
    while nodes.iter().any(|node| count(node) < total as u64) {
        let counts: Vec<u64> = nodes.iter().map(count).collect();
        assert!(start.elapsed() < Duration::from_secs(60), "committed transactions per replica: {counts:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tip = Height(nodes.iter().map(|node| node.reader().tip().unwrap().height.0).min().unwrap());

    // Every committed block with a payload starts with a root; blocks from several proposers.
    let reader = nodes[0].reader();
    let mut proposers = std::collections::BTreeSet::new();
    let mut carried = 0;
    for h in 1..=tip.0 {
        let (block, _, _) = reader.block(Height(h)).unwrap().expect("stored");
        if block.payload.is_empty() {
            continue;
        }
        assert!(block.payload.len() > ROOT_LEN, "block {h} carries no root");
        assert!(
            decode_payload(&block.payload[ROOT_LEN..]).is_some(),
            "block {h}: the rest is the kv payload"
        );
        proposers.insert(block.proposer);
        carried += 1;
    }
    assert!(proposers.len() >= 2, "blocks from {} proposers only", proposers.len());
    println!("{} blocks with a root, from {} proposers, up to height {}", carried, proposers.len(), tip.0);

    // Once stopped, every replica holds the same state (only empty blocks followed the last
    // transaction), so the same root, and a proof from it shows a committed value.
    drop(reader);
    for node in nodes {
        node.shutdown().unwrap();
    }
    let mut roots = Vec::new();
    for i in 0..n {
        let store = RedbStore::open(path(i)).unwrap();
        let mut entries = Vec::new();
        store.scan_app_state(&mut |k, v| entries.push((k.to_vec(), v.to_vec()))).unwrap();
        let tree = StateTree::from_entries(entries.iter().map(|(k, v)| (&k[..], &v[..])));
        let k1 = state_key(b"k1");
        let value = store.app_get(&k1).unwrap().expect("k1 committed");
        tree.prove(&k1).verify(&tree.root(), &k1, Some(&value)).unwrap();
        tree.prove(b"kv/never").verify(&tree.root(), b"kv/never", None).unwrap();
        roots.push(tree.root());
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "replicas' roots differ");
}
