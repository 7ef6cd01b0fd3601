//! A tokio node is shut down while the others go on committing, is started again from its redb
//! store, catches up, and the cluster keeps committing; no committed transaction is lost.

use crate::common;

use common::{Cluster, Kind};
use hotstuff_driver_tokio::kv::{state_key, Tx};

/// Puts `{prefix}{t}` for `t < n` into the mempools of `nodes` (round robin).
fn submit_to(c: &Cluster, nodes: &[usize], prefix: &str, n: usize) {
    for t in 0..n {
        let tx = Tx::Put { key: format!("{prefix}{t}").into_bytes(), value: format!("v{t}").into_bytes() };
        c.mempools[nodes[t % nodes.len()]].submit(tx).unwrap();
    }
}

#[test]
fn a_restarted_node_recovers_from_its_store_catches_up_and_nothing_committed_is_lost() {
    let mut c = Cluster::start(&[Kind::Tokio; 4], 0);
    c.wait_height(3);
    c.submit("a", 200);
    c.wait_txs(200);

    let stopped_at = c.height(2);
    let took = c.stop(2);
    println!("node 2 stopped at height {stopped_at} in {took:?}");
    let before = c.height(0);
    submit_to(&c, &[0, 1, 3], "b", 150);
    c.wait_txs(350);
    c.wait_height(before + 8);

    c.restart(2);
    assert!(c.height(2) >= stopped_at, "the restarted node starts from its stored committed height");
    let target = c.height(0);
    let took = c.wait_height(target);
    println!("node 2 caught up from {stopped_at} to {target} in {took:?}");

    // New transactions, through every node's mempool (the restarted one's too).
    c.submit("c", 200);
    c.wait_txs(550);
    let h = c.wait_agreement();
    println!("all replicas agree at height {h}");
    for i in 0..4 {
        let r = c.node(i).reader();
        for (prefix, n) in [("a", 200), ("b", 150), ("c", 200)] {
            for t in 0..n {
                let v = r.get(&state_key(format!("{prefix}{t}").as_bytes())).unwrap();
                assert_eq!(v, Some(format!("v{t}").into_bytes()), "node {i} lost {prefix}{t}");
            }
        }
    }
}
